// Package metrics holds the gateway's Prometheus metrics (client_golang).
// Labels never carry PHI: routes are gin route patterns, targets and
// tenants are configuration names, outcomes are fixed words.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the gateway's collectors, registered on one registry.
type Metrics struct {
	Registry *prometheus.Registry

	// HTTP: request latency by route pattern, method and status.
	HTTPDuration *prometheus.HistogramVec // route, method, status
	// Mapping and validation durations by record kind.
	MapDuration      *prometheus.HistogramVec // kind
	ValidateDuration *prometheus.HistogramVec // kind
	// Deliveries by target and outcome (delivered, retry, dead, unknown).
	Deliveries *prometheus.CounterVec // target, outcome
	// Retries scheduled by target.
	Retries *prometheus.CounterVec // target
	// DeliveryDuration of one Send, by target.
	DeliveryDuration *prometheus.HistogramVec // target
	// CircuitState per target: 0 closed, 1 half-open, 2 open.
	CircuitState *prometheus.GaugeVec // target
}

// New returns the metrics registered on a new registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kapbridge_http_request_duration_seconds", Help: "HTTP request latency by route pattern, method and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "status"}),
		MapDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kapbridge_mapping_duration_seconds", Help: "Time to map a domain record to a FHIR Bundle, by record kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1},
		}, []string{"kind"}),
		ValidateDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kapbridge_validation_duration_seconds", Help: "Time to validate a mapped Bundle, by record kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1},
		}, []string{"kind"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kapbridge_deliveries_total", Help: "Delivery attempts by target and outcome (delivered, retry, dead, unknown).",
		}, []string{"target", "outcome"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kapbridge_delivery_retries_total", Help: "Retries scheduled, by target.",
		}, []string{"target"}),
		DeliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kapbridge_delivery_duration_seconds", Help: "Duration of one delivery (all requests of one record version), by target.",
			Buckets: prometheus.DefBuckets,
		}, []string{"target"}),
		CircuitState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kapbridge_circuit_state", Help: "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.",
		}, []string{"target"}),
	}
	reg.MustRegister(m.HTTPDuration, m.MapDuration, m.ValidateDuration, m.Deliveries, m.Retries,
		m.DeliveryDuration, m.CircuitState,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
