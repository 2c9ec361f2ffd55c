// Package ehr is the FHIR R4 delivery target for EHRs: a kap.Sender that
// writes the transaction Bundle mapped from a record to an EHR's FHIR
// endpoint.
//
// It discovers the target's capabilities (GET [base]/metadata, cached) and
// picks the strongest write strategy both the target and its vendor write
// profile allow:
//
//  1. transaction: one transaction Bundle of conditional PUTs per record;
//  2. conditional update: PUT Type?identifier=system|value per resource;
//  3. conditional create: POST with If-None-Exist, then PUT Type/id;
//  4. search: GET Type?identifier=..., then POST or PUT Type/id with If-Match.
//
// For the per-resource strategies the references between entries (urn:uuid)
// are rewritten to the ids the target assigned, referenced resources first,
// and conditional references to resources of earlier records
// (Patient?identifier=...) are resolved from the ledger or by a search.
// The vendor profile (profiles/*.json) says which types and interactions the
// EHR accepts; the rest is summarised in a fallback DocumentReference or
// listed in SendResult.NotSent.
package ehr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpclient"
	"github.com/kapbridge/kap/fhir"
)

// Options configure a Sender.
type Options struct {
	// Name is the target's configured name (kap.ValidateName).
	Name string
	// BaseURL is the FHIR base, e.g. https://ehr.example/fhir/R4.
	BaseURL string
	// Profile is the vendor write profile; when nil, ProfileName names an
	// embedded one ("generic" when empty).
	Profile     *Profile
	ProfileName string
	// Transport carries requests; auth plugs in here (a transport that
	// implements httpclient.Refresher is asked to refresh once on 401).
	Transport http.RoundTripper
	// Codec is the shared FHIR codec; it validates the fallback note and
	// the Provenance the adapter builds. Optional.
	Codec *fhir.Codec
	// Ledger gives the target ids of earlier deliveries and the writes
	// whose outcome is unknown. Optional (without it every Send searches).
	Ledger kap.Ledger
	// Cache keeps the target's capabilities for CapabilityTTL (default
	// 1h). Optional (an in-process cache is used).
	Cache         kap.Cache
	CapabilityTTL time.Duration
	Now           func() time.Time
	Logger        *slog.Logger
	// AttemptTimeout and TotalTimeout bound one HTTP attempt and one
	// request with its retries (httpclient defaults when zero).
	AttemptTimeout time.Duration
	TotalTimeout   time.Duration
	// HTTP tunes the retrying client further (retries, backoff, MaxWait).
	// Transport, Logger, Name, Now and the timeouts above override it.
	HTTP httpclient.Options
}

// Sender delivers records to one FHIR R4 target. Safe for concurrent use.
type Sender struct {
	name    string
	base    string
	profile *Profile
	client  *httpclient.Client
	codec   *fhir.Codec
	ledger  kap.Ledger
	cache   kap.Cache
	capTTL  time.Duration
	now     func() time.Time
	log     *slog.Logger
	mem     memCache
}

var _ kap.Sender = (*Sender)(nil)

// New returns the Sender of one target. Returns EINVALID for a bad name,
// base URL or profile, ENOTFOUND for an unknown profile name.
func New(o Options) (*Sender, error) {
	if err := kap.ValidateName("target name", o.Name); err != nil {
		return nil, err
	}
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, kap.Errorf(kap.EINVALID, "target %s: base URL must be an absolute http(s) URL without a query", o.Name)
	}
	p := o.Profile
	if p == nil {
		if p, err = LoadProfile(o.ProfileName); err != nil {
			return nil, err
		}
	} else if err := p.Validate(); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errNoProfile
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CapabilityTTL <= 0 {
		o.CapabilityTTL = time.Hour
	}
	ho := o.HTTP
	ho.Name, ho.Transport, ho.Logger, ho.Now = o.Name, o.Transport, o.Logger, o.Now
	if o.AttemptTimeout > 0 {
		ho.AttemptTimeout = o.AttemptTimeout
	}
	if o.TotalTimeout > 0 {
		ho.TotalTimeout = o.TotalTimeout
	}
	return &Sender{
		name:    o.Name,
		base:    strings.TrimRight(o.BaseURL, "/"),
		profile: p,
		client:  httpclient.New(ho),
		codec:   o.Codec,
		ledger:  o.Ledger,
		cache:   o.Cache,
		capTTL:  o.CapabilityTTL,
		now:     o.Now,
		log:     o.Logger,
	}, nil
}

