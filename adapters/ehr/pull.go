package ehr

// Pulling screening data from an EHR: find the clinic's client at the EHR
// by a business identifier, read their medications, conditions, allergies
// and recent blood pressures, reverse-map them (mapping.ScreeningFromResources)
// and flag what matters for a ketamine intake screen. The result is a hint
// for the prescriber, never a decision: a flag says "look at this", and a
// search that failed is reported as incomplete, never as "nothing found".
//
// Everything here is self-contained (pull*.go) and uses only net/http, so
// any *http.Client works, e.g. one whose transport comes from
// adapters/targetauth.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	aipb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/allergy_intolerance_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	condpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/condition_go_proto"
	mrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_request_go_proto"
	mspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_statement_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"
	ptpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// PullOptions configure a Puller. Zero values take the defaults.
type PullOptions struct {
	// Codec parses the EHR's answers (required).
	Codec *fhir.Codec
	// Cache keeps the EHR's Patient id for an identifier (per tenant and
	// target); nil searches every time.
	Cache kap.Cache
	// Tenant and Target scope the cached cross-reference.
	Tenant, Target string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per pull (counts and timings, no PHI); nil
	// means slog.Default().
	Logger *slog.Logger
	// PageSize is the _count of each search (default 100); MaxPages bounds
	// the pages followed per search (default 10). A search cut short is
	// reported in Screening.Incomplete.
	PageSize, MaxPages int
	// VitalsSince is how far back blood pressures are read (default 365
	// days).
	VitalsSince time.Duration
	// XrefTTL is how long a patient cross-reference is cached (default 24h).
	XrefTTL time.Duration
	// MaxBody bounds each answer (default 16 MiB).
	MaxBody int64
	// MaxRetryWait caps the wait before the one retry of a 429 or 503
	// (default 2s; longer Retry-After values fail the search instead).
	MaxRetryWait time.Duration
	// BP are the blood-pressure thresholds of the hypertension flag.
	BP BPThresholds
	// MaxMedicationReads bounds the Medication reads that resolve
	// medicationReference (default 50).
	MaxMedicationReads int
}

// BPThresholds: the latest systolic above ElevatedSystolic or diastolic
// above ElevatedDiastolic, or any reading in the window at or above
// SevereSystolic/SevereDiastolic, raises the uncontrolled-hypertension flag.
// Defaults 140/90 and 180/110 mm[Hg].
type BPThresholds struct {
	ElevatedSystolic, ElevatedDiastolic float64
	SevereSystolic, SevereDiastolic     float64
}

// Screening is what an EHR's records say for a KAP intake screen.
type Screening struct {
	// PatientID is the EHR's logical id of the patient (PHI: do not log).
	PatientID string `json:"patientId"`
	// XrefCached: the patient id came from the cache (and was re-checked).
	XrefCached bool `json:"xrefCached"`
	// Facts are the reverse-mapped resources (mapping/inbound.go).
	Facts mapping.ScreeningFacts `json:"facts"`
	// Flags are the contraindication and interaction hints, in a stable
	// order; empty when nothing was flagged (and Incomplete is empty).
	Flags []ScreeningFlag `json:"flags"`
	// Read counts the resources read, by type.
	Read map[string]int `json:"read"`
	// Incomplete names the searches that failed or were cut short, and
	// resources set aside; when it is not empty, the absence of a flag
	// means nothing.
	Incomplete []string  `json:"incomplete,omitempty"`
	PulledAt   time.Time `json:"pulledAt"`
}

// Complete reports whether every search was read to the end.
func (s *Screening) Complete() bool { return len(s.Incomplete) == 0 }

// ScreeningFlag is one hint for the prescriber.
type ScreeningFlag struct {
	// Item is a kap.Screen* item (psychosis, uncontrolled-hypertension,
	// ...) or a kap.Class* medication class (benzodiazepine, maoi, ...).
	Item string `json:"item"`
	// Source is medication, condition, allergy or blood-pressure.
	Source string `json:"source"`
	// Detail says what raised it, for the prescriber (the medication's
	// name, the condition's code and display, the reading). It holds the
	// patient's data: show it to the clinic, never log it.
	Detail string `json:"detail"`
}

