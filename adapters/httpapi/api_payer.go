package httpapi

// Payer routes (issue #8): claims from sessions with the payer preflight,
// submission and eligibility checks queued to the tenant's payer target
// through the outbox (adapters/payer delivers them), the Spravato REMS
// monitoring form of a session. Screening pulls are in api_screening.go.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	claimpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/claim_go_proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// payerRoutes installs the payer and screening operations on records.
func (s *server) payerRoutes(api *gin.RouterGroup) {
	api.POST("/:collection/:id/$claim", s.claimOp)
	api.POST("/:collection/:id/$eligibility", s.eligibilityOp)
	api.GET("/:collection/:id/$eligibility", s.eligibilityGet)
	api.GET("/:collection/:id/$rems", s.remsOp)
	api.POST("/:collection/:id/$screening-pull", s.screeningPullOp)
}

// ClaimAnswer is the body of POST .../$claim.
type ClaimAnswer struct {
	Claim        *kap.Claim           `json:"claim"`
	PayerProfile string               `json:"payerProfile"`
	Preflight    []kap.PreflightIssue `json:"preflight"`
	// Resource is the FHIR R4 Claim (absent without a coverage: FHIR
	// requires Claim.insurance).
	Resource json.RawMessage `json:"resource,omitempty"`
	// Submission is set when ?submit=true queued the claim.
	Submission *Submission `json:"submission,omitempty"`
	// Answer is what the payer did with an earlier submission of this
	// claim, when known.
	Answer *kap.PayerAnswer `json:"answer,omitempty"`
	// PreAuth is what the payer answered to the prior authorisation
	// request (Da Vinci PAS $submit) of this claim, when known; its
	// preAuthRef goes on the claim.
	PreAuth *kap.PayerAnswer `json:"preAuth,omitempty"`
}

// KindPreAuth is the outbox message kind of a Da Vinci PAS prior
// authorisation request (a collection Bundle for Claim/$submit).
const KindPreAuth = kap.MessagePreAuth

// Submission is a claim or eligibility request queued for a payer target.
type Submission struct {
	Target string `json:"target"`
	// MessageID is the outbox message; the same content gives the same id,
	// so a resubmission is not queued twice.
	MessageID string `json:"messageId"`
}

// operationRecord returns the tenant's mapper and the latest record the
// operation of the URL ($claim, $rems, $screening-pull) applies to; when it
// returns false it has answered the request.
func (s *server) operationRecord(c *gin.Context, tenant string, kind kap.Kind) (*mapping.Mapper, kap.Record, bool) {
	m := s.mappers[tenant]
	if m == nil {
		s.fail(c, kap.Errorf(kap.EFORBIDDEN, "the tenant has no mapping configuration"))
		return nil, nil, false
	}
	rec, _, err := s.getRecordOf(c.Request.Context(), tenant, kind, c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return nil, nil, false
	}
	return m, rec, true
}

// getRecordOf reads and decodes the latest version of a record.
func (s *server) getRecordOf(ctx context.Context, tenant string, kind kap.Kind, id string) (kap.Record, kap.StoredRecord, error) {
	if kap.ValidateID("id", id) != nil {
		return nil, kap.StoredRecord{}, kap.Errorf(kap.ENOTFOUND, "no such record")
	}
	sr, err := s.cfg.Store.Records().Get(ctx, tenant, string(kind), id)
	if err != nil {
		return nil, sr, err
	}
	rec, err := kap.DecodeRecord(sr.Record)
	if err != nil {
		return nil, sr, kap.Errorf(kap.EINTERNAL, "a stored %s no longer decodes", kind)
	}
	return rec, sr, nil
}

// clientRecords returns the latest versions of a client's records of kind.
func (s *server) clientRecords(ctx context.Context, tenant, clientID string, kind kap.Kind) ([]kap.StoredRecord, error) {
	var out []kap.StoredRecord
	q := kap.ListQuery{Limit: 1000, Kinds: []string{string(kind)}}
	for {
		recs, next, err := s.cfg.Store.Records().ListByClient(ctx, tenant, clientID, q)
		if err != nil {
			return nil, err
		}
		for _, sr := range recs {
			if sr.Kind == string(kind) {
				out = append(out, sr)
			}
		}
		if next == "" {
			return out, nil
		}
		q.Cursor = next
	}
}

