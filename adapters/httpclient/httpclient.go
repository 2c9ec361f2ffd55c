// Package httpclient builds the outbound HTTP client of one delivery target on
// hashicorp/go-retryablehttp, with the retry rules a FHIR target needs:
//
//   - retry on connection errors and on 408, 425, 429, 500, 502, 503 and 504,
//     never on another status;
//   - exponential backoff with full jitter; a Retry-After (seconds or
//     HTTP-date) is honoured when it fits in MaxWait, otherwise the response
//     goes back to the caller at once so that the outbox waits instead;
//   - no automatic retry of a non-idempotent request (POST without
//     If-None-Exist, PATCH) nor of a request with If-Match: its outcome is
//     unknown when the answer is lost (a repeated If-Match write whose first
//     try was applied carries a stale version and is refused with 412, so
//     the caller must read the target instead). Only a connection that was
//     never established is retried;
//   - a per-attempt timeout and a total timeout;
//   - one 401 asks the transport to refresh its credentials (Refresher) and
//     repeats the request once;
//   - a redacting slog logger: method, host, path, status, attempt. Never a
//     query string or a body (FHIR search parameters hold PHI).
package httpclient

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Refresher is implemented by a transport that holds credentials (the
// targetauth transports): Refresh drops the cached access token and gets a
// new one. The client calls it once when a target answers 401, then repeats
// the request once.
type Refresher interface {
	Refresh(ctx context.Context) error
}

// Options configure a Client. Zero values take the defaults.
type Options struct {
	// Name of the target, for logs.
	Name string
	// Transport carries the requests (auth plugs in here); nil means a
	// pooled http.Transport of its own.
	Transport http.RoundTripper
	// Logger receives one debug line per attempt and a warning per retry;
	// nil discards.
	Logger *slog.Logger
	// AttemptTimeout bounds one attempt including reading the body
	// (default 30s). TotalTimeout bounds a Do call with its retries
	// (default 2m); the caller's context may be shorter.
	AttemptTimeout time.Duration
	TotalTimeout   time.Duration
	// RetryMax is the number of retries after the first attempt (default 4).
	RetryMax int
	// BackoffBase is the first backoff ceiling (default 500ms), doubled per
	// retry up to BackoffMax (default 15s). Full jitter: the wait is
	// uniform in [0, ceiling].
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// MaxWait is the longest Retry-After waited for inside one Do (default
	// 1m). A longer one ends Do with the response; Response.RetryAfter
	// carries it (capped at MaxRetryAfter, default 1h) for the outbox.
	MaxWait       time.Duration
	MaxRetryAfter time.Duration
	// MaxBody caps the response body read (default 32 MiB).
	MaxBody int64
	// Now is the clock for HTTP-date Retry-After; nil means time.Now.
	Now func() time.Time
	// Rand returns a number in [0, 1) for the jitter; nil means math/rand/v2.
	Rand func() float64
}

func (o Options) withDefaults() Options {
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 30 * time.Second
	}
	if o.TotalTimeout <= 0 {
		o.TotalTimeout = 2 * time.Minute
	}
	if o.RetryMax == 0 {
		o.RetryMax = 4
	}
	if o.RetryMax < 0 {
		o.RetryMax = 0
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = 500 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 15 * time.Second
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Minute
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = time.Hour
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 32 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		o.Transport = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	return o
}

// Client is the retrying client of one target. It is safe for concurrent use.
type Client struct {
	opts Options
	rc   *retryablehttp.Client
	// transport is the caller's transport, for Refresher.
	transport http.RoundTripper
}

// Response is a target's answer with the body read (at most MaxBody).
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// RetryAfter is the target's Retry-After (capped at MaxRetryAfter),
	// 0 if it sent none.
	RetryAfter time.Duration
	// Attempts is how many times the request was sent.
	Attempts int
}