// Target returns the configured name.
func (s *Sender) Target() string { return s.name }

// Profile returns the write profile in use.
func (s *Sender) Profile() *Profile { return s.profile }

// Strategy names, as logged and returned by Strategy.
const (
	StrategyTransaction       = "transaction"
	StrategyConditionalUpdate = "conditional-update"
	StrategyConditionalCreate = "conditional-create"
	StrategySearch            = "search"
)

// Strategy returns the strategy the Sender uses for a resource type with the
// target's current capabilities (discovering them if needed).
func (s *Sender) Strategy(ctx context.Context, resourceType string) (string, error) {
	c, err := s.capability(ctx)
	if err != nil {
		return "", err
	}
	if s.useTransaction(c, []*entry{{Type: resourceType}}) {
		return StrategyTransaction, nil
	}
	return s.perResource(c, resourceType), nil
}

func (s *Sender) useTransaction(c Capability, es []*entry) bool {
	if !c.Known || !c.Transaction || !s.profile.Writes.Transaction.Allowed || !s.profile.Writes.ConditionalUpdate.Allowed {
		return false
	}
	for _, e := range es {
		if !c.Types[e.Type].ConditionalUpdate {
			return false
		}
	}
	return true
}

func (s *Sender) perResource(c Capability, typ string) string {
	t := c.Types[typ]
	r := s.profile.Rule(typ)
	if c.Known && t.ConditionalUpdate && s.profile.Writes.ConditionalUpdate.Allowed && r.Accepts("create") && r.Accepts("update") {
		return StrategyConditionalUpdate
	}
	if c.Known && t.ConditionalCreate && s.profile.Writes.ConditionalCreate.Allowed {
		return StrategyConditionalCreate
	}
	return StrategySearch
}

// sendState is one Send in progress.
type sendState struct {
	msg      kap.OutboxMessage
	known    map[*entry]idVersion // target ids known before writing
	assigned map[string]string    // fullUrl -> "Type/id"
	resolved map[string]string    // conditional reference -> "Type/id" ("" if none)
	done     []kap.LedgerEntry
	notSent  []kap.NotSent
	status   int
}

type idVersion struct{ ID, Version string }

// Send delivers the record version msg carries. See kap.Sender.
func (s *Sender) Send(ctx context.Context, msg kap.OutboxMessage) (kap.SendResult, error) {
	if len(msg.Bundle) == 0 {
		return kap.SendResult{}, permanent(0, "the message carries no Bundle", nil)
	}
	es, err := parseBundle(msg.Bundle)
	if err != nil {
		return kap.SendResult{}, permanent(0, kap.ErrorMessage(err), nil)
	}
	c, err := s.capability(ctx)
	if err != nil {
		return kap.SendResult{}, err
	}
	pl := makePlan(s.profile, es, c.filter())
	if pl.Fallback != nil && s.codec != nil {
		if err := s.validateNote(pl.Fallback); err != nil {
			return kap.SendResult{}, err
		}
	}
	st := &sendState{msg: msg, known: map[*entry]idVersion{}, assigned: map[string]string{}, resolved: map[string]string{}, notSent: pl.NotSent}
	if err := s.prepare(ctx, st, pl.Send); err != nil {
		return kap.SendResult{}, s.fail(st, err)
	}
	if len(pl.Send) == 0 {
		return kap.SendResult{NotSent: st.notSent}, nil
	}
	if s.useTransaction(c, pl.Send) {
		s.log.DebugContext(ctx, "delivering", "target", s.name, "strategy", StrategyTransaction, "resources", len(pl.Send), "notSent", len(st.notSent))
		err = s.sendTransaction(ctx, st, pl.Send)
	} else {
		s.log.DebugContext(ctx, "delivering", "target", s.name, "strategy", "per-resource", "resources", len(pl.Send), "notSent", len(st.notSent))
		for _, e := range pl.Send {
			if err = s.writeOne(ctx, st, e, s.perResource(c, e.Type)); err != nil {
				break
			}
		}
	}
	if err != nil {
		return kap.SendResult{}, s.fail(st, err)
	}
	return kap.SendResult{Resources: st.done, NotSent: st.notSent, Status: st.status}, nil
}