// Puller reads screening data from EHRs.
type Puller struct {
	opts PullOptions
}

// NewPuller returns a Puller. Returns EINVALID without a Codec.
func NewPuller(opts PullOptions) (*Puller, error) {
	if opts.Codec == nil {
		return nil, kap.Errorf(kap.EINVALID, "ehr pull: Codec is required")
	}
	if opts.Cache != nil {
		if err := kap.ValidateName("tenant", opts.Tenant); err != nil {
			return nil, err
		}
		if err := kap.ValidateName("target", opts.Target); err != nil {
			return nil, err
		}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 100
	}
	if opts.MaxPages <= 0 {
		opts.MaxPages = 10
	}
	if opts.VitalsSince <= 0 {
		opts.VitalsSince = 365 * 24 * time.Hour
	}
	if opts.XrefTTL <= 0 {
		opts.XrefTTL = 24 * time.Hour
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = 16 << 20
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = 2 * time.Second
	}
	if opts.MaxMedicationReads <= 0 {
		opts.MaxMedicationReads = 50
	}
	bp := &opts.BP
	if bp.ElevatedSystolic <= 0 {
		bp.ElevatedSystolic = 140
	}
	if bp.ElevatedDiastolic <= 0 {
		bp.ElevatedDiastolic = 90
	}
	if bp.SevereSystolic <= 0 {
		bp.SevereSystolic = 180
	}
	if bp.SevereDiastolic <= 0 {
		bp.SevereDiastolic = 110
	}
	return &Puller{opts: opts}, nil
}

// The LOINC codes of the blood-pressure search: the panel (85354-9), the
// older panel code many EHRs send (55284-4), systolic and diastolic.
var pullBPCodes = []string{fhir.LOINCBloodPressure, "55284-4", fhir.LOINCSystolic, fhir.LOINCDiastolic}

// pullSearch is one search of a patient's resources.
type pullSearch struct {
	typ   string
	query url.Values
}

// Pull finds the patient whose identifier is patientIdentifier
// ("system|value") at the FHIR R4 endpoint base and reads their screening
// data with client. Returns EINVALID for a malformed argument, ENOTFOUND
// when no patient has the identifier, ECONFLICT when several do, and the
// EHR's refusal (EUNAUTHORIZED, EFORBIDDEN, EUNAVAILABLE, ...) when the
// patient cannot be resolved. When a later search fails, Pull returns the
// partial Screening (its Incomplete says what is missing) together with an
// EUNAVAILABLE error. No error text holds the identifier or a URL query.
func (p *Puller) Pull(ctx context.Context, client *http.Client, base, patientIdentifier string) (*Screening, error) {
	start := time.Now()
	if client == nil {
		return nil, kap.Errorf(kap.EINVALID, "ehr pull: client is required")
	}
	baseURL, err := pullBase(base)
	if err != nil {
		return nil, err
	}
	system, value, ok := strings.Cut(patientIdentifier, "|")
	if !ok || system == "" || value == "" || strings.Contains(value, "|") {
		return nil, kap.Errorf(kap.EINVALID, "patientIdentifier: must be system|value, both non-empty")
	}
	c := &pullConn{p: p, client: client, base: baseURL}
	s := &Screening{Read: map[string]int{}, PulledAt: p.opts.Now()}
	s.PatientID, s.XrefCached, err = c.resolve(ctx, system, value)
	if err != nil {
		p.logPull(ctx, s, start, err)
		return nil, err
	}

	since := p.opts.Now().Add(-p.opts.VitalsSince).UTC().Format("2006-01-02")
	var bpCodes []string
	for _, code := range pullBPCodes {
		bpCodes = append(bpCodes, fhir.SystemLOINC+"|"+code)
	}
	searches := []pullSearch{
		{"MedicationStatement", url.Values{"patient": {s.PatientID}}},
		{"MedicationRequest", url.Values{"patient": {s.PatientID}}},
		{"Condition", url.Values{"patient": {s.PatientID}}},
		{"AllergyIntolerance", url.Values{"patient": {s.PatientID}}},
		{"Observation", url.Values{"patient": {s.PatientID}, "code": {strings.Join(bpCodes, ",")}, "date": {"ge" + since}}},
	}
	type result struct {
		res        []proto.Message
		incomplete []string
		err        error
	}
	results := make([]result, len(searches))
	var wg sync.WaitGroup
	for i, q := range searches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.query.Set("_count", strconv.Itoa(p.opts.PageSize))
			r := &results[i]
			r.res, r.incomplete, r.err = c.search(ctx, q.typ, q.query)
		}()
	}
	wg.Wait()

	var all []proto.Message
	var errs []error
	for i, r := range results {
		typ := searches[i].typ
		s.Incomplete = append(s.Incomplete, r.incomplete...)
		if r.err != nil {
			errs = append(errs, r.err)
			s.Incomplete = append(s.Incomplete, typ+" search failed: "+r.err.Error())
		}
		kept, foreign := pullOwnResources(r.res, s.PatientID)
		if foreign > 0 {
			s.Incomplete = append(s.Incomplete, fmt.Sprintf("%s search: %d resources of another patient set aside", typ, foreign))
		}
		for _, m := range kept {
			s.Read[fhir.ResourceType(m)]++
		}
		all = append(all, kept...)
	}
	pullContainedMedications(all)
	meds, incomplete := c.medications(ctx, all)
	s.Incomplete = append(s.Incomplete, incomplete...)
	if len(meds) > 0 {
		s.Read["Medication"] += len(meds)
	}
	all = append(all, meds...)

	s.Facts = mapping.ScreeningFromResources(all)
	s.Flags = ScreeningFlags(s.Facts, p.opts.Now().Add(-p.opts.VitalsSince), p.opts.BP)
	if len(errs) > 0 {
		err = &kap.Error{Code: kap.EUNAVAILABLE, Message: fmt.Sprintf("%d of %d EHR searches failed; the screening is incomplete", len(errs), len(searches)),
			Err: errors.Join(errs...)}
	}
	p.logPull(ctx, s, start, err)
	return s, err
}

