package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/internal/delivery"
	"github.com/kapbridge/kap/mapping"
)

// maxList bounds the rows one page reads from the store.
const maxList = 500

func (c *Console) tenantConfig(name string) config.Tenant {
	for _, t := range c.cfg.Config.Tenants {
		if t.Name == name {
			return t
		}
	}
	return config.Tenant{Name: name}
}

// targetsOf returns the configured targets a tenant delivers to: its own
// list, or every target when it names none.
func (c *Console) targetsOf(tenant string) []config.Target {
	names := c.tenantConfig(tenant).Targets
	var out []config.Target
	for _, t := range c.cfg.Config.Targets {
		if len(names) == 0 || slices.Contains(names, t.Name) {
			out = append(out, t)
		}
	}
	return out
}

func (c *Console) target(tenant, name string) (config.Target, bool) {
	for _, t := range c.targetsOf(tenant) {
		if t.Name == name {
			return t, true
		}
	}
	return config.Target{}, false
}

func (c *Console) mapper(tenant string) *mapping.Mapper {
	c.mapperMu.Lock()
	defer c.mapperMu.Unlock()
	m := c.mappers[tenant]
	if m == nil {
		t := c.tenantConfig(tenant)
		m = mapping.New(c.cfg.Codec, mapping.Options{Tenant: tenant, IdentifierBase: t.IdentifierBase,
			ClinicName: t.ClinicName, Now: c.cfg.Now})
		c.mappers[tenant] = m
	}
	return m
}

func (c *Console) health() map[string]delivery.TargetHealth {
	out := map[string]delivery.TargetHealth{}
	if c.cfg.Health == nil {
		return out
	}
	for _, t := range c.cfg.Health.Health().Targets {
		out[t.Name] = t
	}
	return out
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	c.render(w, r, status, "error", s, map[string]any{"Title": "Error", "Message": msg})
}

func (c *Console) storeError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	c.log.Error("admin store call failed", "err", err)
	c.fail(w, r, s, http.StatusServiceUnavailable, "The store did not answer: "+kap.ErrorMessage(err))
}

// --- overview -----------------------------------------------------------------

type targetRow struct {
	Name, Type  string
	Worker      bool
	Health      delivery.TargetHealth
	Depth       int
	Oldest      time.Time
	DeadLetters int
	Unknown     int
	Hour, Day   window
	HourChart   template.HTML
	DayChart    template.HTML
	Failing     bool
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	hs := c.health()
	var rows []targetRow
	for _, t := range c.targetsOf(s.Tenant) {
		st, err := c.cfg.Store.Outbox().Stats(ctx, t.Name)
		if err != nil {
			c.storeError(w, r, s, err)
			return
		}
		dls, err := c.liveDeadLetters(ctx, s.Tenant, t.Name)
		if err != nil {
			c.storeError(w, r, s, err)
			return
		}
		unk, err := c.cfg.Store.Ledger().ListByState(ctx, s.Tenant, t.Name, kap.LedgerUnknown, maxList)
		if err != nil {
			c.storeError(w, r, s, err)
			return
		}
		h, ok := hs[t.Name]
		row := targetRow{Name: t.Name, Type: t.Type, Worker: ok, Health: h, Depth: st.Depth, Oldest: st.Oldest,
			DeadLetters: len(dls), Unknown: len(unk)}
		hour := c.stats.buckets(t.Name, h, 12, 5*time.Minute)
		day := c.stats.buckets(t.Name, h, 24, time.Hour)
		row.Hour, row.Day = sum(hour), sum(day)
		row.HourChart = chart(hour, t.Name+", last hour in 5-minute bars")
		row.DayChart = chart(day, t.Name+", last day in hourly bars")
		row.Failing = ok && (h.Circuit != "closed" || (!h.LastErrorAt.IsZero() && h.LastErrorAt.After(h.LastSuccess)))
		rows = append(rows, row)
	}
	running := c.cfg.Health != nil && c.cfg.Health.Health().Running
	c.render(w, r, http.StatusOK, "overview", s, map[string]any{"Targets": rows, "WorkerRunning": running,
		"HasWorker": c.cfg.Health != nil})
}