// validateNote checks the fallback note the adapter built with the codec.
func (s *Sender) validateNote(e *entry) error {
	b, err := json.Marshal(e.Resource)
	if err == nil {
		_, err = s.codec.Unmarshal(b)
	}
	if err != nil {
		return permanent(0, "the fallback DocumentReference is not valid FHIR R4: "+kap.ErrorMessage(err), nil)
	}
	return nil
}

// fail completes a SendError with what was written before it.
func (s *Sender) fail(st *sendState, err error) error {
	se := kap.SendErrorOf(err)
	se.Resources = append(append([]kap.LedgerEntry(nil), st.done...), se.Resources...)
	return se
}

// prepare reads the ledger for the resources to write, resolves writes whose
// outcome was unknown by searching the target, and resolves conditional
// references to resources outside the Bundle.
func (s *Sender) prepare(ctx context.Context, st *sendState, es []*entry) error {
	for _, e := range es {
		if s.ledger == nil {
			continue
		}
		le, err := s.ledger.Get(ctx, e.ledgerKey(st.msg.Tenant, s.name))
		if kap.ErrorCode(err) == kap.ENOTFOUND {
			continue
		}
		if err != nil {
			return &kap.SendError{Kind: kap.SendTransient, Err: fmt.Errorf("reading the ledger: %w", err)}
		}
		if le.State == kap.LedgerUnknown || (le.TargetID == "" && le.State == kap.LedgerSent) {
			hits, err := s.search(ctx, e.Type, e.query())
			if err != nil {
				return err
			}
			switch len(hits) {
			case 0:
				// The lost write did not land: write it anew.
			case 1:
				st.known[e] = hits[0]
			default:
				return duplicates(e.Type, len(hits))
			}
			continue
		}
		if le.TargetID != "" {
			st.known[e] = idVersion{le.TargetID, le.VersionID}
		}
	}
	inBundle := map[string]bool{}
	for _, e := range es {
		inBundle[e.FullURL] = true
	}
	var firstErr error
	for _, e := range es {
		walkRefs(e.Resource, func(ref map[string]any) {
			r := ref["reference"].(string)
			if firstErr != nil || inBundle[r] {
				return
			}
			typ, sys, val, ok := fhir.ParseConditionalRef(r)
			if !ok {
				return
			}
			target, seen := st.resolved[r]
			if !seen {
				var err error
				target, err = s.resolveRef(ctx, st, typ, sys, val)
				if err != nil {
					firstErr = err
					return
				}
				st.resolved[r] = target
			}
			if target != "" {
				ref["reference"] = target
				return
			}
			if typ == "Patient" {
				firstErr = &kap.SendError{Kind: kap.SendTransient, Err: errors.New("the record's Patient is not at the target yet (deliver the client record first, or link the patient)")}
				return
			}
			logicalRef(ref, typ, sys, val)
		})
	}
	return firstErr
}

// resolveRef finds the target id of a resource by business identifier: the
// ledger, else a search. "" when the target has none.
func (s *Sender) resolveRef(ctx context.Context, st *sendState, typ, sys, val string) (string, error) {
	if s.ledger != nil {
		le, err := s.ledger.Get(ctx, kap.LedgerKey{Tenant: st.msg.Tenant, Target: s.name, ResourceType: typ, Identifier: sys + "|" + val})
		if err == nil && le.TargetID != "" && le.State == kap.LedgerConfirmed {
			return typ + "/" + le.TargetID, nil
		}
	}
	hits, err := s.search(ctx, typ, url.Values{"identifier": {sys + "|" + val}}.Encode())
	if err != nil {
		return "", err
	}
	switch len(hits) {
	case 0:
		return "", nil
	case 1:
		return typ + "/" + hits[0].ID, nil
	}
	return "", duplicates(typ, len(hits))
}

func duplicates(typ string, n int) error {
	return permanent(0, fmt.Sprintf("%d %s resources at the target carry the same business identifier; resolve the duplicate there", n, typ), nil)
}

