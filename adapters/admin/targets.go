package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/internal/synth"
	"github.com/kapbridge/kap/mapping"
)

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// safeErr is an error's text without URLs' query strings (a search by
// identifier carries PHI in its query).
func safeErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		if perr == nil {
			u.RawQuery, u.User = "", nil
			return ue.Op + " " + u.String() + ": " + ue.Err.Error()
		}
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

func (c *Console) transport(t config.Target) (http.RoundTripper, error) {
	if c.cfg.Transport != nil {
		return c.cfg.Transport(t)
	}
	return targetauth.New(t.Auth, targetauth.Options{Cache: c.cfg.Store.Cache(), Target: t.Name, Logger: c.log,
		Getenv: c.cfg.Getenv})
}

// maskedTarget is a target's configuration as loaded, with what could be a
// secret masked: environment variables are named with whether they are set,
// never their values; URLs lose user info and query.
type maskedTarget struct {
	Name, Type, Kind string
	BaseURL, Dir     string
	Profile          string
	Auth             []kv
	Timeouts         string
	MaxAttempts      int
	Concurrency      int
	RequireConsent   string
}

type kv struct{ K, V string }

func cleanURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

func (c *Console) envState(name string) string {
	get := c.cfg.Getenv
	if get == nil {
		get = os.Getenv
	}
	if get(name) != "" {
		return name + " (set, value hidden)"
	}
	return name + " (NOT SET)"
}

func (c *Console) mask(t config.Target) maskedTarget {
	m := maskedTarget{Name: t.Name, Type: t.Type, Kind: t.Kind, Dir: t.Dir, Profile: t.Profile,
		MaxAttempts: t.MaxAttempts, Concurrency: t.Concurrency}
	if t.BaseURL != "" {
		m.BaseURL = cleanURL(t.BaseURL)
	}
	if t.Type == "fhir" && m.Profile == "" {
		m.Profile = "generic"
	}
	m.Timeouts = fmt.Sprintf("attempt %s, total %s", orDefault(time.Duration(t.AttemptTimeout)), orDefault(time.Duration(t.TotalTimeout)))
	switch {
	case t.RequireConsent == nil:
		m.RequireConsent = "default"
	case *t.RequireConsent:
		m.RequireConsent = "yes"
	default:
		m.RequireConsent = "no"
	}
	a := t.Auth
	add := func(k, v string) {
		if v != "" {
			m.Auth = append(m.Auth, kv{k, v})
		}
	}
	typ := a.Type
	if typ == "" {
		typ = "none"
	}
	add("type", typ)
	if a.TokenURL != "" {
		add("tokenUrl", cleanURL(a.TokenURL))
	}
	add("clientId", a.ClientID)
	add("scope", a.Scope)
	if a.SecretEnv != "" {
		add("secretEnv", c.envState(a.SecretEnv))
	}
	if a.TokenEnv != "" {
		add("tokenEnv", c.envState(a.TokenEnv))
	}
	add("keyFile", a.KeyFile)
	add("keyId", a.KeyID)
	add("alg", a.Alg)
	add("certFile", a.CertFile)
	add("certKeyFile", a.CertKeyFile)
	add("caFile", a.CAFile)
	return m
}

func orDefault(d time.Duration) string {
	if d <= 0 {
		return "default"
	}
	return d.String()
}

type profileView struct {
	Name, Title, Note string
	Rules             []ruleView
	Err               string
}

type ruleView struct{ Type, Interactions, Action string }

func loadProfile(t config.Target) (*ehr.Profile, error) {
	if strings.ContainsAny(t.Profile, `/\.`) {
		b, err := os.ReadFile(t.Profile)
		if err != nil {
			return nil, fmt.Errorf("profile file: %s", filepath.Base(t.Profile))
		}
		return ehr.ParseProfile(b)
	}
	return ehr.LoadProfile(t.Profile)
}

type targetView struct {
	Config    maskedTarget
	Profile   *profileView
	Preflight []ehr.Finding
	PreErr    string
	Test      *testResult
}

func (c *Console) targetViews(s *session) []targetView {
	var out []targetView
	var bundle []byte
	var berr error
	for _, t := range c.targetsOf(s.Tenant) {
		v := targetView{Config: c.mask(t)}
		if t.Type == "fhir" {
			pv := &profileView{}
			p, err := loadProfile(t)
			if err != nil {
				pv.Err = kap.ErrorMessage(err)
			} else {
				pv.Name, pv.Title, pv.Note = p.Name, p.Title, p.Note
				for _, r := range p.Resources {
					pv.Rules = append(pv.Rules, ruleView{Type: r.Type, Interactions: strings.Join(r.Interactions, ", "), Action: r.Otherwise})
				}
				if bundle == nil && berr == nil {
					bundle, berr = c.sampleBundle(s.Tenant)
				}
				if berr != nil {
					v.PreErr = kap.ErrorMessage(berr)
				} else {
					v.Preflight = ehr.Preflight(p, bundle)
				}
			}
			v.Profile = pv
		}
		out = append(out, v)
	}
	return out
}

