package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kapbridge/kap"
)

// Defaults of QueueOptions.
const (
	DefaultQueueTimeout = 3 * time.Second
	DefaultQueueTTL     = 5 * time.Second
)

// QueueOptions configure the queue collector.
type QueueOptions struct {
	// Timeout bounds the reads of one scrape (all targets); default
	// DefaultQueueTimeout.
	Timeout time.Duration
	// TTL is how long a read is reused: scrapes within it (several
	// Prometheus servers, a scrape storm) do not touch the store; default
	// DefaultQueueTTL.
	TTL time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger // default slog.Default()
}

// QueueCollector exports the outbox of each configured target on scrape:
//
//	kapbridge_queue_depth{target}               messages waiting or in flight
//	kapbridge_queue_oldest_age_seconds{target}  age of the oldest (0 if empty)
//	kapbridge_dead_letters{target}              dead letters
//	kapbridge_queue_stats_up{target}            1 if the last read succeeded
//
// across tenants (kap.Outbox.Stats): the only label is the target's
// configuration name, never a tenant or a client. A target whose read fails
// or times out shows only kapbridge_queue_stats_up 0 (the scrape still
// succeeds). Concurrent scrapes share one read.
type QueueCollector struct {
	outbox  kap.Outbox
	targets []string
	opt     QueueOptions

	depth, oldest, dead, up *prometheus.Desc

	mu    sync.Mutex // held while reading: one read at a time
	at    time.Time  // when stats was read
	stats []queueStat
}

type queueStat struct {
	target string
	st     kap.OutboxStats
	err    error
}

// NewQueueCollector returns the collector of the targets' queues in o.
func NewQueueCollector(o kap.Outbox, targets []string, opt QueueOptions) *QueueCollector {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultQueueTimeout
	}
	if opt.TTL <= 0 {
		opt.TTL = DefaultQueueTTL
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	l := []string{"target"}
	return &QueueCollector{
		outbox: o, targets: append([]string(nil), targets...), opt: opt,
		depth:  prometheus.NewDesc("kapbridge_queue_depth", "Outbox messages waiting or in flight, by target (all tenants).", l, nil),
		oldest: prometheus.NewDesc("kapbridge_queue_oldest_age_seconds", "Age of the oldest outbox message by target (all tenants); 0 when the queue is empty.", l, nil),
		dead:   prometheus.NewDesc("kapbridge_dead_letters", "Dead letters by target (all tenants).", l, nil),
		up:     prometheus.NewDesc("kapbridge_queue_stats_up", "1 if the last read of the target's queue succeeded, 0 if it failed or timed out.", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.oldest
	ch <- c.dead
	ch <- c.up
}

// Collect implements prometheus.Collector: it reads the queues (at most
// once per TTL) and sends the gauges.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	stats, at := c.read()
	for _, s := range stats {
		if s.err != nil {
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0, s.target)
			continue
		}
		age := 0.0
		if !s.st.Oldest.IsZero() {
			age = max(at.Sub(s.st.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1, s.target)
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(s.st.Depth), s.target)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, s.target)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(s.st.DeadLetters), s.target)
	}
}

// read returns the cached stats, reading them again when older than TTL.
func (c *QueueCollector) read() ([]queueStat, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opt.Now()
	if c.stats != nil && now.Sub(c.at) < c.opt.TTL && !now.Before(c.at) {
		return c.stats, c.at
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opt.Timeout)
	defer cancel()
	stats := make([]queueStat, 0, len(c.targets))
	for _, t := range c.targets {
		st, err := c.outbox.Stats(ctx, t)
		if err != nil {
			// The code only: a store error could carry a key with a tenant.
			c.opt.Logger.Warn("queue metrics: reading the outbox failed", "target", t, "code", kap.ErrorCode(err))
		}
		stats = append(stats, queueStat{target: t, st: st, err: err})
	}
	c.stats, c.at = stats, now
	return stats, now
}

// RegisterQueue registers the queue collector of the targets on m's
// registry.
func (m *Metrics) RegisterQueue(o kap.Outbox, targets []string, opt QueueOptions) error {
	return m.Registry.Register(NewQueueCollector(o, targets, opt))
}
