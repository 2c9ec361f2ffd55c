package ehrtest

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is an in-process toxiproxy TCP proxy in front of an upstream.
type Proxy struct {
	// Addr is the proxy's listen address (host:port).
	Addr string

	t     testing.TB
	proxy *toxiproxy.Proxy
}

// StartProxy starts a toxiproxy proxy on 127.0.0.1 in front of upstream
// (host:port) and stops it with t.Cleanup.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.New(io.Discard))
	p := toxiproxy.NewProxy(api, "ehr", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("ehrtest: start toxiproxy: %v", err)
	}
	px := &Proxy{Addr: p.Listen, t: t, proxy: p}
	t.Cleanup(p.Stop)
	return px
}

// URL returns the FHIR base of srv reached through the proxy.
func (p *Proxy) URL(srv *Server) string {
	return strings.Replace(srv.URL, srv.Addr, p.Addr, 1)
}

// AddToxic adds a toxic (toxiproxy's JSON: name, type, stream
// "upstream"|"downstream", toxicity 0..1, attributes) and returns its name.
func (p *Proxy) AddToxic(name, typ, stream string, toxicity float64, attributes string) string {
	p.t.Helper()
	if attributes == "" {
		attributes = "{}"
	}
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":%g,"attributes":%s}`, name, typ, stream, toxicity, attributes)
	if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		p.t.Fatalf("ehrtest: add toxic %s: %v", js, err)
	}
	return name
}

// RemoveToxic removes a toxic by name.
func (p *Proxy) RemoveToxic(name string) {
	p.t.Helper()
	if err := p.proxy.Toxics.RemoveToxic(p.t.Context(), name); err != nil {
		p.t.Fatalf("ehrtest: remove toxic %s: %v", name, err)
	}
}

// Reset removes every toxic.
func (p *Proxy) Reset() { p.proxy.Toxics.ResetToxics(p.t.Context()) }

// Latency delays every answer by latency ± jitter (downstream).
func (p *Proxy) Latency(latency, jitter time.Duration) string {
	p.t.Helper()
	return p.AddToxic("latency", "latency", "downstream", 1,
		fmt.Sprintf(`{"latency":%d,"jitter":%d}`, latency.Milliseconds(), jitter.Milliseconds()))
}

// ResetPeer resets percent % of connections with a TCP RST as soon as the
// server's answer starts: the request was sent and processed, the client
// sees "connection reset" with no response (toxicity is drawn per
// connection).
func (p *Proxy) ResetPeer(percent float64) string {
	p.t.Helper()
	return p.AddToxic("reset_peer", "reset_peer", "downstream", percent/100, `{"timeout":0}`)
}

// Timeout stops all data of the connection and closes it after d (0: never
// closes; the client must time out) for percent % of connections.
func (p *Proxy) Timeout(d time.Duration, percent float64) string {
	p.t.Helper()
	return p.AddToxic("timeout", "timeout", "downstream", percent/100, fmt.Sprintf(`{"timeout":%d}`, d.Milliseconds()))
}

// Bandwidth limits the answers to kbps KB/s.
func (p *Proxy) Bandwidth(kbps int64) string {
	p.t.Helper()
	return p.AddToxic("bandwidth", "bandwidth", "downstream", 1, fmt.Sprintf(`{"rate":%d}`, kbps))
}

// Disable stops the proxy: open connections close and new ones are refused
// until Enable (an outage at the TCP level).
func (p *Proxy) Disable() { p.proxy.Stop() }

// Enable restarts a disabled proxy on the same address.
func (p *Proxy) Enable() {
	p.t.Helper()
	p.proxy.Listen = p.Addr
	if err := p.proxy.Start(); err != nil {
		p.t.Fatalf("ehrtest: restart toxiproxy: %v", err)
	}
}
