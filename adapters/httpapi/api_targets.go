package httpapi

import (
	"context"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
)

// TargetPolicy is one delivery target of a tenant and its consent rule.
type TargetPolicy struct {
	// Name is the target's name in the configuration (the outbox target).
	Name string
	// RequireConsent: a client's records are queued for this target only
	// when the client's latest active Consent has a share grant naming it
	// (kap.Consent.Allows). Targets without it (the NDJSON default) take
	// every record.
	RequireConsent bool
}

// policies returns the targets of tenant.
func (s *server) policies(tenant string) []TargetPolicy {
	if ps, ok := s.cfg.TenantTargets[tenant]; ok {
		return ps
	}
	ps := make([]TargetPolicy, len(s.cfg.Targets))
	for i, t := range s.cfg.Targets {
		ps[i] = TargetPolicy{Name: t}
	}
	return ps
}

// targetDecision is whether a record goes to a target, and why not.
type targetDecision struct {
	Policy TargetPolicy
	Allow  bool
	Reason string // when not allowed; no PHI
}

// decideTargets decides, for every target of the tenant, whether a record of
// clientID is queued for it. incoming is the record being written (its
// Consent counts as the client's latest when it is one). Providers belong to
// no client: they go to every target (a Practitioner is not a client's
// record, and the client resources that reference it need it there).
func (s *server) decideTargets(ctx context.Context, tenant string, rec kap.Record) ([]targetDecision, error) {
	ps := s.policies(tenant)
	out := make([]targetDecision, len(ps))
	var consent *kap.Consent
	looked := false
	for i, p := range ps {
		out[i] = targetDecision{Policy: p, Allow: true}
		if !p.RequireConsent || rec.RecordClientID() == "" {
			continue
		}
		if !looked {
			var err error
			if consent, err = s.latestConsent(ctx, tenant, rec); err != nil {
				return nil, err
			}
			looked = true
		}
		switch {
		case consent == nil:
			out[i].Allow, out[i].Reason = false, "the client has no active consent"
		case !consent.Allows(p.Name):
			out[i].Allow, out[i].Reason = false, "the client's active consent has no share grant for this target"
		}
	}
	return out, nil
}

// allowed returns the names of the allowed targets.
func allowed(ds []targetDecision) []string {
	var out []string
	for _, d := range ds {
		if d.Allow {
			out = append(out, d.Policy.Name)
		}
	}
	return out
}

// latestConsent returns the client's latest active Consent: of the latest
// versions of the client's Consent records (with rec in place of its stored
// version when rec is a Consent), the active one signed last. A consent
// revoked by a new version no longer counts. nil when there is none.
func (s *server) latestConsent(ctx context.Context, tenant string, rec kap.Record) (*kap.Consent, error) {
	client := rec.RecordClientID()
	var best *kap.Consent
	consider := func(c *kap.Consent) {
		if c.Status == "active" && (best == nil || c.SignedAt.Time.After(best.SignedAt.Time)) {
			best = c
		}
	}
	incoming, _ := rec.(*kap.Consent)
	q := kap.ListQuery{Limit: 1000, Kinds: []string{string(kap.KindConsent)}}
	for {
		recs, next, err := s.cfg.Store.Records().ListByClient(ctx, tenant, client, q)
		if err != nil {
			return nil, err
		}
		for _, sr := range recs {
			if sr.Kind != string(kap.KindConsent) || incoming != nil && sr.ID == incoming.ID {
				continue
			}
			r, err := kap.DecodeRecord(sr.Record)
			if err != nil {
				continue // a stored record that no longer decodes grants nothing
			}
			if c, ok := r.(*kap.Consent); ok {
				consider(c)
			}
		}
		if next == "" {
			break
		}
		q.Cursor = next
	}
	if incoming != nil {
		consider(incoming)
	}
	return best, nil
}

// targetNames returns the policies' names (for reports).
func targetNames(ps []TargetPolicy) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		if !slices.Contains(out, p.Name) {
			out = append(out, p.Name)
		}
	}
	return out
}

// TargetPolicies returns Config.TenantTargets from the loaded configuration:
// each tenant's targets (config.Tenant.Targets) with the target's
// RequireConsent, which defaults to true for FHIR targets (EHRs and payers)
// and false for NDJSON folders.
func TargetPolicies(cfg config.Config) map[string][]TargetPolicy {
	byName := map[string]config.Target{}
	for _, t := range cfg.Targets {
		byName[t.Name] = t
	}
	out := map[string][]TargetPolicy{}
	for _, ten := range cfg.Tenants {
		ps := []TargetPolicy{}
		for _, name := range ten.Targets {
			t := byName[name]
			rc := t.Type == "fhir"
			if t.RequireConsent != nil {
				rc = *t.RequireConsent
			}
			ps = append(ps, TargetPolicy{Name: name, RequireConsent: rc})
		}
		out[ten.Name] = ps
	}
	return out
}

// allowsTypes checks, for the records pseudo-collection (which the
// per-route scope check does not know), that the credential has perms on
// each of types; it answers 403 like authorize when not.
func (s *server) allowsTypes(c *gin.Context, types []string, perms config.Perm) bool {
	p, _ := c.Value(ctxPrincipal).(*principal)
	if p == nil {
		return true
	}
	var missing []string
	for _, t := range types {
		if !p.Scopes.Allows(t, perms) {
			missing = append(missing, config.Scope{Context: "system", Type: t, Perms: perms}.String())
		}
	}
	if len(missing) == 0 {
		return true
	}
	s.fail(c, &kap.Error{Code: kap.EFORBIDDEN, Message: "insufficient-scope: the credential lacks " + strings.Join(missing, " ")})
	return false
}