// search returns the ids and versions of the resources of typ matching
// query (one page; business identifiers match at most a few).
func (s *Sender) search(ctx context.Context, typ, query string) ([]idVersion, error) {
	resp, err := s.do(ctx, http.MethodGet, typ+"?"+query, nil, nil)
	if err != nil {
		return nil, noAnswer(err, true)
	}
	if resp.Status != http.StatusOK {
		return nil, s.statusError(resp)
	}
	var b struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
				Meta         struct {
					VersionID string `json:"versionId"`
				} `json:"meta"`
			} `json:"resource"`
			Search struct {
				Mode string `json:"mode"`
			} `json:"search"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(resp.Body, &b); err != nil || b.ResourceType != "Bundle" {
		return nil, &kap.SendError{Kind: kap.SendTransient, Status: resp.Status, Err: fmt.Errorf("search of %s answered no searchset Bundle", typ)}
	}
	var out []idVersion
	for _, e := range b.Entry {
		if e.Resource.ResourceType != typ || (e.Search.Mode != "" && e.Search.Mode != "match") {
			continue
		}
		out = append(out, idVersion{e.Resource.ID, e.Resource.Meta.VersionID})
	}
	return out, nil
}

// rewrite replaces the urn:uuid references to entries already written with
// the target's ids.
func (st *sendState) rewrite(res map[string]any) {
	walkRefs(res, func(ref map[string]any) {
		if t, ok := st.assigned[ref["reference"].(string)]; ok {
			ref["reference"] = t
		}
	})
}

// writeOne writes one resource with a per-resource strategy.
func (s *Sender) writeOne(ctx context.Context, st *sendState, e *entry, strategy string) error {
	st.rewrite(e.Resource)
	rule := e.Decision.Rule
	known, haveID := st.known[e]
	if !haveID && strategy == StrategySearch {
		hits, err := s.search(ctx, e.Type, e.query())
		if err != nil {
			return err
		}
		switch len(hits) {
		case 0:
		case 1:
			known, haveID = hits[0], true
		default:
			return duplicates(e.Type, len(hits))
		}
	}
	if haveID && !rule.Accepts("update") && e.Type != "Provenance" {
		// Already there; the target takes no update of this type. It is
		// confirmed (the ledger keeps the target id) with a note, not
		// listed in NotSent (which the worker records as a failed write).
		s.confirm(st, e, known, 0)
		st.done[len(st.done)-1].LastError = fmt.Sprintf("not updated: the target accepts no update of %s; the version written first stays", e.Type)
		return nil
	}

	var resp *httpclient.Response
	var err error
	switch {
	case strategy == StrategyConditionalUpdate && !haveID:
		resp, err = s.write(ctx, http.MethodPut, e.Type+"?"+e.query(), e.Resource, nil)
	case haveID && strategy == StrategySearch && known.Version != "":
		// If-Match: a lost answer or a 409/412 is resolved by a read.
		if resp, err = s.putResolved(ctx, st, e, known); err != nil {
			return err
		}
	case haveID:
		resp, err = s.putByID(ctx, e, known, false)
	case strategy == StrategyConditionalCreate:
		resp, err = s.write(ctx, http.MethodPost, e.Type, e.Resource, http.Header{"If-None-Exist": {e.query()}})
		if err == nil && resp.Status == http.StatusOK && rule.Accepts("update") {
			// It existed: update it in place.
			if iv, ok := writtenID(resp, e.Type); ok {
				resp, err = s.putByID(ctx, e, iv, false)
			}
		}
	default:
		resp, err = s.write(ctx, http.MethodPost, e.Type, e.Resource, nil)
		if err != nil && !httpclient.NotSent(err) {
			if r, ok := s.findCreated(ctx, e); ok {
				resp, err = r, nil
			}
		}
	}
	if err != nil {
		return s.lost(st, e, err)
	}
	switch resp.Status {
	case http.StatusConflict, http.StatusPreconditionFailed:
		// Someone else changed it: re-read, then one more try with If-Match
		// (putResolved: a lost answer to it is resolved by a read, never
		// taken for a refusal).
		hits, serr := s.search(ctx, e.Type, e.query())
		if serr != nil {
			return serr
		}
		if len(hits) != 1 {
			return s.statusError(resp)
		}
		if hits[0].Version == "" {
			resp, err = s.putByID(ctx, e, hits[0], false)
			if err != nil {
				return s.lost(st, e, err)
			}
		} else if resp, err = s.putResolved(ctx, st, e, hits[0]); err != nil {
			return err
		}
	case http.StatusNotFound, http.StatusGone:
		if haveID {
			// The id the ledger had is gone at the target: create anew.
			delete(e.Resource, "id")
			resp, err = s.write(ctx, http.MethodPost, e.Type, e.Resource, nil)
			if err != nil {
				return s.lost(st, e, err)
			}
		}
	}
	st.status = resp.Status
	if resp.Status != http.StatusOK && resp.Status != http.StatusCreated {
		return s.statusError(resp)
	}
	iv, ok := writtenID(resp, e.Type)
	if !ok {
		if haveID {
			iv = idVersion{ID: known.ID}
		} else {
			return &kap.SendError{Kind: kap.SendUnknown, Status: resp.Status, Resources: []kap.LedgerEntry{s.unknown(st, e)},
				Err: fmt.Errorf("the target accepted a %s but named no id", e.Type)}
		}
	}
	s.confirm(st, e, iv, resp.Status)
	return nil
}

func (s *Sender) putByID(ctx context.Context, e *entry, iv idVersion, ifMatch bool) (*httpclient.Response, error) {
	e.Resource["id"] = iv.ID
	var h http.Header
	if ifMatch && iv.Version != "" {
		h = http.Header{"If-Match": {`W/"` + iv.Version + `"`}}
	}
	return s.write(ctx, http.MethodPut, e.Type+"/"+url.PathEscape(iv.ID), e.Resource, h)
}

func (s *Sender) confirm(st *sendState, e *entry, iv idVersion, status int) {
	st.assigned[e.FullURL] = e.Type + "/" + iv.ID
	st.done = append(st.done, kap.LedgerEntry{LedgerKey: e.ledgerKey(st.msg.Tenant, s.name), TargetID: iv.ID, VersionID: iv.Version, State: kap.LedgerConfirmed})
}

func (s *Sender) unknown(st *sendState, e *entry) kap.LedgerEntry {
	return kap.LedgerEntry{LedgerKey: e.ledgerKey(st.msg.Tenant, s.name), State: kap.LedgerUnknown, LastError: "no answer to the write"}
}

// lost turns a write without an answer into a SendError: transient when the
// write can be repeated safely, unknown otherwise.
func (s *Sender) lost(st *sendState, e *entry, err error) error {
	se := noAnswer(err, false)
	if se.Kind == kap.SendUnknown {
		se.Resources = []kap.LedgerEntry{s.unknown(st, e)}
	}
	return se
}

// noAnswer classifies a request that got no response. idempotent requests
// and requests that never left are transient; others unknown. Conditional
// writes (PUT Type?identifier, POST with If-None-Exist, PUT Type/id) are
// repeatable; only a plain POST is not.
func noAnswer(err error, idempotent bool) *kap.SendError {
	var he *httpclient.Error
	if errors.As(err, &he) && !idempotent && !he.NotSent && he.Method == http.MethodPost {
		return &kap.SendError{Kind: kap.SendUnknown, Err: err}
	}
	return &kap.SendError{Kind: kap.SendTransient, Err: err}
}

// write sends a resource (or Bundle) as JSON.
func (s *Sender) write(ctx context.Context, method, rel string, res map[string]any, h http.Header) (*httpclient.Response, error) {
	body, err := json.Marshal(res)
	if err != nil {
		return nil, permanent(0, "cannot encode a resource: "+err.Error(), nil)
	}
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/fhir+json")
	return s.do(ctx, method, rel, body, h)
}

func (s *Sender) do(ctx context.Context, method, rel string, body []byte, h http.Header) (*httpclient.Response, error) {
	if h == nil {
		h = http.Header{}
	}
	h.Set("Accept", "application/fhir+json")
	if method != http.MethodGet {
		h.Set("Prefer", "return=representation")
	}
	u := s.base
	if rel != "" {
		u += "/" + rel
	}
	req, err := httpclient.NewRequest(ctx, method, u, body, h)
	if err != nil {
		return nil, permanent(0, err.Error(), nil)
	}
	return s.client.Do(ctx, req)
}

// writtenID reads the id and version a write answered: the body's id and
// meta.versionId, else the Location header (Type/id/_history/v), with the
// ETag for the version.
func writtenID(resp *httpclient.Response, typ string) (idVersion, bool) {
	var r struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Meta         struct {
			VersionID string `json:"versionId"`
		} `json:"meta"`
	}
	if json.Unmarshal(resp.Body, &r) == nil && r.ResourceType == typ && r.ID != "" {
		return idVersion{r.ID, r.Meta.VersionID}, true
	}
	if iv, ok := parseLocation(resp.Header.Get("Location"), typ); ok {
		if iv.Version == "" {
			iv.Version = etagVersion(resp.Header.Get("ETag"))
		}
		return iv, true
	}
	return idVersion{}, false
}

// parseLocation reads [base/]Type/id[/_history/v].
func parseLocation(loc, typ string) (idVersion, bool) {
	if loc == "" {
		return idVersion{}, false
	}
	if u, err := url.Parse(loc); err == nil {
		loc = u.Path
	}
	segs := strings.Split(strings.Trim(loc, "/"), "/")
	for i := len(segs) - 2; i >= 0; i-- {
		if segs[i] == typ {
			iv := idVersion{ID: segs[i+1]}
			if i+3 < len(segs) && segs[i+2] == "_history" {
				iv.Version = segs[i+3]
			}
			return iv, iv.ID != ""
		}
	}
	return idVersion{}, false
}

func etagVersion(etag string) string {
	etag = strings.TrimPrefix(etag, "W/")
	return strings.Trim(etag, `"`)
}