func (p *Puller) logPull(ctx context.Context, s *Screening, start time.Time, err error) {
	attrs := []slog.Attr{slog.String("tenant", p.opts.Tenant), slog.String("target", p.opts.Target),
		slog.Duration("took", time.Since(start)), slog.Bool("xref_cached", s.XrefCached),
		slog.Int("flags", len(s.Flags)), slog.Int("incomplete", len(s.Incomplete))}
	types := make([]string, 0, len(s.Read))
	for t := range s.Read {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		attrs = append(attrs, slog.Int("read_"+t, s.Read[t]))
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("error", kap.ErrorCode(err)))
	}
	p.opts.Logger.LogAttrs(ctx, level, "ehr screening pull", attrs...)
}

func pullBase(base string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return nil, kap.Errorf(kap.EINVALID, "base: must be an absolute http(s) FHIR base URL without a query or user info")
	}
	return u, nil
}

// pullConn is one pull's connection to the EHR.
type pullConn struct {
	p      *Puller
	client *http.Client
	base   *url.URL
}

func (c *pullConn) xrefKey(system, value string) string {
	sum := sha256.Sum256([]byte(system + "|" + value))
	return "ehr:xref:" + c.p.opts.Tenant + ":" + c.p.opts.Target + ":" + hex.EncodeToString(sum[:16])
}

