package targetauth

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap/internal/config"
)

// BenchmarkAssertion is the cost of signing one client assertion (paid once
// per token request).
func BenchmarkAssertion(b *testing.B) {
	for _, alg := range []string{ES384, RS384} {
		b.Run(alg, func(b *testing.B) {
			k, err := GenerateKey(alg)
			if err != nil {
				b.Fatal(err)
			}
			o := &oauth{cfg: config.TargetAuth{ClientID: "c", TokenURL: "https://ehr.example/token"}}
			o.opts.Now = nowFunc()
			for b.Loop() {
				if _, err := o.assertion(k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type okTransport struct{}

func (okTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(""))}, nil
}

// BenchmarkRoundTripCachedToken is what the auth layer adds to a request
// once a token is held (the base transport answers at once).
func BenchmarkRoundTripCachedToken(b *testing.B) {
	o, err := newOAuth(config.TargetAuth{Type: TypeBasic, TokenURL: "https://ehr.example/token", ClientID: "c", SecretEnv: "S"},
		Options{Target: "ehr", Now: nowFunc(), Getenv: func(string) string { return "s" }, Logger: slog.New(slog.DiscardHandler)}, okTransport{})
	if err != nil {
		b.Fatal(err)
	}
	now := o.opts.Now()
	o.cur.Store(&token{Value: "t", Expiry: now.Add(1 << 40), RefreshAt: now.Add(1 << 40)})
	req, _ := http.NewRequest(http.MethodGet, "https://ehr.example/fhir/Patient", nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := o.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func nowFunc() func() time.Time { return time.Now }
