// Package payer is the delivery adapter of targets of kind payer: a
// kap.Sender that submits claims and eligibility requests to a payer's FHIR
// R4 endpoint through the FHIR writer of adapters/ehr (conditional updates
// keyed by business identifier, retries, ledger, dead letters), then reads
// the payer's answer (ClaimResponse, CoverageEligibilityResponse) and keeps
// it for the kap/v1 API (kap.ClaimAnswerKey, kap.EligibilityKey).
//
// A payer takes the minimum necessary: the Patient, the Coverage and its
// payer Organization, the Practitioner billed, the Claim and the
// CoverageEligibilityRequest. The clinical records a tenant's records carry
// (sessions, intakes, plans, assessments) are visibly not sent.
package payer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// Message kinds the kap/v1 API queues for payer targets.
const (
	KindClaim       = "Claim"
	KindEligibility = "CoverageEligibilityRequest"
	KindPreAuth     = kap.MessagePreAuth
)

// Options configure a Sender.
type Options struct {
	// Name is the target's configured name.
	Name string
	// Writer writes the Bundles (an adapters/ehr Sender of the same
	// target).
	Writer kap.Sender
	// BaseURL is the payer's FHIR base; Client reads the answers (the
	// target's auth transport).
	BaseURL string
	Client  *http.Client
	// Cache keeps the answers (required).
	Cache kap.Cache
	// Codec parses the answers (required).
	Codec  *fhir.Codec
	Now    func() time.Time
	Logger *slog.Logger
}

// Sender delivers to one payer target.
type Sender struct {
	o Options
}

var _ kap.Sender = (*Sender)(nil)

// New returns the Sender. Returns EINVALID when a required option is
// missing.
func New(o Options) (*Sender, error) {
	if o.Writer == nil || o.Cache == nil || o.Codec == nil || o.Client == nil {
		return nil, kap.Errorf(kap.EINVALID, "payer target %s: Writer, Client, Cache and Codec are required", o.Name)
	}
	u, err := url.Parse(o.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, kap.Errorf(kap.EINVALID, "payer target %s: base URL must be an absolute http(s) URL", o.Name)
	}
	o.BaseURL = strings.TrimRight(o.BaseURL, "/")
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Sender{o: o}, nil
}

// Target is the target's name.
func (s *Sender) Target() string { return s.o.Name }

// takes reports whether a payer receives messages of the kind.
func takes(kind string) bool {
	switch kind {
	case KindClaim, KindEligibility, KindPreAuth, string(kap.KindClient), string(kap.KindCoverage), string(kap.KindProvider):
		return true
	}
	return false
}

// Send writes the message's Bundle through the writer and, for a claim or
// an eligibility request, reads the payer's answer. A failed read of the
// answer does not fail the delivery: the request is at the payer, and the
// answer is kept as pending.
func (s *Sender) Send(ctx context.Context, msg kap.OutboxMessage) (kap.SendResult, error) {
	if !takes(msg.Kind) {
		res := kap.SendResult{}
		for _, r := range msg.Resources {
			res.NotSent = append(res.NotSent, kap.NotSent{ResourceType: r.Type, Identifier: r.System + "|" + r.Value,
				Reason: "a payer target takes claims, coverage and eligibility requests only (minimum necessary)"})
		}
		return res, nil
	}
	if msg.Kind == KindPreAuth {
		return s.sendPreAuth(ctx, msg)
	}
	res, err := s.o.Writer.Send(ctx, msg)
	if err != nil || (msg.Kind != KindClaim && msg.Kind != KindEligibility) {
		return res, err
	}
	var req kap.LedgerEntry
	for _, e := range res.Resources {
		if e.ResourceType == msg.Kind {
			req = e
		}
	}
	a := kap.PayerAnswer{Target: s.o.Name, RequestType: msg.Kind, RequestID: req.TargetID,
		RequestVersion: req.VersionID, SubmittedAt: s.o.Now(), Pending: true}
	if req.TargetID != "" {
		if rerr := s.readAnswer(ctx, &a); rerr != nil {
			s.o.Logger.Warn("payer answer not read", "target", s.o.Name, "kind", msg.Kind, "error", rerr.Error())
		}
	}
	key := kap.ClaimAnswerKey(msg.Tenant, msg.RecordID)
	if msg.Kind == KindEligibility {
		key = kap.EligibilityKey(msg.Tenant, msg.RecordID)
	}
	b, _ := json.Marshal(a)
	if err := s.o.Cache.Set(ctx, key, b, kap.PayerAnswerTTL); err != nil {
		// The request is at the payer; the worker retries and the
		// conditional update finds it again.
		return res, fmt.Errorf("payer %s: keep the answer: %w", s.o.Name, err)
	}
	return res, nil
}