// latestIntake returns the client's most recent intake (nil if none).
func (s *server) latestIntake(ctx context.Context, tenant, clientID string) (*kap.Intake, error) {
	srs, err := s.clientRecords(ctx, tenant, clientID, kap.KindIntake)
	if err != nil {
		return nil, err
	}
	var best *kap.Intake
	for _, sr := range srs {
		r, err := kap.DecodeRecord(sr.Record)
		if err != nil {
			continue
		}
		if in, ok := r.(*kap.Intake); ok && (best == nil || in.Date.Time.After(best.Date.Time) ||
			in.Date.Time.Equal(best.Date.Time) && in.ID > best.ID) {
			best = in
		}
	}
	return best, nil
}

// coverageOn returns the client's coverage in force on the date with the
// lowest coordination-of-benefits order (nil if none).
func (s *server) coverageOn(ctx context.Context, tenant, clientID string, d kap.Date) (*kap.Coverage, error) {
	srs, err := s.clientRecords(ctx, tenant, clientID, kap.KindCoverage)
	if err != nil {
		return nil, err
	}
	var covs []*kap.Coverage
	for _, sr := range srs {
		r, err := kap.DecodeRecord(sr.Record)
		if err != nil {
			continue
		}
		if c, ok := r.(*kap.Coverage); ok && c.ActiveOn(d) {
			covs = append(covs, c)
		}
	}
	order := func(c *kap.Coverage) int {
		if c.Order == 0 {
			return 10
		}
		return c.Order
	}
	sort.Slice(covs, func(i, j int) bool {
		if order(covs[i]) != order(covs[j]) {
			return order(covs[i]) < order(covs[j])
		}
		return covs[i].ID < covs[j].ID
	})
	if len(covs) == 0 {
		return nil, nil
	}
	return covs[0], nil
}

// dosingWarnings are the warnings shown with a dosing session: its safety
// warnings and, for intranasal esketamine, what the Spravato REMS
// monitoring form still lacks (the client's latest intake gives the
// concomitant medications).
func (s *server) dosingWarnings(ctx context.Context, tenant string, ds *kap.DosingSession) []kap.Issue {
	if !ds.IsEsketamine() {
		return ds.SafetyWarnings()
	}
	intake, err := s.latestIntake(ctx, tenant, ds.ClientID)
	if err != nil {
		s.log.Warn("REMS warnings without the intake", "error", kap.ErrorCode(err))
	}
	return ds.Warnings(intake, kap.REMSAnswers{})
}

// recordWarnings are the warnings GET shows with a stored record: a dosing
// session's (dosingWarnings), the screening hints of the client's latest
// intake, a coverage's last eligibility answer (severity information).
func (s *server) recordWarnings(ctx context.Context, tenant string, kind kap.Kind, sr kap.StoredRecord) []kap.Issue {
	rec, err := kap.DecodeRecord(sr.Record)
	if err != nil {
		return nil
	}
	switch r := rec.(type) {
	case *kap.DosingSession:
		return s.dosingWarnings(ctx, tenant, r)
	case *kap.Intake:
		h := s.screeningHints(ctx, tenant, r.ClientID)
		if h == nil {
			return nil
		}
		if latest, err := s.latestIntake(ctx, tenant, r.ClientID); err != nil || latest == nil || latest.ID != r.ID {
			return nil
		}
		return h.Warnings()
	case *kap.Coverage:
		a := s.payerAnswer(ctx, kap.EligibilityKey(tenant, r.ID))
		if a == nil {
			return nil
		}
		return []kap.Issue{eligibilityIssue(a)}
	}
	return nil
}

