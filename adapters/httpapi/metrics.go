package httpapi

import (
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kapbridge/kap"
)

// observe records every request in the HTTPDuration histogram, labelled by
// the gin route pattern (never the raw path: it carries record and client
// ids), the method and the status. Requests no route matched are labelled
// "unmatched", and methods outside the standard set "other", so a client
// cannot grow the label space.
func (s *server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.cfg.Metrics.HTTPDuration.WithLabelValues(route, methodLabel(c.Request.Method),
		strconv.Itoa(c.Writer.Status())).Observe(time.Since(start).Seconds())
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// metricsHandler serves the Prometheus exposition of Config.Metrics. With
// Config.MetricsToken set it demands "Authorization: Bearer <token>".
func (s *server) metricsHandler() gin.HandlerFunc {
	h := promhttp.HandlerFor(s.cfg.Metrics.Registry, promhttp.HandlerOpts{})
	want := []byte(s.cfg.MetricsToken)
	return func(c *gin.Context) {
		if len(want) > 0 {
			got, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
				c.Header("WWW-Authenticate", `Bearer realm="metrics"`)
				s.fail(c, kap.Errorf(kap.EUNAUTHORIZED, "GET /metrics needs the metrics bearer token"))
				return
			}
		}
		h.ServeHTTP(c.Writer, c.Request)
	}
}

// timed runs fn and records its duration in the histogram of kind.
func timed[T any](obs interface{ Observe(float64) }, fn func() (T, error)) (T, error) {
	start := time.Now()
	v, err := fn()
	obs.Observe(time.Since(start).Seconds())
	return v, err
}