// readAnswer searches the payer for the response to the request
// (ClaimResponse?request=Claim/<id>, CoverageEligibilityResponse?request=...)
// and fills the answer with the newest one.
func (s *Sender) readAnswer(ctx context.Context, a *kap.PayerAnswer) error {
	rt := "ClaimResponse"
	if a.RequestType == KindEligibility {
		rt = "CoverageEligibilityResponse"
	}
	q := url.Values{"request": {a.RequestType + "/" + a.RequestID}, "_sort": {"-_lastUpdated"}, "_count": {"1"}}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, s.o.BaseURL+"/"+rt+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	r.Header.Set("Accept", "application/fhir+json")
	resp, err := s.o.Client.Do(r)
	if err != nil {
		return fmt.Errorf("search %s: %w", rt, kap.Errorf(kap.EUNAVAILABLE, "no answer"))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("search %s: read: %w", rt, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("search %s: HTTP %d", rt, resp.StatusCode)
	}
	var bundle struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &bundle); err != nil {
		return fmt.Errorf("search %s: not a Bundle", rt)
	}
	for _, e := range bundle.Entry {
		var head struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
			Outcome      string `json:"outcome"`
			PreAuthRef   string `json:"preAuthRef"`
		}
		if json.Unmarshal(e.Resource, &head) != nil || head.ResourceType != rt {
			continue
		}
		a.ResponseType, a.ResponseID, a.Response, a.Outcome, a.Pending = rt, head.ID, e.Resource, head.Outcome, false
		a.PreAuthRef = head.PreAuthRef
		if rt == "CoverageEligibilityResponse" {
			cr, err := s.o.Codec.Unmarshal(e.Resource)
			if err != nil {
				return fmt.Errorf("the payer's %s does not parse: %w", rt, err)
			}
			if a.Eligibility, err = mapping.ReadEligibilityResponse(cr.GetCoverageEligibilityResponse()); err != nil {
				return fmt.Errorf("the payer's %s: %w", rt, err)
			}
		}
		return nil
	}
	return nil
}

