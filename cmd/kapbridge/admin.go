package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/admin"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/delivery"
)

// adminSessionKeyEnv names the environment variable holding the key that
// signs admin console sessions (hex, at least 32 bytes). Unset, each process
// draws its own: sessions end at a restart and do not cross replicas.
const adminSessionKeyEnv = "KAPBRIDGE_ADMIN_SESSION_KEY"

// buildAdmin returns the admin console (docs/admin.md) over the store, the
// delivery worker this process runs (when its role runs one; the worker
// starts after the console is built) and the loaded config. The bootstrap
// key of the default start (which already holds every scope) also signs in
// to the console.
func (m *serveMain) buildAdmin(store kap.Store, codec *fhir.Codec, audit io.Writer, bootstrap string) (*admin.Console, error) {
	cfg := m.cfg.Config
	cfg.Tenants = serveTenants(cfg, bootstrap)
	for i := range cfg.Tenants {
		for j, k := range cfg.Tenants[i].APIKeys {
			if cfg.Tenants[i].Bootstrap && bootstrap != "" && k.SHA256 == httpapi.HashKey(bootstrap) {
				cfg.Tenants[i].APIKeys[j].Admin = true
			}
		}
	}
	sets, err := targetauth.KeySetsFromConfig(cfg.Targets)
	if err != nil {
		return nil, err
	}
	var key []byte
	if v := os.Getenv(adminSessionKeyEnv); v != "" {
		if key, err = hex.DecodeString(v); err != nil || len(key) < 32 {
			return nil, fmt.Errorf("%s must be at least 32 bytes in hex", adminSessionKeyEnv)
		}
	}
	ac := admin.Config{Store: store, Codec: codec, Config: cfg, KeySets: sets, JWKSPath: cfg.JWKSPath,
		SessionKey: key, Audit: audit, Logger: m.cfg.Logger}
	if runsWorkers(cfg.Role) {
		ac.Health = admin.HealthFunc(func() delivery.Health {
			if m.dlv == nil || m.dlv.worker == nil {
				return delivery.Health{}
			}
			return m.dlv.worker.Health()
		})
		ac.Wake = func() {
			if m.dlv != nil && m.dlv.worker != nil {
				m.dlv.worker.Wake()
			}
		}
	}
	return admin.New(ac)
}