// --- deliveries ---------------------------------------------------------------

type searchForm struct {
	Client, From, To, State string
}

type targetState struct {
	Target string
	State  string // queued, in-flight, retrying, dead, delivered, not queued
	Status *kap.MessageStatus
}

type recordRow struct {
	Rec     kap.StoredRecord
	Targets []targetState
}

var searchStates = []string{"", "queued", "in-flight", "retrying", "dead", "discarded", "delivered", "not queued"}

func (c *Console) deliveriesPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, r, http.StatusOK, "deliveries", s, map[string]any{"Form": searchForm{}, "States": searchStates})
}

// deliveriesSearch is a POST so the client identifier never appears in a
// URL (browser history, proxy and access logs).
func (c *Console) deliveriesSearch(w http.ResponseWriter, r *http.Request, s *session) {
	f := searchForm{Client: strings.TrimSpace(r.PostFormValue("client")), From: r.PostFormValue("from"),
		To: r.PostFormValue("to"), State: r.PostFormValue("state")}
	data := map[string]any{"Form": f, "States": searchStates, "Searched": true}
	var errs []kap.Issue
	if f.Client == "" {
		errs = append(errs, kap.Issue{Path: "client", Reason: "is required: the clinic's client identifier"})
	} else if err := kap.ValidateID("client", f.Client); err != nil {
		errs = append(errs, kap.Issue{Path: "client", Reason: "is not a valid identifier"})
	}
	var q kap.ListQuery
	parse := func(field, v string, end bool) time.Time {
		if v == "" {
			return time.Time{}
		}
		t, err := time.Parse("2006-01-02", v)
		if err != nil {
			errs = append(errs, kap.Issue{Path: field, Reason: "must be a date (YYYY-MM-DD)"})
			return time.Time{}
		}
		if end {
			t = t.Add(24*time.Hour - time.Nanosecond)
		}
		return t
	}
	q.From, q.To = parse("from", f.From, false), parse("to", f.To, true)
	if !slices.Contains(searchStates, f.State) {
		errs = append(errs, kap.Issue{Path: "state", Reason: "is not a known state"})
	}
	if len(errs) > 0 {
		data["Issues"] = errs
		c.render(w, r, http.StatusUnprocessableEntity, "deliveries", s, data)
		return
	}
	q.Limit = 200
	ctx := r.Context()
	recs, _, err := c.cfg.Store.Records().ListByClient(ctx, s.Tenant, f.Client, q)
	if err != nil {
		c.storeError(w, r, s, err)
		return
	}
	var rows []recordRow
	for _, rec := range recs {
		row := recordRow{Rec: rec}
		match := f.State == ""
		for _, t := range c.targetsOf(s.Tenant) {
			ts := c.stateOf(ctx, s.Tenant, t.Name, rec)
			row.Targets = append(row.Targets, ts)
			if ts.State == f.State {
				match = true
			}
		}
		if match {
			rows = append(rows, row)
		}
	}
	data["Rows"] = rows
	c.audit(r, s, "search-deliveries", map[string]any{"client": f.Client, "results": len(rows)})
	c.render(w, r, http.StatusOK, "deliveries", s, data)
}

