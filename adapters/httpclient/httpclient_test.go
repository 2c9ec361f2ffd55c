package httpclient_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap/adapters/httpclient"
)

// fastOptions waits no backoff (Rand 0) so that only Retry-After waits.
func fastOptions() httpclient.Options {
	return httpclient.Options{
		Name:           "test",
		RetryMax:       3,
		BackoffBase:    time.Millisecond,
		BackoffMax:     5 * time.Millisecond,
		AttemptTimeout: 10 * time.Second,
		TotalTimeout:   60 * time.Second,
		Rand:           func() float64 { return 0 },
	}
}

// scripted answers the statuses in order (the last one repeats) and records
// when each request came.
type scripted struct {
	mu       sync.Mutex
	statuses []int
	headers  []http.Header
	times    []time.Time
	bodies   []string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	i := len(s.times)
	s.times = append(s.times, time.Now())
	s.bodies = append(s.bodies, string(b))
	st := s.statuses[min(i, len(s.statuses)-1)]
	var h http.Header
	if i < len(s.headers) {
		h = s.headers[i]
	}
	s.mu.Unlock()
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(st)
	_, _ = w.Write([]byte(`{"resourceType":"OperationOutcome"}`))
}

func (s *scripted) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

func (s *scripted) gap(i int) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.times[i].Sub(s.times[i-1])
}

func do(t *testing.T, c *httpclient.Client, method, u string, body []byte, h http.Header) (*httpclient.Response, error) {
	t.Helper()
	req, err := httpclient.NewRequest(context.Background(), method, u, body, h)
	if err != nil {
		t.Fatal(err)
	}
	return c.Do(context.Background(), req)
}