// eligibilityIssue summarises an eligibility answer for GET of a coverage.
func eligibilityIssue(a *kap.PayerAnswer) kap.Issue {
	is := kap.Issue{Path: "eligibility", Severity: "information"}
	switch e := a.Eligibility; {
	case a.Pending || e == nil:
		is.Reason = "eligibility request submitted to " + a.Target + "; the payer has not answered yet"
	default:
		in := "the payer did not say whether it is in force"
		if e.InForce != nil && *e.InForce {
			in = "in force"
		} else if e.InForce != nil {
			in = "NOT in force"
		}
		is.Reason = "eligibility (" + a.Target + ", " + e.Outcome + "): " + in
		if e.Disposition != "" {
			is.Reason += ": " + e.Disposition
		}
		if e.InForce == nil || !*e.InForce {
			is.Severity = "warning"
		}
	}
	return is
}

// payerAnswer reads a PayerAnswer from the cache (nil when none).
func (s *server) payerAnswer(ctx context.Context, key string) *kap.PayerAnswer {
	b, err := s.cfg.Store.Cache().Get(ctx, key)
	if err != nil {
		return nil
	}
	var a kap.PayerAnswer
	if json.Unmarshal(b, &a) != nil {
		return nil
	}
	return &a
}

// payerTarget returns the tenant's payer target (?target= picks one when it
// has several).
func (s *server) payerTarget(c *gin.Context, tenant string) (string, error) {
	ts := s.cfg.PayerTargets[tenant]
	if len(ts) == 0 {
		return "", kap.Errorf(kap.EPRECONDITION, "the tenant has no payer target configured (a target with kind payer)")
	}
	want := c.Query("target")
	if want == "" {
		return ts[0], nil
	}
	if !slices.Contains(ts, want) {
		return "", badQuery("target", "is not one of the tenant's payer targets")
	}
	return want, nil
}

