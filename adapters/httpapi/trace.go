package httpapi

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/contrib/instrumentation/github.com/gin-gonic/gin/otelgin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// NewTracerProvider returns a tracer provider that batches spans to the
// OTLP/HTTP endpoint (a base URL such as http://collector:4318; the
// exporter appends /v1/traces). The caller shuts it down on exit, which
// flushes the last spans.
func NewTracerProvider(ctx context.Context, endpoint string) (*sdktrace.TracerProvider, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("otelEndpoint must be an http(s) URL such as http://localhost:4318")
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(strings.TrimSuffix(endpoint, "/") + "/v1/traces")}
	if u.Path != "" && u.Path != "/" {
		opts = []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint)}
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("kapbridge"))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// tracing is the otelgin middleware on Config.TracerProvider. Spans are
// named "<METHOD> <route pattern>"; the attributes otelgin takes from the
// request are filtered (redactingProvider) so that no raw path (it holds
// record and client ids) and no query string reaches the collector.
func (s *server) tracing() gin.HandlerFunc {
	return otelgin.Middleware("kapbridge",
		otelgin.WithTracerProvider(redactingProvider{tp: s.cfg.TracerProvider}),
		otelgin.WithPropagators(propagation.TraceContext{}),
		otelgin.WithSpanNameFormatter(func(c *gin.Context) string {
			route := c.FullPath()
			if route == "" {
				route = "unmatched"
			}
			return methodLabel(c.Request.Method) + " " + route
		}),
	)
}

// redactedKeys are the span attributes that may carry PHI: the raw path
// and the full URL or query.
var redactedKeys = map[attribute.Key]bool{
	"url.path": true, "url.query": true, "url.full": true, "http.target": true, "http.url": true,
}

type redactingProvider struct {
	embedded.TracerProvider
	tp trace.TracerProvider
}

func (p redactingProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return redactingTracer{t: p.tp.Tracer(name, opts...)}
}

type redactingTracer struct {
	embedded.Tracer
	t trace.Tracer
}

// Start drops the redacted attributes from the start options.
func (r redactingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	var attrs []attribute.KeyValue
	for _, kv := range cfg.Attributes() {
		if !redactedKeys[kv.Key] {
			attrs = append(attrs, kv)
		}
	}
	out := []trace.SpanStartOption{trace.WithAttributes(attrs...), trace.WithSpanKind(cfg.SpanKind()),
		trace.WithLinks(cfg.Links()...)}
	if !cfg.Timestamp().IsZero() {
		out = append(out, trace.WithTimestamp(cfg.Timestamp()))
	}
	if cfg.NewRoot() {
		out = append(out, trace.WithNewRoot())
	}
	return r.t.Start(ctx, name, out...)
}