// resolve returns the EHR's Patient id for the identifier: the cached one
// if a read of it still shows the identifier, else by search.
func (c *pullConn) resolve(ctx context.Context, system, value string) (string, bool, error) {
	cache := c.p.opts.Cache
	if cache != nil {
		if id, err := cache.Get(ctx, c.xrefKey(system, value)); err == nil && pullValidID(string(id)) {
			body, status, err := c.get(ctx, c.url("Patient/"+string(id), nil), "Patient read")
			if err == nil {
				if pt := c.patient(body); pt != nil && pt.GetId().GetValue() == string(id) && pullHasIdentifier(pt, system, value) {
					return string(id), true, nil
				}
			}
			if err != nil && status != http.StatusNotFound && status != http.StatusGone {
				return "", false, err
			}
			// Gone, merged or re-keyed at the EHR: search again.
			cache.Delete(ctx, c.xrefKey(system, value))
		}
	}
	q := url.Values{"identifier": {system + "|" + value}, "_count": {"10"}}
	res, _, err := c.search(ctx, "Patient", q)
	if err != nil {
		return "", false, err
	}
	var ids []string
	ignored := 0
	for _, r := range res {
		pt, ok := r.(*ptpb.Patient)
		if !ok {
			continue
		}
		// A server that ignores the identifier parameter answers with
		// every patient: only those that carry it count.
		if !pullHasIdentifier(pt, system, value) {
			ignored++
			continue
		}
		if id := pt.GetId().GetValue(); id != "" && !pullContains(ids, id) {
			ids = append(ids, id)
		}
	}
	switch {
	case len(ids) == 0 && ignored > 0:
		return "", false, kap.Errorf(kap.EUNAVAILABLE, "the EHR answered the patient search with patients that do not carry the identifier")
	case len(ids) == 0:
		return "", false, kap.Errorf(kap.ENOTFOUND, "no patient at the EHR has this identifier")
	case len(ids) > 1:
		return "", false, kap.Errorf(kap.ECONFLICT, "%d patients at the EHR have this identifier; resolve the duplicate there", len(ids))
	case !pullValidID(ids[0]):
		return "", false, kap.Errorf(kap.EUNAVAILABLE, "the EHR's patient id is not a valid FHIR id")
	}
	if cache != nil {
		if err := cache.Set(ctx, c.xrefKey(system, value), []byte(ids[0]), c.p.opts.XrefTTL); err != nil {
			c.p.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "patient cross-reference not cached",
				slog.String("target", c.p.opts.Target), slog.String("error", kap.ErrorCode(err)))
		}
	}
	return ids[0], false, nil
}

func pullContains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// pullValidID: a FHIR id (1-64 of A-Z a-z 0-9 - .), so it is safe in a path.
func pullValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

func pullHasIdentifier(pt *ptpb.Patient, system, value string) bool {
	for _, id := range pt.GetIdentifier() {
		if id.GetSystem().GetValue() == system && id.GetValue().GetValue() == value {
			return true
		}
	}
	return false
}

func (c *pullConn) url(path string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + "/" + path
	u.RawPath = ""
	u.RawQuery = q.Encode()
	return u.String()
}

func (c *pullConn) patient(body []byte) *ptpb.Patient {
	cr := c.parse(body)
	if cr == nil {
		return nil
	}
	return cr.GetPatient()
}

// parse reads FHIR JSON strictly, or leniently when the EHR's data breaks a
// rule that does not stop us reading it; nil when it is not FHIR at all.
func (c *pullConn) parse(body []byte) *bcrpb.ContainedResource {
	cr, err := c.p.opts.Codec.Unmarshal(body)
	if err == nil || cr != nil {
		return cr
	}
	cr, err = c.p.opts.Codec.UnmarshalLenient(body)
	if err != nil {
		return nil
	}
	return cr
}

// search runs a search and follows its next links (on the same host, at
// most MaxPages pages). It returns the resources, what was cut short, and
// an error when a page could not be read.
func (c *pullConn) search(ctx context.Context, typ string, q url.Values) ([]proto.Message, []string, error) {
	next := c.url(typ, q)
	var out []proto.Message
	for page := 1; next != ""; page++ {
		if page > c.p.opts.MaxPages {
			return out, []string{fmt.Sprintf("%s search: stopped after %d pages", typ, c.p.opts.MaxPages)}, nil
		}
		body, _, err := c.get(ctx, next, typ+" search")
		if err != nil {
			return out, nil, err
		}
		cr := c.parse(body)
		b := cr.GetBundle()
		if b == nil {
			return out, nil, kap.Errorf(kap.EUNAVAILABLE, "the EHR's answer to the %s search is not a FHIR Bundle", typ)
		}
		for _, e := range b.GetEntry() {
			if r := fhir.Unwrap(e.GetResource()); r != nil {
				out = append(out, r)
			}
		}
		next = ""
		for _, l := range b.GetLink() {
			if l.GetRelation().GetValue() == "next" {
				next = l.GetUrl().GetValue()
			}
		}
		if next != "" {
			u, err := url.Parse(next)
			if err != nil || !u.IsAbs() {
				u, err = c.base.Parse(next)
			}
			if err != nil || u.Scheme != c.base.Scheme || u.Host != c.base.Host {
				// Never send the credentials to another host.
				return out, []string{typ + " search: a next link to another host was not followed"}, nil
			}
			next = u.String()
		}
	}
	return out, nil, nil
}