// stateOf is where the record's latest version is for one target: in the
// outbox, or gone from it (delivered when the ledger confirms a resource).
func (c *Console) stateOf(ctx context.Context, tenant, target string, rec kap.StoredRecord) targetState {
	id := kap.MessageFor(rec, target, time.Time{}).ID
	st, err := c.cfg.Store.Outbox().Status(ctx, tenant, target, id)
	if err == nil {
		state := string(st.State)
		if st.State == kap.MessageDead {
			if _, derr := c.cfg.Store.Cache().Get(ctx, discardKey(tenant, target, id)); derr == nil {
				state = "discarded"
			}
		}
		return targetState{Target: target, State: state, Status: &st}
	}
	if kap.ErrorCode(err) != kap.ENOTFOUND {
		return targetState{Target: target, State: "unknown (the store did not answer)"}
	}
	if _, derr := c.cfg.Store.Cache().Get(ctx, discardKey(tenant, target, id)); derr == nil {
		return targetState{Target: target, State: "discarded"} // Outbox.Discard removed it
	}
	for _, ref := range rec.Resources {
		e, err := c.cfg.Store.Ledger().Get(ctx, kap.LedgerKey{Tenant: tenant, Target: target, ResourceType: ref.Type,
			Identifier: ref.System + "|" + ref.Value})
		if err == nil && e.State == kap.LedgerConfirmed {
			return targetState{Target: target, State: "delivered"}
		}
	}
	if t, ok := c.target(tenant, target); ok && t.Type == "ndjson" {
		return targetState{Target: target, State: "delivered"} // file targets keep no ledger
	}
	return targetState{Target: target, State: "not queued"}
}

type attemptView struct {
	kap.Attempt
	N       int
	After   string // time since the previous attempt (or the enqueue)
	Outcome string // the OperationOutcome, indented
	Words   string
}

type traceTarget struct {
	targetState
	Attempts []attemptView
	Ledger   []kap.LedgerEntry
	Reason   string
	// LedgerSummary counts the ledger entries by state: "68 confirmed, 2 unknown".
	LedgerSummary string
}

func (c *Console) trace(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	kind, id := r.PathValue("kind"), r.PathValue("id")
	if kap.ValidateRecordKey(s.Tenant, kind, id) != nil {
		c.fail(w, r, s, http.StatusNotFound, "There is no such record.")
		return
	}
	rec, err := c.cfg.Store.Records().Get(ctx, s.Tenant, kind, id)
	if kap.ErrorCode(err) == kap.ENOTFOUND {
		c.fail(w, r, s, http.StatusNotFound, "There is no such record.")
		return
	} else if err != nil {
		c.storeError(w, r, s, err)
		return
	}
	hist, _ := c.cfg.Store.Records().History(ctx, s.Tenant, kind, id)
	var recIssues, bundleIssues []kap.Issue
	if dec, err := kap.DecodeRecord(rec.Record); err != nil {
		recIssues = issuesOf(err)
	} else if ds, ok := dec.(*kap.DosingSession); ok {
		recIssues = ds.SafetyWarnings()
	}
	if len(rec.Bundle) > 0 {
		is, err := c.validator.Check(rec.Bundle)
		if err != nil {
			bundleIssues = issuesOf(err)
		}
		bundleIssues = append(bundleIssues, is...)
	}
	var tts []traceTarget
	for _, t := range c.targetsOf(s.Tenant) {
		tt := traceTarget{targetState: c.stateOf(ctx, s.Tenant, t.Name, rec)}
		if st := tt.Status; st != nil {
			prev := st.EnqueuedAt
			for i, a := range st.Attempts {
				av := attemptView{Attempt: a, N: i + 1, Outcome: indent(a.OperationOutcome), Words: plainReason(a.Error)}
				if !prev.IsZero() {
					av.After = a.At.Sub(prev).Round(time.Millisecond).String()
				}
				prev = a.At
				tt.Attempts = append(tt.Attempts, av)
			}
			tt.Reason = plainReason(st.Reason)
		}
		for _, ref := range rec.Resources {
			e, err := c.cfg.Store.Ledger().Get(ctx, kap.LedgerKey{Tenant: s.Tenant, Target: t.Name, ResourceType: ref.Type,
				Identifier: ref.System + "|" + ref.Value})
			if err == nil {
				tt.Ledger = append(tt.Ledger, e)
			}
		}
		tt.LedgerSummary = ledgerSummary(tt.Ledger)
		if tt.Status == nil && tt.State == "delivered" {
			tt.Reason = ""
		}
		tts = append(tts, tt)
	}
	c.audit(r, s, "view-record", map[string]any{"kind": kind, "id": id})
	c.render(w, r, http.StatusOK, "trace", s, map[string]any{"Rec": rec, "History": hist, "Record": indent(rec.Record),
		"Bundle": indent(rec.Bundle), "RecordIssues": recIssues, "BundleIssues": bundleIssues, "Targets": tts})
}

