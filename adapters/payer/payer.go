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
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
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
	case KindClaim, KindEligibility, string(kap.KindClient), string(kap.KindCoverage), string(kap.KindProvider):
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
		}
		if json.Unmarshal(e.Resource, &head) != nil || head.ResourceType != rt {
			continue
		}
		a.ResponseType, a.ResponseID, a.Response, a.Outcome, a.Pending = rt, head.ID, e.Resource, head.Outcome, false
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