// Error is a request that got no response. Its message names the method,
// host and path only (no query string).
type Error struct {
	Method, Host, Path string
	Attempts           int
	// NotSent is true when no connection was established, so the target
	// cannot have seen the request.
	NotSent bool
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s%s: no response after %d attempt(s): %v", e.Method, e.Host, e.Path, e.Attempts, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// NotSent reports whether err is a request that never reached the target
// (no connection was established), so a non-idempotent request may be sent
// again without risk of a duplicate.
func NotSent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.NotSent
}

type attemptKey struct{}

// New returns the client of one target.
func New(opts Options) *Client {
	opts = opts.withDefaults()
	c := &Client{opts: opts, transport: opts.Transport}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{
		Transport: &logTransport{next: opts.Transport, log: opts.Logger, name: opts.Name},
		// A FHIR target does not redirect writes; never follow one with
		// a body and credentials to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	rc.HTTPClient.Transport = &attemptTransport{next: rc.HTTPClient.Transport, timeout: opts.AttemptTimeout}
	rc.Logger = nil // its messages carry the full URL with the query string
	rc.RetryMax = opts.RetryMax
	rc.RetryWaitMin = opts.BackoffBase
	rc.RetryWaitMax = opts.BackoffMax
	rc.CheckRetry = c.checkRetry
	rc.Backoff = c.backoff
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.rc = rc
	return c
}

// Idempotent reports whether the client may repeat req after a lost answer:
// every method but POST and PATCH, and a POST carrying If-None-Exist (a
// conditional create finds its own earlier write). A request with If-Match
// is not: when its first try was applied, the version it names is stale and
// a repeat is refused with 412, which reads as a conflict although the write
// is in place. Its caller resolves a lost answer by reading the target.
func Idempotent(req *http.Request) bool {
	if req.Header.Get("If-Match") != "" {
		return false
	}
	switch req.Method {
	case http.MethodPost:
		return req.Header.Get("If-None-Exist") != ""
	case http.MethodPatch:
		return false
	}
	return true
}

// RetryableStatus reports whether a status is worth repeating the request.
func RetryableStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout:
		return true
	}
	return false
}

func (c *Client) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		if isPermanentTransportError(err) {
			return false, nil
		}
		// A non-idempotent request is repeated only when it never left:
		// the connection was not established.
		if v, ok := ctx.Value(attemptKey{}).(*attemptState); ok && !v.idempotent && !dialError(err) {
			return false, nil
		}
		return true, nil
	}
	if !RetryableStatus(resp.StatusCode) {
		return false, nil
	}
	if v, ok := ctx.Value(attemptKey{}).(*attemptState); ok && !v.idempotent {
		// A 5xx to a POST (or an If-Match write) does not tell whether it
		// was applied.
		return false, nil
	}
	if ra, ok := c.retryAfter(resp); ok && ra > c.opts.MaxWait {
		return false, nil // the outbox waits, not this goroutine
	}
	return true, nil
}

func (c *Client) backoff(base, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	ceil := float64(base) * float64(uint64(1)<<min(attempt, 30))
	if ceil > float64(maxWait) {
		ceil = float64(maxWait)
	}
	d := time.Duration(c.opts.Rand() * ceil)
	if resp != nil {
		if ra, ok := c.retryAfter(resp); ok {
			d = max(d, min(ra, c.opts.MaxWait))
		}
	}
	return d
}

// retryAfter parses the Retry-After header: delay-seconds or an HTTP-date.
func (c *Client) retryAfter(resp *http.Response) (time.Duration, bool) {
	return ParseRetryAfter(resp.Header.Get("Retry-After"), c.opts.Now())
}

// ParseRetryAfter parses a Retry-After value (delay-seconds or HTTP-date)
// relative to now. A date in the past gives 0.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		if s > int64(365*24*time.Hour/time.Second) {
			s = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

type attemptState struct {
	idempotent bool
	attempts   atomic.Int32
}