// sampleBundle maps a synthetic dosing session (no real patient) for the
// preflight.
func (c *Console) sampleBundle(tenant string) ([]byte, error) {
	recs, err := synth.Generate(synth.Options{Clients: 4, Seed: 7})
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.RecordKind() == kap.KindDosingSession {
			return c.mapper(tenant).MapJSON(r, mapping.MapInput{Version: 1, Recorded: c.cfg.Now()})
		}
	}
	return nil, kap.Errorf(kap.EINTERNAL, "no sample dosing session")
}

func (c *Console) targets(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, r, http.StatusOK, "targets", s, map[string]any{"Targets": c.targetViews(s)})
}

// testResult is the outcome of a connection test.
type testResult struct {
	Target    string
	OK        bool
	Steps     []kv
	Took      string
	Preflight []ehr.Finding
	tenant    string
}

func (c *Console) testTarget(w http.ResponseWriter, r *http.Request, s *session) {
	t, ok := c.formTarget(w, r, s)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second) // under the API's 30 s request timeout
	defer cancel()
	start := time.Now()
	res := &testResult{Target: t.Name, tenant: s.Tenant}
	switch t.Type {
	case "ndjson":
		res.OK = c.testDir(t, res)
	case "fhir":
		res.OK = c.testFHIR(ctx, t, res)
	default:
		res.Steps = append(res.Steps, kv{"type", "unknown target type"})
	}
	res.Took = time.Since(start).Round(time.Millisecond).String()
	c.audit(r, s, "test-target", map[string]any{"target": t.Name, "ok": res.OK})
	views := c.targetViews(s)
	for i := range views {
		if views[i].Config.Name == t.Name {
			views[i].Test = res
		}
	}
	c.render(w, r, http.StatusOK, "targets", s, map[string]any{"Targets": views})
}