// medications reads the Medication resources that medicationReference
// points to and the searches did not return.
func (c *pullConn) medications(ctx context.Context, res []proto.Message) ([]proto.Message, []string) {
	have := map[string]bool{}
	var want []string
	for _, r := range res {
		var ref *dpb.Reference
		switch x := r.(type) {
		case *mspb.MedicationStatement:
			ref = x.GetMedication().GetReference()
		case *mrpb.MedicationRequest:
			ref = x.GetMedication().GetReference()
		default:
			if fhir.ResourceType(r) == "Medication" {
				have["Medication/"+pullResourceID(r)] = true
			}
			continue
		}
		s := fhir.RefString(ref)
		id, ok := strings.CutPrefix(s, "Medication/")
		if ok && pullValidID(id) && !pullContains(want, s) {
			want = append(want, s)
		}
	}
	var out []proto.Message
	var incomplete []string
	failed := 0
	for i, ref := range want {
		if have[ref] {
			continue
		}
		if i >= c.p.opts.MaxMedicationReads {
			incomplete = append(incomplete, fmt.Sprintf("Medication reads: stopped after %d", c.p.opts.MaxMedicationReads))
			break
		}
		body, _, err := c.get(ctx, c.url(ref, nil), "Medication read")
		if err != nil {
			failed++
			continue
		}
		if cr := c.parse(body); cr.GetMedication() != nil {
			out = append(out, cr.GetMedication())
		}
	}
	if failed > 0 {
		incomplete = append(incomplete, fmt.Sprintf("Medication reads: %d failed (those medications are named by their reference's display only)", failed))
	}
	return out, incomplete
}

// pullContainedMedications replaces a medicationReference to a contained
// Medication ("#id") with that Medication's code, so the medication is
// named and classed like any other (the reverse mapping resolves only
// references to Medication resources it is given).
func pullContainedMedications(res []proto.Message) {
	for _, r := range res {
		switch x := r.(type) {
		case *mspb.MedicationStatement:
			if cc := pullContainedCode(x.GetContained(), x.GetMedication().GetReference()); cc != nil {
				x.Medication = &mspb.MedicationStatement_MedicationX{Choice: &mspb.MedicationStatement_MedicationX_CodeableConcept{CodeableConcept: cc}}
			}
		case *mrpb.MedicationRequest:
			if cc := pullContainedCode(x.GetContained(), x.GetMedication().GetReference()); cc != nil {
				x.Medication = &mrpb.MedicationRequest_MedicationX{Choice: &mrpb.MedicationRequest_MedicationX_CodeableConcept{CodeableConcept: cc}}
			}
		}
	}
}

func pullContainedCode(contained []*anypb.Any, ref *dpb.Reference) *dpb.CodeableConcept {
	id, ok := strings.CutPrefix(fhir.RefString(ref), "#")
	if !ok || id == "" {
		return nil
	}
	for _, a := range contained {
		var cr bcrpb.ContainedResource
		if a.UnmarshalTo(&cr) != nil {
			continue
		}
		if m := cr.GetMedication(); m != nil && m.GetId().GetValue() == id && m.GetCode() != nil {
			return m.GetCode()
		}
	}
	return nil
}

func pullResourceID(r proto.Message) string {
	type ider interface{ GetId() *dpb.Id }
	if x, ok := r.(ider); ok {
		return x.GetId().GetValue()
	}
	return ""
}