// Do sends req with the retry rules and returns the response with its body
// read. An error means no response came: it is an *Error (or the context's
// error) and names no query string. A response of any status is not an
// error.
func (c *Client) Do(ctx context.Context, req *http.Request) (*Response, error) {
	resp, err := c.do(ctx, req)
	if err == nil && resp.Status == http.StatusUnauthorized {
		if r, ok := c.transport.(Refresher); ok {
			if rerr := r.Refresh(ctx); rerr != nil {
				c.opts.Logger.WarnContext(ctx, "credential refresh failed", "target", c.opts.Name, "error", rerr)
				return resp, nil
			}
			if req.GetBody == nil && req.Body != nil && req.Body != http.NoBody {
				return resp, nil
			}
			req2 := req.Clone(ctx)
			if req.GetBody != nil {
				b, gerr := req.GetBody()
				if gerr != nil {
					return resp, nil
				}
				req2.Body = b
			}
			return c.do(ctx, req2)
		}
	}
	return resp, err
}

func (c *Client) do(ctx context.Context, req *http.Request) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.TotalTimeout)
	defer cancel()
	st := &attemptState{idempotent: Idempotent(req)}
	ctx = context.WithValue(ctx, attemptKey{}, st)
	rreq, err := retryablehttp.FromRequest(req.WithContext(ctx))
	if err != nil {
		return nil, &Error{Method: req.Method, Host: req.URL.Host, Path: req.URL.Path, NotSent: true, Err: errors.New("cannot buffer the request body")}
	}
	hresp, err := c.rc.Do(rreq)
	n := int(st.attempts.Load())
	if err != nil {
		if hresp != nil {
			hresp.Body.Close()
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil, &Error{Method: req.Method, Host: req.URL.Host, Path: req.URL.Path, Attempts: n, NotSent: n == 0, Err: ctx.Err()}
		}
		return nil, &Error{Method: req.Method, Host: req.URL.Host, Path: req.URL.Path, Attempts: n, NotSent: dialError(err), Err: redact(err)}
	}
	defer hresp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hresp.Body, c.opts.MaxBody+1))
	if err != nil {
		return nil, &Error{Method: req.Method, Host: req.URL.Host, Path: req.URL.Path, Attempts: n, Err: fmt.Errorf("reading the response: %w", redact(err))}
	}
	if int64(len(body)) > c.opts.MaxBody {
		return nil, &Error{Method: req.Method, Host: req.URL.Host, Path: req.URL.Path, Attempts: n, Err: fmt.Errorf("response larger than %d bytes", c.opts.MaxBody)}
	}
	out := &Response{Status: hresp.StatusCode, Header: hresp.Header, Body: body, Attempts: n}
	if ra, ok := c.retryAfter(hresp); ok {
		out.RetryAfter = min(ra, c.opts.MaxRetryAfter)
	}
	return out, nil
}

// NewRequest builds a request with a replayable body.
func NewRequest(ctx context.Context, method, u string, body []byte, header http.Header) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("building the %s request: %w", method, redact(err))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return req, nil
}

// redact strips URLs (which may carry a query string) from an error.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func dialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

func isPermanentTransportError(err error) bool {
	var ce x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	if errors.As(err, &ce) || errors.As(err, &ua) || errors.As(err, &he) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "unsupported protocol scheme") || strings.Contains(s, "invalid header")
}

// attemptTransport gives each attempt its own timeout, released when the
// body is closed.
type attemptTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// logTransport logs each attempt: method, host, path, status, attempt,
// duration. Never the query string or a body.
type logTransport struct {
	next http.RoundTripper
	log  *slog.Logger
	name string
}

func (t *logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	n := 1
	if st, ok := req.Context().Value(attemptKey{}).(*attemptState); ok {
		n = int(st.attempts.Add(1))
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	attrs := []any{"target", t.name, "method", req.Method, "host", req.URL.Host, "path", req.URL.Path, "attempt", n, "duration", time.Since(start)}
	if err != nil {
		t.log.WarnContext(req.Context(), "target request failed", append(attrs, "error", redact(err).Error())...)
		return nil, err
	}
	attrs = append(attrs, "status", resp.StatusCode)
	if resp.StatusCode >= 400 {
		t.log.WarnContext(req.Context(), "target request", attrs...)
	} else {
		t.log.DebugContext(req.Context(), "target request", attrs...)
	}
	return resp, nil
}