func (c *Console) testDir(t config.Target, res *testResult) bool {
	fi, err := os.Stat(t.Dir)
	if err != nil || !fi.IsDir() {
		res.Steps = append(res.Steps, kv{"folder", plainReason(errText(err, "not a folder"))})
		return false
	}
	f, err := os.CreateTemp(t.Dir, ".kapbridge-admin-test-*")
	if err != nil {
		res.Steps = append(res.Steps, kv{"write", plainReason(errText(err, ""))})
		return false
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	res.Steps = append(res.Steps, kv{"write", "a test file was written and removed"})
	return true
}

func errText(err error, def string) string {
	if err == nil {
		return def
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

func (c *Console) testFHIR(ctx context.Context, t config.Target, res *testResult) bool {
	tr, err := c.transport(t)
	if err != nil {
		res.Steps = append(res.Steps, kv{"auth config", kap.ErrorMessage(err)})
		return false
	}
	if rf, ok := tr.(targetauth.Refresher); ok {
		if err := rf.Refresh(ctx); err != nil {
			res.Steps = append(res.Steps, kv{"token", "not obtained: " + plainReason(err.Error())})
			return false
		}
		res.Steps = append(res.Steps, kv{"token", "obtained from the token endpoint"})
	} else {
		typ := t.Auth.Type
		if typ == "" {
			typ = "none"
		}
		res.Steps = append(res.Steps, kv{"token", "not used (auth " + typ + ")"})
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(t.BaseURL, "/")+"/metadata", nil)
	req.Header.Set("Accept", "application/fhir+json")
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		res.Steps = append(res.Steps, kv{"CapabilityStatement", plainReason(safeErr(err))})
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	took := time.Since(start).Round(time.Millisecond)
	if resp.StatusCode != http.StatusOK {
		res.Steps = append(res.Steps, kv{"CapabilityStatement", plainReason(fmt.Sprintf("HTTP %d", resp.StatusCode))})
		return false
	}
	var cs struct {
		ResourceType string `json:"resourceType"`
		FHIRVersion  string `json:"fhirVersion"`
		Software     struct {
			Name, Version string
		} `json:"software"`
	}
	if json.Unmarshal(body, &cs) != nil || cs.ResourceType != "CapabilityStatement" {
		res.Steps = append(res.Steps, kv{"CapabilityStatement", "the answer is not a CapabilityStatement"})
		return false
	}
	capab, _ := ehr.ParseCapability(body)
	res.Steps = append(res.Steps, kv{"CapabilityStatement", fmt.Sprintf("FHIR %s, %s %s, read in %s", cs.FHIRVersion,
		cs.Software.Name, cs.Software.Version, took)})
	res.Steps = append(res.Steps, kv{"writes", fmt.Sprintf("transaction: %v; %d resource types declared", capab.Transaction, len(capab.Types))})
	if !strings.HasPrefix(cs.FHIRVersion, "4.0") {
		res.Steps = append(res.Steps, kv{"version", "the gateway sends FHIR R4 (4.0.1)"})
		return false
	}
	c.livePreflight(ctx, t, tr, res)
	return true
}

// livePreflight checks the sample Bundle against the profile and the
// capabilities the target just published, and names the write strategy a
// delivery would use (ehr.Sender.Preflight; nothing is written).
func (c *Console) livePreflight(ctx context.Context, t config.Target, tr http.RoundTripper, res *testResult) {
	p, err := loadProfile(t)
	if err != nil {
		res.Steps = append(res.Steps, kv{"preflight", kap.ErrorMessage(err)})
		return
	}
	bundle, err := c.sampleBundle(res.tenant)
	if err != nil {
		res.Steps = append(res.Steps, kv{"preflight", kap.ErrorMessage(err)})
		return
	}
	s, err := ehr.New(ehr.Options{Name: t.Name, BaseURL: t.BaseURL, Profile: p, Transport: tr, Codec: c.cfg.Codec,
		Logger: c.log, Now: c.cfg.Now})
	if err != nil {
		res.Steps = append(res.Steps, kv{"preflight", kap.ErrorMessage(err)})
		return
	}
	fs, err := s.Preflight(ctx, bundle)
	if err != nil {
		res.Steps = append(res.Steps, kv{"preflight", plainReason(safeErr(err))})
		return
	}
	for _, f := range fs {
		if f.Severity == "info" && strings.HasPrefix(f.Reason, "strategy: ") {
			res.Steps = append(res.Steps, kv{"write strategy", strings.TrimPrefix(f.Reason, "strategy: ")})
			continue
		}
		res.Preflight = append(res.Preflight, f)
	}
	res.Steps = append(res.Steps, kv{"preflight", fmt.Sprintf("%d finding(s) for a sample dosing session against the live capabilities", len(res.Preflight))})
}

// --- mapping preview ------------------------------------------------------------

func (c *Console) mappingPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, r, http.StatusOK, "mapping", s, map[string]any{})
}

func (c *Console) mappingPreview(w http.ResponseWriter, r *http.Request, s *session) {
	text := r.PostFormValue("record")
	if f, _, err := r.FormFile("file"); err == nil {
		b, err := io.ReadAll(io.LimitReader(f, kap.MaxRecordBytes+1))
		f.Close()
		if err == nil && len(b) > 0 {
			text = string(b)
		}
	}
	data := map[string]any{"Input": text}
	if strings.TrimSpace(text) == "" {
		data["Issues"] = []kap.Issue{{Path: "record", Reason: "is empty: paste a record or choose a file"}}
		c.render(w, r, http.StatusUnprocessableEntity, "mapping", s, data)
		return
	}
	rec, err := kap.DecodeRecord([]byte(text))
	if err != nil {
		data["Issues"] = issuesOf(err)
		data["Stage"] = "record"
		c.render(w, r, http.StatusUnprocessableEntity, "mapping", s, data)
		return
	}
	bundle, err := c.mapper(s.Tenant).MapJSON(rec, mapping.MapInput{Version: 1, Recorded: c.cfg.Now()})
	if err != nil {
		data["Issues"] = issuesOf(err)
		data["Stage"] = "mapping"
		c.render(w, r, http.StatusUnprocessableEntity, "mapping", s, data)
		return
	}
	var issues []kap.Issue
	if ds, ok := rec.(*kap.DosingSession); ok {
		issues = append(issues, ds.SafetyWarnings()...)
	}
	vi, verr := c.validator.Check(bundle)
	if verr != nil {
		issues = append(issues, issuesOf(verr)...)
	}
	issues = append(issues, vi...)
	data["Bundle"] = indent(bundle)
	data["Issues"] = issues
	data["Stage"] = "bundle"
	data["Entries"] = entriesOf(bundle)
	c.render(w, r, http.StatusOK, "mapping", s, data)
}

func entriesOf(bundle []byte) []kv {
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
			} `json:"resource"`
			Request struct {
				Method, URL string
			} `json:"request"`
		} `json:"entry"`
	}
	json.Unmarshal(bundle, &b)
	var out []kv
	for _, e := range b.Entry {
		out = append(out, kv{e.Resource.ResourceType, e.Request.Method + " " + e.Request.URL})
	}
	return out
}