// pullOwnResources keeps the resources about patient id (and the
// Medications, which are about no one) and counts those about another
// patient: a server that ignored the patient parameter must not put
// another person's medications on this intake.
func pullOwnResources(res []proto.Message, id string) (kept []proto.Message, foreign int) {
	for _, r := range res {
		var ref *dpb.Reference
		switch x := r.(type) {
		case *mspb.MedicationStatement:
			ref = x.GetSubject()
		case *mrpb.MedicationRequest:
			ref = x.GetSubject()
		case *condpb.Condition:
			ref = x.GetSubject()
		case *aipb.AllergyIntolerance:
			ref = x.GetPatient()
		case *obspb.Observation:
			ref = x.GetSubject()
		default:
			if fhir.ResourceType(r) == "Medication" {
				kept = append(kept, r)
			}
			continue
		}
		s := fhir.RefString(ref)
		if s == "Patient/"+id || strings.HasSuffix(s, "/Patient/"+id) {
			kept = append(kept, r)
		} else {
			foreign++
		}
	}
	return kept, foreign
}

// get reads one URL: on 401 it asks the transport for new credentials once
// and retries; on 429 or 503 it retries once after a short Retry-After.
// Errors name what was read and the status, never the URL.
func (c *pullConn) get(ctx context.Context, u, what string) ([]byte, int, error) {
	refreshed, retried := false, false
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, 0, kap.Errorf(kap.EINVALID, "cannot build the %s request", what)
		}
		req.Header.Set("Accept", "application/fhir+json")
		resp, err := c.client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // url.Error's text holds the query
			}
			return nil, 0, &kap.Error{Code: kap.EUNAVAILABLE, Message: "the EHR did not answer the " + what, Err: err}
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, c.p.opts.MaxBody+1))
		resp.Body.Close()
		switch st := resp.StatusCode; {
		case st == http.StatusUnauthorized && !refreshed:
			r, ok := c.client.Transport.(interface{ Refresh(context.Context) error })
			if !ok {
				break
			}
			refreshed = true
			if err := r.Refresh(ctx); err != nil {
				return nil, st, &kap.Error{Code: kap.EUNAUTHORIZED, Message: "the EHR refused the gateway's credentials and new ones could not be had", Err: err}
			}
			continue
		case (st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable) && !retried:
			wait, ok := pullRetryAfter(resp.Header.Get("Retry-After"), c.p.opts.Now())
			if !ok || wait > c.p.opts.MaxRetryWait {
				break
			}
			retried = true
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, st, &kap.Error{Code: kap.EUNAVAILABLE, Message: "cancelled while waiting to retry the " + what, Err: ctx.Err()}
			case <-t.C:
			}
			continue
		}
		st := resp.StatusCode
		if st < 200 || st > 299 {
			return nil, st, &kap.Error{Code: pullCode(st), Message: fmt.Sprintf("the EHR answered the %s with HTTP %d", what, st)}
		}
		if rerr != nil {
			return nil, st, &kap.Error{Code: kap.EUNAVAILABLE, Message: "the EHR's answer to the " + what + " was cut off", Err: rerr}
		}
		if int64(len(body)) > c.p.opts.MaxBody {
			return nil, st, kap.Errorf(kap.EUNAVAILABLE, "the EHR's answer to the %s is larger than %d bytes", what, c.p.opts.MaxBody)
		}
		return body, st, nil
	}
}

func pullCode(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return kap.EUNAUTHORIZED
	case status == http.StatusForbidden:
		return kap.EFORBIDDEN
	case status == http.StatusNotFound || status == http.StatusGone:
		return kap.ENOTFOUND
	case status == http.StatusTooManyRequests:
		return kap.ERATELIMIT
	case status >= 500 || status == http.StatusRequestTimeout:
		return kap.EUNAVAILABLE
	}
	return kap.EINVALID
}

