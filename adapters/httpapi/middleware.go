package httpapi

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
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
		return nil, &kap.Error{Code: kap.EINVALID, Message: "cannot read the request body", Err: err}
	}
	return data, nil
}

// auth resolves X-API-Key to a tenant (401 if missing or unknown).
func (s *server) auth(c *gin.Context) {
	key := strings.TrimSpace(c.GetHeader(HeaderAPIKey))
	if key == "" {
		s.fail(c, kap.Errorf(kap.EUNAUTHORIZED, "the X-API-Key header is required"))
		c.Abort()
		return
	}
	tenant, ok := s.cfg.Keys[HashKey(key)]
	if !ok {
		s.fail(c, kap.Errorf(kap.EUNAUTHORIZED, "the API key is not valid"))
		c.Abort()
		return
	}
	c.Set(ctxTenant, tenant)
	c.Next()
}
