package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/ndjson"
	"github.com/kapbridge/kap/adapters/payer"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/internal/delivery"
	"github.com/kapbridge/kap/internal/metrics"
)

// workerStopTimeout bounds the graceful stop of the delivery worker: the
// sends in flight get this long, then they are cancelled and their leases
// returned to the outbox.
const workerStopTimeout = 10 * time.Second

// runsWorkers reports whether a process of role delivers the outbox.
func runsWorkers(role string) bool {
	return role == config.RoleWorker || role == config.RoleAll || role == ""
}

// deliveryMain is the running delivery side of a gateway process.
type deliveryMain struct {
	worker  *delivery.Worker
	closers []func() error
}

// deliveryDeps are what the senders and the worker are built from.
type deliveryDeps struct {
	Config  config.Config
	Store   kap.Store
	Codec   *fhir.Codec
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	Getenv  func(string) string
}

// buildSender returns the kap.Sender of one configured target and a function
// that releases it. Returns an error naming the target for a config the
// adapter refuses.
func buildSender(d deliveryDeps, t config.Target) (kap.Sender, func() error, error) {
	noop := func() error { return nil }
	switch t.Type {
	case "ndjson":
		s, err := ndjson.New(ndjson.Options{Name: t.Name, Dir: t.Dir})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	case "fhir":
		tr, err := targetauth.New(t.Auth, targetauth.Options{Cache: d.Store.Cache(), Target: t.Name,
			Logger: d.Logger, Getenv: d.Getenv})
		if err != nil {
			return nil, nil, fmt.Errorf("targets %s: %w", t.Name, err)
		}
		o := ehr.Options{Name: t.Name, BaseURL: t.BaseURL, Transport: tr, Codec: d.Codec,
			Ledger: d.Store.Ledger(), Cache: d.Store.Cache(), Logger: d.Logger,
			AttemptTimeout: time.Duration(t.AttemptTimeout), TotalTimeout: time.Duration(t.TotalTimeout)}
		if strings.ContainsAny(t.Profile, `/\.`) { // a profile file
			b, err := os.ReadFile(t.Profile)
			if err != nil {
				return nil, nil, fmt.Errorf("targets %s: profile: %w", t.Name, err)
			}
			if o.Profile, err = ehr.ParseProfile(b); err != nil {
				return nil, nil, fmt.Errorf("targets %s: profile %s: %w", t.Name, t.Profile, err)
			}
		} else {
			o.ProfileName = t.Profile
		}
		s, err := ehr.New(o)
		if err != nil {
			return nil, nil, fmt.Errorf("targets %s: %w", t.Name, err)
		}
		if t.Kind == "payer" { // claims and eligibility requests (adapters/payer)
			p, err := payer.New(payer.Options{Name: t.Name, Writer: s, BaseURL: t.BaseURL, Client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
				Cache: d.Store.Cache(), Codec: d.Codec, Logger: d.Logger})
			if err != nil {
				return nil, nil, fmt.Errorf("targets %s: %w", t.Name, err)
			}
			return p, noop, nil
		}
		return s, noop, nil
	}
	return nil, nil, fmt.Errorf("targets %s: type must be fhir or ndjson", t.Name)
}

// startDelivery builds a sender per configured target and starts the
// worker. The worker's sends end when ctx does (a hard stop); Stop is the
// graceful one.
func startDelivery(ctx context.Context, d deliveryDeps) (*deliveryMain, error) {
	if d.Getenv == nil {
		d.Getenv = os.Getenv
	}
	m := &deliveryMain{}
	var targets []delivery.Target
	for _, t := range d.Config.Targets {
		s, closeFn, err := buildSender(d, t)
		if err != nil {
			m.close()
			return nil, err
		}
		m.closers = append(m.closers, closeFn)
		targets = append(targets, delivery.Target{
			Sender:      s,
			Concurrency: t.Concurrency,
			SendTimeout: time.Duration(t.TotalTimeout),
			Backoff:     kap.Backoff{MaxAttempts: t.MaxAttempts},
		})
	}
	if len(targets) == 0 {
		return m, nil
	}
	w, err := delivery.New(delivery.Config{Store: d.Store, Targets: targets, Metrics: d.Metrics, Logger: d.Logger})
	if err != nil {
		m.close()
		return nil, err
	}
	if err := w.Start(ctx); err != nil {
		m.close()
		return nil, err
	}
	m.worker = w
	return m, nil
}

// Ready is the readiness check of a process that runs workers: an error
// while they are not running.
func (m *deliveryMain) Ready(context.Context) error {
	if m == nil || m.worker == nil || !m.worker.Running() {
		return errors.New("the delivery workers are not running")
	}
	return nil
}

// Circuits returns each target's circuit-breaker state for /readyz.
func (m *deliveryMain) Circuits() map[string]string {
	out := map[string]string{}
	if m == nil || m.worker == nil {
		return out
	}
	for _, t := range m.worker.Health().Targets {
		out[t.Name] = t.Circuit
	}
	return out
}

// Stop stops the worker gracefully (its leases go back to the outbox) and
// closes the senders; call it before the store closes.
func (m *deliveryMain) Stop(ctx context.Context) error {
	if m == nil {
		return nil
	}
	var err error
	if m.worker != nil {
		if serr := m.worker.Stop(ctx); serr != nil {
			err = fmt.Errorf("stop the delivery worker: %w", serr)
		}
	}
	return errors.Join(err, m.close())
}

func (m *deliveryMain) close() error {
	var errs []error
	for _, c := range m.closers {
		errs = append(errs, c())
	}
	m.closers = nil
	return errors.Join(errs...)
}

// startDelivery starts the delivery worker when the process's role runs
// one.
func (m *serveMain) startDelivery(store kap.Store, codec *fhir.Codec) error {
	if !runsWorkers(m.cfg.Config.Role) {
		return nil
	}
	d, err := startDelivery(context.Background(), deliveryDeps{Config: m.cfg.Config, Store: store, Codec: codec,
		Metrics: m.met, Logger: m.cfg.Logger})
	if err != nil {
		return err
	}
	m.dlv = d
	return nil
}

// stopDelivery stops the worker gracefully, within workerStopTimeout.
func (m *serveMain) stopDelivery() error {
	ctx, cancel := context.WithTimeout(context.Background(), workerStopTimeout)
	defer cancel()
	return m.dlv.Stop(ctx)
}

// circuits is the /readyz circuit report of a process that runs workers;
// nil for an API-only process.
func (m *serveMain) circuits() func() map[string]string {
	if !runsWorkers(m.cfg.Config.Role) {
		return nil
	}
	return func() map[string]string { return m.dlv.Circuits() }
}

// ready is the readiness hook of /readyz: a process whose role runs workers
// is ready only while they run.
func (m *serveMain) ready(ctx context.Context) error {
	if !runsWorkers(m.cfg.Config.Role) {
		return nil
	}
	return m.dlv.Ready(ctx)
}

// deliveryWorker returns the delivery worker of this process, or nil when
// its role runs none (for the admin console's Health; assign it to an
// interface only when it is not nil).
func (m *serveMain) deliveryWorker() *delivery.Worker {
	if m.dlv == nil {
		return nil
	}
	return m.dlv.worker
}
