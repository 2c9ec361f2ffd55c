package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
)

// Context keys set by the middleware.
const (
	ctxRequestID = "kap.requestID"
	ctxTenant    = "kap.tenant"
)

// HeaderRequestID carries the request id in and out.
const HeaderRequestID = "X-Request-ID"

// HeaderAPIKey carries the API key.
const HeaderAPIKey = "X-API-Key"

// requestID takes a well-formed X-Request-ID from the caller or makes one,
// and echoes it in the response. A malformed id is replaced, so nothing the
// caller sends is logged verbatim.
func (s *server) requestID(c *gin.Context) {
	id := c.GetHeader(HeaderRequestID)
	if !safeID(id) {
		var b [15]byte
		rand.Read(b[:])
		id = idEncoding.EncodeToString(b[:])
	}
	c.Set(ctxRequestID, id)
	c.Header(HeaderRequestID, id)
	c.Next()
}

// idEncoding writes generated request ids in lower-case base32 (no 0, 1, 8
// or 9), so a generated id never looks like a date or a numeric identifier.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func safeID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// accessLog logs one line per request: the route pattern (never the raw URL
// or query, which may hold identifiers), method, status, duration, request
// id and tenant.
func (s *server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "(unmatched)"
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "http request",
		slog.String("method", c.Request.Method),
		slog.String("route", route),
		slog.Int("status", c.Writer.Status()),
		slog.Duration("duration", time.Since(start)),
		slog.String("request_id", c.GetString(ctxRequestID)),
		slog.String("tenant", c.GetString(ctxTenant)),
		slog.String("credential", c.GetString(ctxCredential)),
	)
}

// recovery turns a panic into a 500 OperationOutcome naming only the request
// id. The panic value is not logged (it may hold PHI); its type is.
func (s *server) recovery(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("panic in handler", "route", c.FullPath(), "request_id", c.GetString(ctxRequestID),
				"panic_type", fmt.Sprintf("%T", v))
			if !c.Writer.Written() {
				s.fail(c, kap.Errorf(kap.EINTERNAL, "panic"))
			}
			c.Abort()
		}
	}()
	c.Next()
}

// limitBody refuses bodies over MaxBodyBytes (413); readBody enforces the
// bound on bodies without a Content-Length.
func (s *server) limitBody(c *gin.Context) {
	if c.Request.ContentLength > s.cfg.MaxBodyBytes {
		s.fail(c, tooLarge(s.cfg.MaxBodyBytes))
		c.Abort()
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
	c.Next()
}

func tooLarge(n int64) error {
	return kap.Errorf(kap.ETOOLARGE, "the request body is larger than %d bytes", n)
}

// readBody reads the request body, checking its media type and size.
func (s *server) readBody(c *gin.Context) ([]byte, error) {
	if ct := c.ContentType(); ct != "" && ct != "application/json" && ct != "application/fhir+json" {
		return nil, kap.Errorf(kap.EUNSUPPORTED, "Content-Type must be application/json or application/fhir+json")
	}
	data, err := io.ReadAll(c.Request.Body)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge(s.cfg.MaxBodyBytes)
	} else if err != nil {
		if ctxErr := c.Request.Context().Err(); ctxErr != nil {
			return nil, timedOut(s.cfg.RequestTimeout)
		}
		return nil, &kap.Error{Code: kap.EINVALID, Message: "cannot read the request body", Err: err}
	}
	if d := jsonDepth(data); d > s.cfg.MaxJSONDepth {
		return nil, kap.Errorf(kap.ETOOLARGE, "the request body is nested deeper than %d levels", s.cfg.MaxJSONDepth)
	}
	return data, nil
}

// DefaultMaxJSONDepth bounds the nesting of JSON request bodies.
const DefaultMaxJSONDepth = 64

// jsonDepth returns the deepest nesting of objects and arrays in data,
// skipping strings. It does not validate the JSON (the decoder does).
func jsonDepth(data []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, b := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '{', '[':
			depth++
			deepest = max(deepest, depth)
		case '}', ']':
			depth--
		}
	}
	return deepest
}

// timeout gives every request a deadline of RequestTimeout. A request whose
// deadline passes is answered 503 (an OperationOutcome, transient): a
// handler's own 5xx answer caused by the expired context is replaced, and a
// handler that wrote nothing gets one.
func (s *server) timeout(c *gin.Context) {
	if s.cfg.RequestTimeout <= 0 {
		c.Next()
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RequestTimeout)
	defer cancel()
	c.Request = c.Request.WithContext(ctx)
	tw := &timeoutWriter{ResponseWriter: c.Writer, ctx: ctx}
	c.Writer = tw
	c.Next()
	c.Writer = tw.ResponseWriter
	if ctx.Err() == context.DeadlineExceeded && (tw.swallowed || !c.Writer.Written()) {
		s.fail(c, timedOut(s.cfg.RequestTimeout))
	}
}

func timedOut(d time.Duration) error {
	return kap.Errorf(kap.EUNAVAILABLE, "the request did not complete within %s; retry", d)
}

// timeoutWriter drops a 5xx answer written after the request's deadline
// passed, so that timeout can answer 503 instead.
type timeoutWriter struct {
	gin.ResponseWriter
	ctx       context.Context
	swallowed bool
}

func (w *timeoutWriter) WriteHeader(code int) {
	if !w.ResponseWriter.Written() && code >= 500 && w.ctx.Err() == context.DeadlineExceeded {
		w.swallowed = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// expired reports whether the deadline passed with nothing sent: the
// answer will be timeout's 503.
func (w *timeoutWriter) expired() bool {
	return w.swallowed || (!w.ResponseWriter.Written() && w.ctx.Err() == context.DeadlineExceeded)
}

// Status is 503 once the deadline passed with nothing sent, so the audit
// event records the answer the caller gets.
func (w *timeoutWriter) Status() int {
	if w.expired() {
		return http.StatusServiceUnavailable
	}
	return w.ResponseWriter.Status()
}

func (w *timeoutWriter) WriteHeaderNow() {
	if w.swallowed {
		return
	}
	w.ResponseWriter.WriteHeaderNow()
}

func (w *timeoutWriter) Write(b []byte) (int, error) {
	if w.swallowed {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *timeoutWriter) WriteString(v string) (int, error) {
	if w.swallowed {
		return len(v), nil
	}
	return w.ResponseWriter.WriteString(v)
}