// statusError classifies an unsuccessful answer.
func (s *Sender) statusError(resp *httpclient.Response) *kap.SendError {
	se := &kap.SendError{Status: resp.Status, RetryAfter: resp.RetryAfter, OperationOutcome: outcomeOf(resp.Body)}
	switch {
	case httpclient.RetryableStatus(resp.Status):
		se.Kind = kap.SendTransient
		se.Err = fmt.Errorf("the target answered %d", resp.Status)
	case resp.Status == http.StatusUnauthorized:
		se.Kind = kap.SendTransient
		se.Err = errors.New("the target refused the credentials after a refresh")
	case resp.Status == http.StatusMethodNotAllowed || resp.Status == http.StatusNotImplemented:
		// The target refused an interaction its CapabilityStatement
		// claimed: rediscover on the next attempt.
		s.forgetCapability(context.Background())
		se.Kind = kap.SendTransient
		se.Err = fmt.Errorf("the target does not support the interaction (HTTP %d); its capabilities are read again", resp.Status)
	case resp.Status >= 400 && resp.Status < 500:
		se.Kind = kap.SendPermanent
		se.Err = fmt.Errorf("the target refused the content (HTTP %d)%s", resp.Status, outcomeSummary(se.OperationOutcome))
	default:
		se.Kind = kap.SendTransient
		se.Err = fmt.Errorf("unexpected answer %d", resp.Status)
	}
	return se
}