func ledgerSummary(es []kap.LedgerEntry) string {
	n := map[kap.LedgerState]int{}
	for _, e := range es {
		n[e.State]++
	}
	var parts []string
	for _, st := range []kap.LedgerState{kap.LedgerConfirmed, kap.LedgerSent, kap.LedgerUnknown, kap.LedgerFailed} {
		if n[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[st], st))
		}
	}
	return strings.Join(parts, ", ")
}

func issuesOf(err error) []kap.Issue {
	var ke *kap.Error
	if errors.As(err, &ke) && len(ke.Issues) > 0 {
		return ke.Issues
	}
	return []kap.Issue{{Path: "", Reason: kap.ErrorMessage(err)}}
}

func indent(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return string(b)
	}
	return out.String()
}

// --- dead letters ---------------------------------------------------------------

// discardKey marks a dead letter discarded: Outbox.Discard removes it from
// the store, and the marker lets the deliveries search say "discarded"
// (markers written before Outbox.Discard existed still hide the dead letter
// from the console and retry-all); the audit trail keeps who, when and why.
func discardKey(tenant, target, id string) string {
	return "admin:discard:" + tenant + ":" + target + ":" + id
}

const discardTTL = 10 * 365 * 24 * time.Hour

// liveDeadLetters returns a tenant's dead letters of target that were not
// discarded.
func (c *Console) liveDeadLetters(ctx context.Context, tenant, target string) ([]kap.DeadLetter, error) {
	dls, err := c.cfg.Store.Outbox().DeadLetters(ctx, tenant, target, maxList)
	if err != nil {
		return nil, err
	}
	out := dls[:0]
	for _, d := range dls {
		if _, err := c.cfg.Store.Cache().Get(ctx, discardKey(tenant, target, d.Message.ID)); err == nil {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

type deadRow struct {
	kap.DeadLetter
	Words      string
	LastStatus int
}

type deadGroup struct {
	Target string
	Rows   []deadRow
}

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request, s *session) {
	var groups []deadGroup
	for _, t := range c.targetsOf(s.Tenant) {
		dls, err := c.liveDeadLetters(r.Context(), s.Tenant, t.Name)
		if err != nil {
			c.storeError(w, r, s, err)
			return
		}
		g := deadGroup{Target: t.Name}
		for _, d := range dls {
			row := deadRow{DeadLetter: d, Words: plainReason(d.Reason)}
			if n := len(d.Message.Attempts); n > 0 {
				row.LastStatus = d.Message.Attempts[n-1].Status
			}
			g.Rows = append(g.Rows, row)
		}
		groups = append(groups, g)
	}
	c.render(w, r, http.StatusOK, "deadletters", s, map[string]any{"Groups": groups})
}

func (c *Console) formTarget(w http.ResponseWriter, r *http.Request, s *session) (config.Target, bool) {
	t, ok := c.target(s.Tenant, r.PostFormValue("target"))
	if !ok {
		c.fail(w, r, s, http.StatusUnprocessableEntity, "target: not a target of this tenant")
	}
	return t, ok
}

func (c *Console) retryOne(w http.ResponseWriter, r *http.Request, s *session) {
	t, ok := c.formTarget(w, r, s)
	if !ok {
		return
	}
	id := r.PostFormValue("id")
	err := c.cfg.Store.Outbox().Replay(r.Context(), s.Tenant, t.Name, id)
	if kap.ErrorCode(err) == kap.ENOTFOUND {
		c.fail(w, r, s, http.StatusNotFound, "There is no such dead letter (it may have been retried already).")
		return
	} else if err != nil {
		c.storeError(w, r, s, err)
		return
	}
	c.audit(r, s, "replay", map[string]any{"target": t.Name, "message": id})
	if c.cfg.Wake != nil {
		c.cfg.Wake()
	}
	http.Redirect(w, r, Prefix+"/dead-letters?done=retried", http.StatusSeeOther)
}

func (c *Console) discard(w http.ResponseWriter, r *http.Request, s *session) {
	t, ok := c.formTarget(w, r, s)
	if !ok {
		return
	}
	id := r.PostFormValue("id")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" || len(reason) > 500 {
		c.fail(w, r, s, http.StatusUnprocessableEntity, "reason: is required (at most 500 characters): say why this record is not delivered")
		return
	}
	err := c.cfg.Store.Outbox().Discard(r.Context(), s.Tenant, t.Name, id, reason)
	if kap.ErrorCode(err) == kap.ENOTFOUND || kap.ErrorCode(err) == kap.EINVALID {
		c.fail(w, r, s, http.StatusNotFound, "There is no such dead letter.")
		return
	} else if err != nil {
		c.storeError(w, r, s, err)
		return
	}
	c.audit(r, s, "discard", map[string]any{"target": t.Name, "message": id, "reason": reason})
	mark, _ := json.Marshal(map[string]any{"at": c.cfg.Now().UTC(), "key": s.KeyName})
	if err := c.cfg.Store.Cache().Set(r.Context(), discardKey(s.Tenant, t.Name, id), mark, discardTTL); err != nil {
		// The dead letter is gone; only the "discarded" label of the
		// deliveries search is missing.
		c.log.Warn("admin discard marker not written", "tenant", s.Tenant, "target", t.Name, "err", err)
	}
	c.log.Info("admin discarded a dead letter", "tenant", s.Tenant, "target", t.Name)
	http.Redirect(w, r, Prefix+"/dead-letters?done=discarded", http.StatusSeeOther)
}

func (c *Console) retryAll(w http.ResponseWriter, r *http.Request, s *session) {
	t, ok := c.formTarget(w, r, s)
	if !ok {
		return
	}
	dls, err := c.liveDeadLetters(r.Context(), s.Tenant, t.Name)
	if err != nil {
		c.storeError(w, r, s, err)
		return
	}
	ids := make([]string, len(dls))
	for i, d := range dls {
		ids[i] = d.Message.ID
	}
	j := c.jobs.start(s.Tenant, t.Name, len(ids))
	c.audit(r, s, "replay-all", map[string]any{"target": t.Name, "count": len(ids), "job": j.ID})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		for i, id := range ids {
			err := c.cfg.Store.Outbox().Replay(ctx, s.Tenant, t.Name, id)
			if err != nil && kap.ErrorCode(err) != kap.ENOTFOUND {
				c.jobs.fail(j, kap.ErrorMessage(err))
				return
			}
			c.jobs.progress(j, i+1)
			if c.cfg.Wake != nil && (i%50 == 49 || i == len(ids)-1) {
				c.cfg.Wake()
			}
		}
		c.jobs.finish(j)
	}()
	http.Redirect(w, r, Prefix+"/jobs/"+j.ID, http.StatusSeeOther)
}

