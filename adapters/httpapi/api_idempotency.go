package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
)

// Idempotency headers.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderReplayed       = "Idempotent-Replayed"
)

// replayedHeaders are the response headers kept with an idempotent response.
var replayedHeaders = []string{"Content-Type", "Location", "ETag"}

// captureWriter keeps a copy of the response body.
type captureWriter struct {
	gin.ResponseWriter
	body bytes.Buffer
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *captureWriter) WriteString(s string) (int, error) {
	w.body.WriteString(s)
	return w.ResponseWriter.WriteString(s)
}

// idempotent wraps a write handler with Idempotency-Key handling through
// Store.Idempotency: the key (per tenant) is reserved with a fingerprint of
// the method, path and body; the first response (2xx or 4xx other than 409
// and 429) is kept for kap.IdempotencyTTL and replayed with
// Idempotent-Replayed: true. The same key with another request is 422, a key
// whose first request is still running 409. A 5xx, 409 or 429 releases the
// key so the request may be retried with it.
func (s *server) idempotent(next gin.HandlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		key := c.GetHeader(HeaderIdempotencyKey)
		if key == "" {
			next(c)
			return
		}
		tenant := c.GetString(ctxTenant)
		if err := kap.ValidateIdempotencyKey(tenant, key); err != nil {
			s.fail(c, &kap.Error{Code: kap.EINVALID, Message: "invalid header", Issues: []kap.Issue{{Path: HeaderIdempotencyKey,
				Reason: "must be 1 to 256 characters without control characters"}}})
			return
		}
		data, err := s.readBody(c)
		if err != nil {
			s.fail(c, err)
			return
		}
		c.Request.Body = io.NopCloser(bytes.NewReader(data))
		h := sha256.New()
		h.Write([]byte(c.Request.Method + " " + c.Request.URL.Path + "\n"))
		h.Write(data)
		fp := hex.EncodeToString(h.Sum(nil))
		ctx := c.Request.Context()
		idem := s.cfg.Store.Idempotency()
		stored, err := idem.Reserve(ctx, tenant, key, fp)
		if err != nil {
			if errors.Is(err, kap.ErrIdempotencyKeyReused) {
				s.fail(c, &kap.Error{Code: kap.EINVALID, Message: "Idempotency-Key reused", Issues: []kap.Issue{{Path: HeaderIdempotencyKey,
					Reason: "was used with a different request (method, path or body); use a new key for a new request"}}})
				return
			}
			s.fail(c, err)
			return
		}
		if stored != nil {
			for k, v := range stored.Headers {
				c.Header(k, v)
			}
			c.Header(HeaderReplayed, "true")
			c.Data(stored.Status, stored.Headers["Content-Type"], stored.Body)
			return
		}
		bg := context.WithoutCancel(ctx)
		done := false
		defer func() {
			if !done {
				if err := idem.Release(bg, tenant, key); err != nil {
					s.log.Warn("cannot release an idempotency key", "request_id", c.GetString(ctxRequestID), "code", kap.ErrorCode(err))
				}
			}
		}()
		cw := &captureWriter{ResponseWriter: c.Writer}
		c.Writer = cw
		next(c)
		c.Writer = cw.ResponseWriter
		st := cw.Status()
		if st >= 500 || st == http.StatusConflict || st == http.StatusTooManyRequests {
			return
		}
		resp := kap.StoredResponse{Status: st, Headers: map[string]string{}, Body: cw.body.Bytes()}
		for _, k := range replayedHeaders {
			if v := cw.Header().Get(k); v != "" {
				resp.Headers[k] = v
			}
		}
		if err := idem.Complete(bg, tenant, key, resp); err != nil {
			s.log.Warn("cannot store an idempotent response", "request_id", c.GetString(ctxRequestID), "code", kap.ErrorCode(err))
			return
		}
		done = true
	}
}