// claimOp is POST /kap/v1/{dosing-sessions|integration-sessions}/{id}/$claim:
// the claim of the session under ?payer= (default the coverage's payer
// profile), its preflight findings and the FHIR Claim; ?submit=true queues
// it for the payer target (422 with the findings when the payer would
// refuse it).
func (s *server) claimOp(c *gin.Context) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	if kind != kap.KindDosingSession && kind != kap.KindIntegrationSession {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "$claim applies to dosing-sessions and integration-sessions"))
		return
	}
	submit := c.Query("submit")
	if submit != "" && submit != "true" && submit != "false" {
		s.fail(c, badQuery("submit", "must be true or false"))
		return
	}
	use := c.DefaultQuery("use", "claim")
	if use != "claim" && use != "preauthorization" {
		s.fail(c, badQuery("use", "must be claim or preauthorization"))
		return
	}
	preauth := use == "preauthorization"
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	m, rec, ok := s.operationRecord(c, tenant, kind)
	if !ok {
		return
	}
	in := kap.ClaimInput{}
	pin := kap.PreflightInput{}
	switch r := rec.(type) {
	case *kap.DosingSession:
		in.Dosing, pin.Dosing = r, r
	case *kap.IntegrationSession:
		in.Integration, pin.Integration = r, r
	}
	client := rec.RecordClientID()
	date := kap.Date(rec.RecordDate().Format("2006-01-02"))
	var err error
	if in.Intake, err = s.latestIntake(ctx, tenant, client); err != nil {
		s.fail(c, err)
		return
	}
	if in.Coverage, err = s.coverageOn(ctx, tenant, client, date); err != nil {
		s.fail(c, err)
		return
	}
	profileID := c.Query("payer")
	if profileID == "" {
		profileID = "generic"
		if in.Coverage != nil {
			profileID = in.Coverage.Profile()
		}
	}
	profile, err := mapping.PayerProfile(profileID)
	if err != nil {
		s.fail(c, badQuery("payer", "is not a known payer profile"))
		return
	}
	if in.Dosing != nil {
		in.Providers = map[string]*kap.Provider{}
		for _, id := range in.Dosing.MonitoredBy {
			if p, _, err := s.getRecordOf(ctx, tenant, kap.KindProvider, id); err == nil {
				in.Providers[id] = p.(*kap.Provider)
			}
		}
	}
	if in.Coverage != nil && in.Coverage.Eligibility != nil {
		in.PreAuthRef = in.Coverage.Eligibility.PreAuthRef
	}
	// The claim id is the session id (BuildClaim's default).
	pa := s.payerAnswer(ctx, kap.PreAuthAnswerKey(tenant, rec.RecordID()))
	if pa != nil && pa.PreAuthRef != "" && !preauth {
		in.PreAuthRef = pa.PreAuthRef
	}
	claim, err := kap.BuildClaim(in, profile)
	if err != nil {
		s.fail(c, err)
		return
	}
	pin.Claim, pin.Profile, pin.Coverage = claim, profile, in.Coverage
	ans := ClaimAnswer{Claim: claim, PayerProfile: profile.ID, Preflight: kap.Preflight(pin)}
	if ans.Preflight == nil {
		ans.Preflight = []kap.PreflightIssue{}
	}
	ans.Answer = s.payerAnswer(ctx, kap.ClaimAnswerKey(tenant, claim.ID))
	ans.PreAuth = pa
	if preauth {
		// Prior authorisation is asked for precisely because it is
		// missing; the services must be ones the profile wants it for.
		var keep []kap.PreflightIssue
		for _, p := range ans.Preflight {
			if p.Rule != kap.RulePriorAuthRequired {
				keep = append(keep, p)
			}
		}
		ans.Preflight = keep
		if ans.Preflight == nil {
			ans.Preflight = []kap.PreflightIssue{}
		}
		needs := false
		for _, l := range claim.Lines {
			needs = needs || slices.Contains(profile.PriorAuth, l.Code)
		}
		if !needs {
			ans.Preflight = append(ans.Preflight, kap.PreflightIssue{Rule: kap.RulePriorAuthRequired, Path: "lines",
				Message: "the " + profile.ID + " payer profile asks no prior authorisation for these services"})
		}
	}
	var fclaim proto.Message
	if in.Coverage != nil {
		cl, err := m.MapClaim(claim, mapping.ClaimInput{Coverage: in.Coverage, Created: s.cfg.Now()})
		if err != nil {
			s.fail(c, err)
			return
		}
		if preauth {
			cl.Use = &claimpb.Claim_UseCode{Value: cpb.UseCode_PREAUTHORIZATION}
			cl.Identifier = []*dpb.Identifier{fhir.Identifier(m.System("Claim"), "preauth/"+claim.ID)}
		}
		fclaim = cl
		if ans.Resource, err = s.cfg.Codec.Marshal(cl); err != nil {
			s.fail(c, err)
			return
		}
	}
	if submit != "true" {
		c.JSON(http.StatusOK, ans)
		return
	}
	if len(ans.Preflight) > 0 || fclaim == nil {
		e := &kap.Error{Code: kap.EINVALID, Message: "the payer would refuse the claim: it was not submitted"}
		for _, p := range ans.Preflight {
			e.Issues = append(e.Issues, kap.Issue{Path: p.Path, Reason: p.Rule + ": " + p.Message})
		}
		s.fail(c, e)
		return
	}
	target, err := s.payerTarget(c, tenant)
	if err != nil {
		s.fail(c, err)
		return
	}
	mkind, value := "Claim", "claim/"+claim.ID
	if preauth {
		mkind, value = KindPreAuth, "preauth/"+claim.ID
	}
	msg, err := s.payerMessage(ctx, tenant, target, m, client, in.Coverage, claimProviders(claim), mkind, claim.ID,
		fclaim, value, claim)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.cfg.Store.Outbox().Enqueue(ctx, msg); err != nil {
		s.fail(c, err)
		return
	}
	ans.Submission = &Submission{Target: target, MessageID: msg.ID}
	c.JSON(http.StatusAccepted, ans)
}

func claimProviders(c *kap.Claim) []string {
	if c.ProviderID == "" {
		return nil
	}
	return []string{c.ProviderID}
}