func (c *Console) jobPage(w http.ResponseWriter, r *http.Request, s *session) {
	j, ok := c.jobs.get(s.Tenant, r.PathValue("id"))
	if !ok {
		c.fail(w, r, s, http.StatusNotFound, "There is no such job.")
		return
	}
	c.render(w, r, http.StatusOK, "job", s, map[string]any{"Job": j})
}

func (c *Console) jobStatus(w http.ResponseWriter, r *http.Request, s *session) {
	j, ok := c.jobs.get(s.Tenant, r.PathValue("id"))
	if !ok {
		http.Error(w, `{"error":"no such job"}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(j)
}

// --- unknown outcomes --------------------------------------------------------------

type unknownGroup struct {
	Target   string
	Type     string
	Entries  []kap.LedgerEntry
	Readable bool
}

func (c *Console) unknown(w http.ResponseWriter, r *http.Request, s *session) {
	var groups []unknownGroup
	for _, t := range c.targetsOf(s.Tenant) {
		es, err := c.cfg.Store.Ledger().ListByState(r.Context(), s.Tenant, t.Name, kap.LedgerUnknown, maxList)
		if err != nil {
			c.storeError(w, r, s, err)
			return
		}
		groups = append(groups, unknownGroup{Target: t.Name, Type: t.Type, Entries: es, Readable: t.Type == "fhir"})
	}
	c.render(w, r, http.StatusOK, "unknown", s, map[string]any{"Groups": groups})
}

// resolve reads the target (search by the business identifier) and writes
// what it found to the ledger: confirmed with the target's id and version,
// or failed (not there) so that the next delivery writes it.
func (c *Console) resolve(w http.ResponseWriter, r *http.Request, s *session) {
	t, ok := c.formTarget(w, r, s)
	if !ok {
		return
	}
	key := kap.LedgerKey{Tenant: s.Tenant, Target: t.Name, ResourceType: r.PostFormValue("resourceType"),
		Identifier: r.PostFormValue("identifier")}
	e, err := c.cfg.Store.Ledger().Get(r.Context(), key)
	if err != nil || e.State != kap.LedgerUnknown {
		c.fail(w, r, s, http.StatusNotFound, "There is no unknown outcome for this resource (it may be resolved already).")
		return
	}
	if t.Type != "fhir" {
		c.fail(w, r, s, http.StatusUnprocessableEntity, "Only FHIR targets can be read back.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second) // under the API's 30 s request timeout
	defer cancel()
	ids, err := c.searchTarget(ctx, t, key.ResourceType, key.Identifier)
	if err != nil {
		c.fail(w, r, s, http.StatusBadGateway, "The target could not be read: "+err.Error())
		return
	}
	done := "resolved"
	switch len(ids) {
	case 0:
		e.State, e.LastError = kap.LedgerFailed, "not at the target (read back by the admin console)"
		done = "notfound"
	case 1:
		e.State, e.TargetID, e.VersionID, e.LastError = kap.LedgerConfirmed, ids[0].ID, ids[0].Version, ""
	default:
		c.fail(w, r, s, http.StatusConflict, fmt.Sprintf("The target holds %d resources with this identifier; merge them at the target first.", len(ids)))
		return
	}
	if err := c.cfg.Store.Ledger().Put(r.Context(), e); err != nil {
		c.storeError(w, r, s, err)
		return
	}
	c.audit(r, s, "resolve", map[string]any{"target": t.Name, "resourceType": key.ResourceType, "state": string(e.State)})
	http.Redirect(w, r, Prefix+"/unknown?done="+done, http.StatusSeeOther)
}

type foundID struct{ ID, Version string }

func (c *Console) searchTarget(ctx context.Context, t config.Target, typ, identifier string) ([]foundID, error) {
	if kap.ValidateName("resourceType", typ) != nil {
		return nil, errors.New("bad resource type")
	}
	tr, err := c.transport(t)
	if err != nil {
		return nil, err
	}
	u := strings.TrimRight(t.BaseURL, "/") + "/" + typ + "?identifier=" + urlQueryEscape(identifier)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, errors.New(safeErr(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var b struct {
		Entry []struct {
			Resource struct {
				ID   string `json:"id"`
				Meta struct {
					VersionID string `json:"versionId"`
				} `json:"meta"`
			} `json:"resource"`
			Search struct {
				Mode string `json:"mode"`
			} `json:"search"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, errors.New("the answer is not a FHIR Bundle")
	}
	var out []foundID
	for _, e := range b.Entry {
		if e.Search.Mode == "" || e.Search.Mode == "match" {
			out = append(out, foundID{e.Resource.ID, e.Resource.Meta.VersionID})
		}
	}
	return out, nil
}