// outcomeOf returns body when it is an OperationOutcome.
func outcomeOf(body []byte) json.RawMessage {
	var r struct {
		ResourceType string `json:"resourceType"`
	}
	if json.Unmarshal(body, &r) == nil && r.ResourceType == "OperationOutcome" {
		return json.RawMessage(bytes.Clone(body))
	}
	return nil
}

// outcomeSummary names the issue codes and paths of an OperationOutcome,
// not its diagnostics (a server may echo content there).
func outcomeSummary(oo json.RawMessage) string {
	if oo == nil {
		return ""
	}
	var o struct {
		Issue []struct {
			Code       string   `json:"code"`
			Expression []string `json:"expression"`
		} `json:"issue"`
	}
	if json.Unmarshal(oo, &o) != nil || len(o.Issue) == 0 {
		return ""
	}
	var parts []string
	for i, is := range o.Issue {
		if i == 3 {
			parts = append(parts, "...")
			break
		}
		p := is.Code
		if len(is.Expression) > 0 {
			p += " at " + is.Expression[0]
		}
		parts = append(parts, p)
	}
	return ": " + strings.Join(parts, ", ")
}

// permanent is a content error found before or without a target answer.
func permanent(status int, msg string, oo json.RawMessage) *kap.SendError {
	if oo == nil {
		b, _ := json.Marshal(map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
			"severity": "error", "code": "invalid", "diagnostics": msg}}})
		oo = b
	}
	return &kap.SendError{Kind: kap.SendPermanent, Status: status, OperationOutcome: oo, Err: errors.New(msg)}
}