// payerMessage builds the outbox message of a submission to a payer: a
// transaction Bundle of conditional updates holding the client's Patient,
// the providers' Practitioners, the coverage's payer Organization and
// Coverage (the resources the request references, from their stored
// Bundles) and the request itself, keyed by its business identifier. The
// message id carries a hash of the content: the same submission is queued
// once, a corrected one again (and updates the same resource at the payer).
//
// A prior authorisation request (kind KindPreAuth) is a Da Vinci PAS
// request Bundle instead: type collection, the Claim first, then the
// resources it references, which it references by their fullUrls.
func (s *server) payerMessage(ctx context.Context, tenant, target string, m *mapping.Mapper, clientID string,
	cov *kap.Coverage, providers []string, kind, recordID string, res proto.Message, value string, record any) (kap.OutboxMessage, error) {
	resourceType := fhir.ResourceType(res)
	var entries []any
	add := func(kind kap.Kind, id string) error {
		sr, err := s.cfg.Store.Records().Get(ctx, tenant, string(kind), id)
		if err != nil {
			if kap.ErrorCode(err) == kap.ENOTFOUND {
				return kap.Errorf(kap.EPRECONDITION, "the %s %s the request references is not stored", kind, id)
			}
			return err
		}
		var b struct {
			Entry []map[string]any `json:"entry"`
		}
		if err := json.Unmarshal(sr.Bundle, &b); err != nil {
			return kap.Errorf(kap.EINTERNAL, "a stored Bundle does not decode")
		}
		for _, e := range b.Entry {
			if r, _ := e["resource"].(map[string]any); r["resourceType"] == "Provenance" {
				continue
			}
			entries = append(entries, e)
		}
		return nil
	}
	if err := add(kap.KindClient, clientID); err != nil {
		return kap.OutboxMessage{}, err
	}
	for _, p := range providers {
		if err := add(kap.KindProvider, p); err != nil {
			return kap.OutboxMessage{}, err
		}
	}
	if err := add(kap.KindCoverage, cov.ID); err != nil {
		return kap.OutboxMessage{}, err
	}
	rj, err := s.cfg.Codec.Marshal(res)
	if err != nil {
		return kap.OutboxMessage{}, err
	}
	sys := m.System(resourceType)
	url := fhir.ConditionalRef(resourceType, sys, value)
	own := map[string]any{
		"fullUrl":  "urn:uuid:" + uuid.NewSHA1(uuid.NameSpaceURL, []byte(sys+"|"+value)).String(),
		"resource": json.RawMessage(rj),
		"request":  map[string]any{"method": "PUT", "url": url},
	}
	entries = append(entries, own)
	btype := "transaction"
	var bentries []any
	if kind == KindPreAuth {
		btype = "collection"
		var err error
		if bentries, err = pasEntries(entries); err != nil {
			return kap.OutboxMessage{}, err
		}
	} else {
		bentries = entries
	}
	bundle, err := json.Marshal(map[string]any{"resourceType": "Bundle", "type": btype, "entry": bentries})
	if err != nil {
		return kap.OutboxMessage{}, err
	}
	var refs []kap.ResourceRef
	for _, e := range entries {
		var u string
		switch e := e.(type) {
		case map[string]any:
			r, _ := e["request"].(map[string]any)
			u, _ = r["url"].(string)
		}
		if typ, sys, val, ok := fhir.ParseConditionalRef(u); ok {
			refs = append(refs, kap.ResourceRef{Type: typ, System: sys, Value: val})
		}
	}
	recJSON, err := json.Marshal(record)
	if err != nil {
		return kap.OutboxMessage{}, err
	}
	// The hash leaves out what changes with every call (created).
	sum := sha256.Sum256(append(append([]byte(kind+"|"+recordID+"|"), recJSON...), stripCreated(bundle)...))
	return kap.OutboxMessage{
		ID:     strings.ToLower(kind) + "/" + recordID + "/" + hex.EncodeToString(sum[:8]),
		Tenant: tenant, Target: target, ClientID: clientID,
		Kind: kind, RecordID: recordID, Version: 1,
		Record: recJSON, Bundle: bundle, Resources: refs, EnqueuedAt: s.cfg.Now(),
	}, nil
}