func TestRetryAfterSeconds(t *testing.T) {
	s := &scripted{statuses: []int{429, 200}, headers: []http.Header{{"Retry-After": {"1"}}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := do(t, httpclient.New(fastOptions()), "GET", srv.URL+"/Patient/1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.Attempts != 2 || s.count() != 2 {
		t.Fatalf("status %d after %d attempts (server saw %d), want 200 after 2", resp.Status, resp.Attempts, s.count())
	}
	if g := s.gap(1); g < 900*time.Millisecond {
		t.Errorf("retried after %v, want the 1s Retry-After honoured", g)
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &scripted{statuses: []int{503, 200}, headers: []http.Header{{"Retry-After": {now.Add(time.Second).Format(http.TimeFormat)}}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	o := fastOptions()
	o.Now = func() time.Time { return now }
	resp, err := do(t, httpclient.New(o), "GET", srv.URL+"/metadata", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || s.count() != 2 {
		t.Fatalf("status %d after %d requests, want 200 after 2", resp.Status, s.count())
	}
	if g := s.gap(1); g < 900*time.Millisecond {
		t.Errorf("retried after %v, want the HTTP-date Retry-After (1s) honoured", g)
	}
}

func TestLongRetryAfterGoesBackToTheCaller(t *testing.T) {
	s := &scripted{statuses: []int{429}, headers: []http.Header{{"Retry-After": {"7200"}}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	o := fastOptions()
	o.MaxWait = time.Minute
	o.MaxRetryAfter = time.Hour
	resp, err := do(t, httpclient.New(o), "GET", srv.URL+"/Patient/1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 429 || s.count() != 1 {
		t.Fatalf("status %d after %d requests, want 429 at once", resp.Status, s.count())
	}
	if resp.RetryAfter != time.Hour {
		t.Errorf("RetryAfter %v, want the 2h capped at 1h", resp.RetryAfter)
	}
}

func TestRetryableStatuses(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   int // requests the server sees
	}{
		{408, 4}, {425, 4}, {429, 4}, {500, 4}, {502, 4}, {503, 4}, {504, 4},
		{400, 1}, {401, 1}, {403, 1}, {404, 1}, {409, 1}, {412, 1}, {422, 1}, {501, 1},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			s := &scripted{statuses: []int{tc.status}}
			srv := httptest.NewServer(s)
			defer srv.Close()
			resp, err := do(t, httpclient.New(fastOptions()), "PUT", srv.URL+"/Observation/1", []byte(`{}`), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tc.status || s.count() != tc.want || resp.Attempts != tc.want {
				t.Fatalf("status %d, server saw %d requests, client counted %d; want %d requests", resp.Status, s.count(), resp.Attempts, tc.want)
			}
			for i, b := range s.bodies {
				if b != `{}` {
					t.Errorf("request %d body %q, want the body replayed", i, b)
				}
			}
		})
	}
}

func TestRetryRecovers(t *testing.T) {
	s := &scripted{statuses: []int{503, 502, 200}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := do(t, httpclient.New(fastOptions()), "GET", srv.URL+"/x", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.Attempts != 3 {
		t.Fatalf("status %d after %d attempts, want 200 after 3", resp.Status, resp.Attempts)
	}
	if !strings.Contains(string(resp.Body), "OperationOutcome") {
		t.Errorf("body %q not read", resp.Body)
	}
}

func TestPostIsNotRetried(t *testing.T) {
	s := &scripted{statuses: []int{503, 200}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := httpclient.New(fastOptions())
	resp, err := do(t, c, "POST", srv.URL+"/", []byte(`{"resourceType":"Bundle"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 503 || s.count() != 1 {
		t.Fatalf("transaction POST: status %d after %d requests, want 503 after 1", resp.Status, s.count())
	}

	s2 := &scripted{statuses: []int{503, 201}}
	srv2 := httptest.NewServer(s2)
	defer srv2.Close()
	resp, err = do(t, c, "POST", srv2.URL+"/Observation", []byte(`{}`), http.Header{"If-None-Exist": {"identifier=a|b"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 201 || s2.count() != 2 {
		t.Fatalf("conditional create: status %d after %d requests, want 201 after 2", resp.Status, s2.count())
	}
}

// resetListener reads one request per connection and resets the connection
// without answering.
func resetListener(t *testing.T) (addr string, requests *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests = new(atomic.Int32)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				requests.Add(1)
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST instead of FIN
				}
			}()
		}
	}()
	return ln.Addr().String(), requests
}

func TestConnectionReset(t *testing.T) {
	addr, n := resetListener(t)
	c := httpclient.New(fastOptions())

	_, err := do(t, c, "PUT", "http://"+addr+"/Observation?identifier=sys|secret-value", []byte(`{}`), nil)
	var he *httpclient.Error
	if !errors.As(err, &he) {
		t.Fatalf("err %v, want *httpclient.Error", err)
	}
	if got := n.Load(); got != 4 {
		t.Errorf("idempotent PUT sent %d times, want 4 (1 + RetryMax 3)", got)
	}
	if he.NotSent || httpclient.NotSent(err) {
		t.Error("a reset after the request was read must not count as not sent")
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "identifier") {
		t.Errorf("error %q carries the query string", err)
	}

	n.Store(0)
	_, err = do(t, c, "POST", "http://"+addr+"/", []byte(`{}`), nil)
	if err == nil || httpclient.NotSent(err) {
		t.Fatalf("err %v, want an error with the outcome unknown", err)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("transaction POST sent %d times after a reset, want 1 (outcome unknown, no retry)", got)
	}
}

func TestDialErrorRetriesEvenPost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = do(t, httpclient.New(fastOptions()), "POST", "http://"+addr+"/", []byte(`{}`), nil)
	var he *httpclient.Error
	if !errors.As(err, &he) || !he.NotSent {
		t.Fatalf("err %#v, want a not-sent *httpclient.Error", err)
	}
	if he.Attempts != 4 {
		t.Errorf("%d attempts, want 4: a refused connection is safe to retry", he.Attempts)
	}
}

func TestAttemptTimeout(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			select {
			case <-r.Context().Done():
			case <-time.After(20 * time.Second):
			}
			return
		}
		w.WriteHeader(200)
	}))
	defer srv.Close()
	o := fastOptions()
	o.AttemptTimeout = 300 * time.Millisecond
	resp, err := do(t, httpclient.New(o), "GET", srv.URL+"/x", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || resp.Attempts != 2 {
		t.Fatalf("status %d after %d attempts, want 200 after the slow first attempt timed out", resp.Status, resp.Attempts)
	}
}

func TestTotalTimeout(t *testing.T) {
	s := &scripted{statuses: []int{503}, headers: []http.Header{{"Retry-After": {"30"}}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	o := fastOptions()
	o.TotalTimeout = 500 * time.Millisecond
	_, err := do(t, httpclient.New(o), "GET", srv.URL+"/x", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the total deadline", err)
	}
	if s.count() != 1 {
		t.Errorf("%d requests, want 1 before the deadline", s.count())
	}
}

// refreshing is a transport that sends a token and can refresh it.
type refreshing struct {
	token     atomic.Int32
	refreshes atomic.Int32
}

func (r *refreshing) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer t"+strconv.Itoa(int(r.token.Load())))
	return http.DefaultTransport.RoundTrip(req)
}

func (r *refreshing) Refresh(context.Context) error {
	r.refreshes.Add(1)
	r.token.Add(1)
	return nil
}

func TestUnauthorizedRefreshesOnce(t *testing.T) {
	var bodies []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer t1" {
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(200)
	}))
	defer srv.Close()
	tr := &refreshing{}
	o := fastOptions()
	o.Transport = tr
	resp, err := do(t, httpclient.New(o), "PUT", srv.URL+"/Patient/1", []byte(`{"a":1}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 200 || tr.refreshes.Load() != 1 {
		t.Fatalf("status %d with %d refreshes, want 200 after 1", resp.Status, tr.refreshes.Load())
	}
	if len(bodies) != 2 || bodies[1] != `{"a":1}` {
		t.Errorf("bodies %q, want the body sent again", bodies)
	}

	// A target that keeps refusing: one refresh, then the 401 goes back.
	tr2 := &refreshing{}
	tr2.token.Store(5)
	o.Transport = tr2
	resp, err = do(t, httpclient.New(o), "GET", srv.URL+"/Patient/1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 401 || tr2.refreshes.Load() != 1 {
		t.Fatalf("status %d with %d refreshes, want 401 after exactly 1 refresh", resp.Status, tr2.refreshes.Load())
	}
}

func TestLogsCarryNoQueryOrBody(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug})
	s := &scripted{statuses: []int{503, 200}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	o := fastOptions()
	o.Logger = slog.New(h)
	_, err := do(t, httpclient.New(o), "PUT", srv.URL+"/Patient?identifier=urn:sys|Jane-Doe-1970", []byte(`{"name":"Jane Doe"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := resetListener(t)
	_, _ = do(t, httpclient.New(o), "GET", "http://"+addr+"/Patient?identifier=urn:sys|Jane-Doe-1970", nil, nil)
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if strings.Contains(out, "Jane") || strings.Contains(out, "identifier") {
		t.Fatalf("log carries PHI:\n%s", out)
	}
	for _, want := range []string{`"path":"/Patient"`, `"status":503`, `"attempt":2`, `"method":"PUT"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	} {
		got, ok := httpclient.ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// A write with If-Match is not repeated once it may have reached the
// target: a repeat of an applied write names a stale version and would be
// refused with 412 (issue #6). Without If-Match the same PUT is repeated.
func TestIfMatchIsNotRetried(t *testing.T) {
	addr, n := resetListener(t)
	c := httpclient.New(fastOptions())
	_, err := do(t, c, "PUT", "http://"+addr+"/Observation/1", []byte(`{}`), http.Header{"If-Match": {`W/"3"`}})
	if err == nil || httpclient.NotSent(err) {
		t.Fatalf("err %v, want an error with the outcome unknown", err)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("PUT with If-Match sent %d times after a reset, want 1", got)
	}
	n.Store(0)
	if _, err := do(t, c, "PUT", "http://"+addr+"/Observation/1", []byte(`{}`), nil); err == nil {
		t.Fatal("want an error")
	}
	if got := n.Load(); got < 2 {
		t.Errorf("PUT without If-Match sent %d times after resets, want retries", got)
	}

	s := &scripted{statuses: []int{503, 200}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := do(t, c, "PUT", srv.URL+"/Observation/1", []byte(`{}`), http.Header{"If-Match": {`W/"3"`}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 503 || s.count() != 1 {
		t.Fatalf("PUT with If-Match: status %d after %d requests, want 503 after 1", resp.Status, s.count())
	}
	req, _ := http.NewRequest("PUT", "http://x/Observation/1", nil)
	req.Header.Set("If-Match", `W/"1"`)
	if httpclient.Idempotent(req) {
		t.Error("Idempotent(PUT with If-Match) = true")
	}
}