// sendPreAuth submits a Da Vinci PAS request Bundle to Claim/$submit. The
// operation is a POST: before sending, the payer is searched for the
// request's Claim by its identifier, so a submission whose answer was lost
// is not sent again but resolved (its ClaimResponse is read instead). The
// payer's ClaimResponse (outcome, preAuthRef) is kept under
// kap.PreAuthAnswerKey.
func (s *Sender) sendPreAuth(ctx context.Context, msg kap.OutboxMessage) (kap.SendResult, error) {
	var b struct {
		Type  string `json:"type"`
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				Identifier   []struct {
					System string `json:"system"`
					Value  string `json:"value"`
				} `json:"identifier"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(msg.Bundle, &b); err != nil || b.Type != "collection" || len(b.Entry) == 0 ||
		b.Entry[0].Resource.ResourceType != "Claim" || len(b.Entry[0].Resource.Identifier) == 0 {
		return kap.SendResult{}, &kap.SendError{Kind: kap.SendPermanent, Err: fmt.Errorf("not a PAS request Bundle with an identified Claim first")}
	}
	id0 := b.Entry[0].Resource.Identifier[0]
	key := kap.LedgerKey{Tenant: msg.Tenant, Target: s.o.Name, ResourceType: "Claim", Identifier: id0.System + "|" + id0.Value}
	a := kap.PayerAnswer{Target: s.o.Name, RequestType: "Claim", SubmittedAt: s.o.Now(), Pending: true}
	claimID, version, err := s.findClaim(ctx, id0.System, id0.Value)
	if err != nil {
		return kap.SendResult{}, err
	}
	status := 0
	if claimID == "" {
		r, err := http.NewRequestWithContext(ctx, http.MethodPost, s.o.BaseURL+"/Claim/$submit", bytes.NewReader(msg.Bundle))
		if err != nil {
			return kap.SendResult{}, err
		}
		r.Header.Set("Content-Type", "application/fhir+json")
		r.Header.Set("Accept", "application/fhir+json")
		resp, err := s.o.Client.Do(r)
		if err != nil {
			// Sent, maybe received: the next attempt searches first.
			return kap.SendResult{}, &kap.SendError{Kind: kap.SendUnknown, Resources: []kap.LedgerEntry{{LedgerKey: key, State: kap.LedgerUnknown}},
				Err: fmt.Errorf("Claim/$submit: no answer")}
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		resp.Body.Close()
		status = resp.StatusCode
		switch {
		case rerr != nil:
			return kap.SendResult{}, &kap.SendError{Kind: kap.SendUnknown, Status: status, Err: fmt.Errorf("Claim/$submit: the answer was cut off")}
		case status == 408 || status == 425 || status == 429 || status >= 500:
			return kap.SendResult{}, &kap.SendError{Kind: kap.SendTransient, Status: status, RetryAfter: retryAfter(resp.Header.Get("Retry-After")),
				Err: fmt.Errorf("Claim/$submit")}
		case status < 200 || status > 299:
			var oo json.RawMessage
			if json.Valid(body) && bytes.Contains(body, []byte(`"OperationOutcome"`)) {
				oo = body
			}
			return kap.SendResult{}, &kap.SendError{Kind: kap.SendPermanent, Status: status, OperationOutcome: oo, Err: fmt.Errorf("Claim/$submit refused")}
		}
		var rb struct {
			Entry []struct {
				Resource json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if json.Unmarshal(body, &rb) == nil {
			for _, e := range rb.Entry {
				var head struct {
					ResourceType string `json:"resourceType"`
					ID           string `json:"id"`
					Outcome      string `json:"outcome"`
					PreAuthRef   string `json:"preAuthRef"`
				}
				if json.Unmarshal(e.Resource, &head) == nil && head.ResourceType == "ClaimResponse" {
					a.ResponseType, a.ResponseID, a.Response, a.Outcome, a.PreAuthRef, a.Pending =
						head.ResourceType, head.ID, e.Resource, head.Outcome, head.PreAuthRef, false
				}
			}
		}
		if claimID, version, err = s.findClaim(ctx, id0.System, id0.Value); err != nil {
			s.o.Logger.Warn("PAS claim not found after $submit", "target", s.o.Name, "error", err.Error())
		}
	}
	a.RequestID, a.RequestVersion = claimID, version
	if a.Pending && claimID != "" {
		if rerr := s.readAnswer(ctx, &a); rerr != nil {
			s.o.Logger.Warn("payer answer not read", "target", s.o.Name, "kind", msg.Kind, "error", rerr.Error())
		}
	}
	raw, _ := json.Marshal(a)
	if err := s.o.Cache.Set(ctx, kap.PreAuthAnswerKey(msg.Tenant, msg.RecordID), raw, kap.PayerAnswerTTL); err != nil {
		return kap.SendResult{}, fmt.Errorf("payer %s: keep the answer: %w", s.o.Name, err)
	}
	st := kap.LedgerConfirmed
	if claimID == "" {
		st = kap.LedgerSent
	}
	return kap.SendResult{Status: status, Resources: []kap.LedgerEntry{{LedgerKey: key, TargetID: claimID, VersionID: version, State: st}}}, nil
}

// findClaim searches the payer for the Claim with the identifier ("" when
// there is none). Errors are transient.
func (s *Sender) findClaim(ctx context.Context, system, value string) (id, version string, err error) {
	q := url.Values{"identifier": {system + "|" + value}}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, s.o.BaseURL+"/Claim?"+q.Encode(), nil)
	if err != nil {
		return "", "", err
	}
	r.Header.Set("Accept", "application/fhir+json")
	resp, err := s.o.Client.Do(r)
	if err != nil {
		return "", "", &kap.SendError{Kind: kap.SendTransient, Err: fmt.Errorf("search Claim: no answer")}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", "", &kap.SendError{Kind: kap.SendTransient, Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After")),
			Err: fmt.Errorf("search Claim")}
	}
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
				Meta         struct {
					VersionID string `json:"versionId"`
				} `json:"meta"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return "", "", &kap.SendError{Kind: kap.SendTransient, Err: fmt.Errorf("search Claim: not a Bundle")}
	}
	var ids []string
	for _, e := range b.Entry {
		if e.Resource.ResourceType == "Claim" {
			ids = append(ids, e.Resource.ID)
			id, version = e.Resource.ID, e.Resource.Meta.VersionID
		}
	}
	if len(ids) > 1 {
		return "", "", &kap.SendError{Kind: kap.SendPermanent, Err: fmt.Errorf("the payer holds %d Claims with the identifier", len(ids))}
	}
	return id, version, nil
}

// retryAfter reads a Retry-After in seconds (capped at a minute; 0 if
// absent or an HTTP-date).
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, time.Minute)
}