// pasEntries turns the transaction entries (the request last) into the
// entries of a PAS request Bundle: the request first, no request elements,
// the request's conditional references to the other entries replaced by
// their fullUrls, and those to resources outside the Bundle by logical
// references (type and identifier).
func pasEntries(entries []any) ([]any, error) {
	byURL := map[string]string{}
	var out []any
	for _, e := range entries[:len(entries)-1] {
		em := e.(map[string]any)
		r, _ := em["request"].(map[string]any)
		if u, _ := r["url"].(string); u != "" {
			byURL[u], _ = em["fullUrl"].(string)
		}
		out = append(out, map[string]any{"fullUrl": em["fullUrl"], "resource": em["resource"]})
	}
	last := entries[len(entries)-1].(map[string]any)
	var res any
	if err := json.Unmarshal(last["resource"].(json.RawMessage), &res); err != nil {
		return nil, kap.Errorf(kap.EINTERNAL, "the request does not decode")
	}
	walkObjects(res, func(x map[string]any) {
		if ref, ok := x["reference"].(string); ok {
			if full := byURL[ref]; full != "" {
				x["reference"] = full
			} else if typ, sys, val, ok := fhir.ParseConditionalRef(ref); ok {
				// Not in the Bundle (the session's Encounter, a
				// clinical record the payer does not get): a logical
				// reference by identifier.
				delete(x, "reference")
				x["type"] = typ
				x["identifier"] = map[string]any{"system": sys, "value": val}
			}
		}
	})
	return append([]any{map[string]any{"fullUrl": last["fullUrl"], "resource": res}}, out...), nil
}

// stripCreated removes the "created" timestamps from a Bundle's JSON for
// the content hash.
func stripCreated(b []byte) []byte {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return b
	}
	walkObjects(v, func(x map[string]any) { delete(x, "created") })
	out, _ := json.Marshal(v)
	return out
}

// EligibilityBody is the body of POST /kap/v1/coverages/{id}/$eligibility.
type EligibilityBody struct {
	ProviderID string   `json:"providerId"`
	Date       kap.Date `json:"date,omitempty"`     // default today
	Services   []string `json:"services,omitempty"` // default mapping.DefaultEligibilityServices
}

// EligibilityAnswer is the body of the $eligibility routes.
type EligibilityAnswer struct {
	CoverageID string           `json:"coverageId"`
	Submission *Submission      `json:"submission,omitempty"`
	Resource   json.RawMessage  `json:"resource,omitempty"` // the CoverageEligibilityRequest
	Answer     *kap.PayerAnswer `json:"answer,omitempty"`
}

// eligibilityOp is POST /kap/v1/coverages/{id}/$eligibility: queue a
// CoverageEligibilityRequest for the tenant's payer target (202). The
// payer's CoverageEligibilityResponse, once adapters/payer has read it, is
// shown by GET .../$eligibility and on GET of the coverage.
func (s *server) eligibilityOp(c *gin.Context) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	if kind != kap.KindCoverage {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "$eligibility applies to coverages"))
		return
	}
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	m := s.mappers[tenant]
	if m == nil {
		s.fail(c, kap.Errorf(kap.EFORBIDDEN, "the tenant has no mapping configuration"))
		return
	}
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	var body EligibilityBody
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		s.fail(c, &kap.Error{Code: kap.EINVALID, Message: "invalid request", Issues: []kap.Issue{{Reason: "malformed JSON: the body must be {\"providerId\", \"date\", \"services\"}"}}})
		return
	}
	if body.Date == "" {
		body.Date = kap.Date(s.cfg.Now().Format("2006-01-02"))
	}
	rec, _, err := s.getRecordOf(ctx, tenant, kind, c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	cov := rec.(*kap.Coverage)
	target, err := s.payerTarget(c, tenant)
	if err != nil {
		s.fail(c, err)
		return
	}
	req, err := m.EligibilityRequest(mapping.EligibilityInput{Coverage: cov, ProviderID: body.ProviderID,
		Date: body.Date, Services: body.Services, Created: s.cfg.Now()})
	if err != nil {
		s.fail(c, err)
		return
	}
	msg, err := s.payerMessage(ctx, tenant, target, m, cov.ClientID, cov, []string{body.ProviderID},
		"CoverageEligibilityRequest", cov.ID, req, "eligibility/"+cov.ID+"/"+string(body.Date), body)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.cfg.Store.Outbox().Enqueue(ctx, msg); err != nil {
		s.fail(c, err)
		return
	}
	rj, _ := s.cfg.Codec.Marshal(req)
	c.JSON(http.StatusAccepted, EligibilityAnswer{CoverageID: cov.ID, Submission: &Submission{Target: target, MessageID: msg.ID},
		Resource: rj, Answer: s.payerAnswer(ctx, kap.EligibilityKey(tenant, cov.ID))})
}