// pullRetryAfter reads Retry-After in seconds or as an HTTP date; no header
// means retry at once.
func pullRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, true
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// ScreeningFlags returns the hints in facts for a ketamine intake:
// medications in a class that interacts with ketamine (benzodiazepines,
// MAOIs, stimulants, opioids) that are not stopped; current EHR conditions
// and allergies that suggest a contraindication (psychosis, bipolar mania,
// hypertension, pregnancy, aneurysm, ketamine hypersensitivity); and blood
// pressures since `since` that are elevated (the latest reading) or severe
// (any reading). Flags are ordered medications, conditions, blood pressure.
func ScreeningFlags(f mapping.ScreeningFacts, since time.Time, bp BPThresholds) []ScreeningFlag {
	var out []ScreeningFlag
	seen := map[string]bool{}
	add := func(fl ScreeningFlag) {
		k := fl.Item + "\x00" + fl.Source + "\x00" + fl.Detail
		if !seen[k] {
			seen[k] = true
			out = append(out, fl)
		}
	}
	for _, m := range f.FlaggedMedications() {
		d := m.Name + " (" + m.Status + ")"
		if m.RxNorm != "" {
			d += ", RxNorm " + m.RxNorm
		}
		add(ScreeningFlag{Item: m.Class, Source: "medication", Detail: d})
	}
	attributed := map[string]bool{}
	for _, c := range f.Conditions {
		if !mapping.ConditionCurrent(c.ClinicalStatus) || c.Code == "" {
			continue
		}
		for _, h := range mapping.ConditionScreenHints(c.System, c.Code) {
			d := strings.TrimSpace(c.Display + " (" + c.Code + ")")
			if c.ClinicalStatus != "" {
				d += ", " + c.ClinicalStatus
			}
			add(ScreeningFlag{Item: h, Source: "condition", Detail: d})
			attributed[h] = true
		}
	}
	for _, h := range f.ContraindicationHints {
		if attributed[h] {
			continue
		}
		if h == kap.ScreenKetamineHypersensitivity {
			for _, a := range f.Allergies {
				if strings.Contains(strings.ToLower(a.Substance), "ketamine") {
					add(ScreeningFlag{Item: h, Source: "allergy", Detail: strings.TrimSpace(a.Substance + " " + a.Criticality)})
				}
			}
			continue
		}
		add(ScreeningFlag{Item: h, Source: "condition", Detail: "a current EHR condition coded for " + h})
	}
	var lastSys, lastDia *kap.VitalSigns
	for i := range f.BloodPressures {
		v := &f.BloodPressures[i]
		if v.Time.Before(since) {
			continue
		}
		if v.Systolic != 0 {
			lastSys = v
		}
		if v.Diastolic != 0 {
			lastDia = v
		}
		if (v.Systolic != 0 && v.Systolic >= bp.SevereSystolic) || (v.Diastolic != 0 && v.Diastolic >= bp.SevereDiastolic) {
			add(ScreeningFlag{Item: kap.ScreenUncontrolledHypertension, Source: "blood-pressure",
				Detail: "reading " + pullBP(*v) + " at or above " + pullBP(kap.VitalSigns{Systolic: bp.SevereSystolic, Diastolic: bp.SevereDiastolic})})
		}
	}
	switch {
	case lastSys != nil && lastSys.Systolic > bp.ElevatedSystolic:
		add(ScreeningFlag{Item: kap.ScreenUncontrolledHypertension, Source: "blood-pressure",
			Detail: "latest systolic " + pullBP(*lastSys) + " above " + strconv.FormatFloat(bp.ElevatedSystolic, 'f', -1, 64)})
	case lastDia != nil && lastDia.Diastolic > bp.ElevatedDiastolic:
		add(ScreeningFlag{Item: kap.ScreenUncontrolledHypertension, Source: "blood-pressure",
			Detail: "latest diastolic " + pullBP(*lastDia) + " above " + strconv.FormatFloat(bp.ElevatedDiastolic, 'f', -1, 64)})
	}
	return out
}

// pullBP renders "152/94 mm[Hg] on 2026-10-01" ("-" for a missing half).
func pullBP(v kap.VitalSigns) string {
	f := func(x float64) string {
		if x == 0 {
			return "-"
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	s := f(v.Systolic) + "/" + f(v.Diastolic) + " mm[Hg]"
	if !v.Time.IsZero() {
		s += " on " + v.Time.UTC().Format("2006-01-02")
	}
	return s
}