// eligibilityGet is GET /kap/v1/coverages/{id}/$eligibility: the payer's
// last answer (404 when no request was answered or submitted yet).
func (s *server) eligibilityGet(c *gin.Context) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	if kind != kap.KindCoverage {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "$eligibility applies to coverages"))
		return
	}
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	rec, _, err := s.getRecordOf(ctx, tenant, kind, c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	a := s.payerAnswer(ctx, kap.EligibilityKey(tenant, rec.RecordID()))
	if a == nil {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "no eligibility request of this coverage has reached the payer yet"))
		return
	}
	c.JSON(http.StatusOK, EligibilityAnswer{CoverageID: rec.RecordID(), Answer: a})
}

// REMSAnswer is the body of GET .../$rems.
type REMSAnswer struct {
	Report   *kap.REMSReport `json:"report"`
	Complete bool            `json:"complete"`
	Missing  []kap.REMSItem  `json:"missing"`
	DueDate  kap.Date        `json:"dueDate"`
	// QuestionnaireResponse is the form content as FHIR (status completed
	// or in-progress).
	QuestionnaireResponse json.RawMessage `json:"questionnaireResponse"`
}

// remsOp is GET /kap/v1/dosing-sessions/{id}/$rems: the Spravato REMS
// Patient Monitoring Form content of an esketamine session (?format=html
// the printable summary, ?format=text plain text).
func (s *server) remsOp(c *gin.Context) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	if kind != kap.KindDosingSession {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "$rems applies to dosing-sessions"))
		return
	}
	format := c.DefaultQuery("format", "json")
	if format != "json" && format != "html" && format != "text" {
		s.fail(c, badQuery("format", "must be json, html or text"))
		return
	}
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	m, rec, ok := s.operationRecord(c, tenant, kind)
	if !ok {
		return
	}
	ds := rec.(*kap.DosingSession)
	intake, err := s.latestIntake(ctx, tenant, ds.ClientID)
	if err != nil {
		s.fail(c, err)
		return
	}
	r, err := kap.CheckREMS(kap.REMSInput{Session: ds, Intake: intake})
	if err != nil {
		s.fail(c, err)
		return
	}
	switch format {
	case "html":
		h, err := r.HTML()
		if err != nil {
			s.fail(c, err)
			return
		}
		c.Header("Cache-Control", "no-store")
		c.Data(http.StatusOK, "text/html; charset=utf-8", []byte(h))
		return
	case "text":
		c.Header("Cache-Control", "no-store")
		c.Data(http.StatusOK, "text/plain; charset=utf-8", []byte(r.Text()))
		return
	}
	qr, err := m.MapREMS(r, mapping.REMSInput{Authored: s.cfg.Now()})
	if err != nil {
		s.fail(c, err)
		return
	}
	qj, err := s.cfg.Codec.Marshal(qr)
	if err != nil {
		s.fail(c, err)
		return
	}
	missing := r.Missing()
	if missing == nil {
		missing = []kap.REMSItem{}
	}
	c.JSON(http.StatusOK, REMSAnswer{Report: r, Complete: r.Complete(), Missing: missing, DueDate: r.DueDate, QuestionnaireResponse: qj})
}

// walkObjects calls fn on every JSON object in v (decoded with
// encoding/json), parents before children.
func walkObjects(v any, fn func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(x)
		for _, y := range x {
			walkObjects(y, fn)
		}
	case []any:
		for _, y := range x {
			walkObjects(y, fn)
		}
	}
}
