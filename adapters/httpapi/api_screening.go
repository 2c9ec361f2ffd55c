package httpapi

// POST /kap/v1/clients/{id}/$screening-pull (issue #6, "Pull from EHRs"):
// read the client's medications, conditions, allergies and blood pressures
// from one of the tenant's EHR targets and keep the contraindication hints,
// shown as warnings on the client's latest intake (never as a decision).

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
)

// ScreeningPullFunc pulls the screening data of the patient whose
// identifier is patientIdentifier ("system|value") from the tenant's target.
// It returns ENOTFOUND for a target the tenant does not have. A pull cut
// short returns the partial hints (Incomplete set) with an error.
type ScreeningPullFunc func(ctx context.Context, tenant, target, patientIdentifier string) (*kap.ScreeningHints, error)

// ScreeningAnswer is the body of POST .../$screening-pull.
type ScreeningAnswer struct {
	ClientID string              `json:"clientId"`
	Complete bool                `json:"complete"`
	Hints    *kap.ScreeningHints `json:"hints"`
	// Warnings are the hints as they show on the client's latest intake.
	Warnings []kap.Issue `json:"warnings"`
}

// screeningHints returns the stored hints of a client (nil when none).
func (s *server) screeningHints(ctx context.Context, tenant, clientID string) *kap.ScreeningHints {
	b, err := s.cfg.Store.Cache().Get(ctx, kap.ScreeningKey(tenant, clientID))
	if err != nil {
		return nil
	}
	var h kap.ScreeningHints
	if json.Unmarshal(b, &h) != nil {
		return nil
	}
	return &h
}

// screeningPullOp is POST /kap/v1/clients/{id}/$screening-pull?target=.
// The EHR finds the patient by the gateway's own Patient identifier (the
// one every delivered Patient carries). 200 with the hints (complete:false
// when a search failed: the partial hints are kept, marked incomplete);
// 502 when the EHR refused or failed, 504 when it did not answer in time,
// 404 when the EHR has no such patient.
func (s *server) screeningPullOp(c *gin.Context) {
	kind, ok := s.collection(c)
	if !ok {
		return
	}
	if kind != kap.KindClient {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "$screening-pull applies to clients"))
		return
	}
	if s.cfg.ScreeningPull == nil {
		s.fail(c, kap.Errorf(kap.ENOTIMPLEMENTED, "screening pulls are not configured in this process"))
		return
	}
	target := c.Query("target")
	if err := kap.ValidateName("target", target); err != nil {
		s.fail(c, badQuery("target", "is required: the name of one of the tenant's EHR targets"))
		return
	}
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	m, rec, ok := s.operationRecord(c, tenant, kind)
	if !ok {
		return
	}
	clientID := rec.RecordID()
	h, err := s.cfg.ScreeningPull(ctx, tenant, target, m.System("Patient")+"|"+clientID)
	if h != nil {
		h.Target = target
		if b, merr := json.Marshal(h); merr == nil {
			if serr := s.cfg.Store.Cache().Set(ctx, kap.ScreeningKey(tenant, clientID), b, kap.ScreeningHintsTTL); serr != nil {
				s.fail(c, serr)
				return
			}
		}
	}
	if err != nil && h == nil {
		code := kap.ErrorCode(err)
		switch {
		case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
			s.failStatus(c, http.StatusGatewayTimeout, kap.Errorf(kap.EUNAVAILABLE, "the EHR did not answer in time"))
		case code == kap.ENOTFOUND || code == kap.EINVALID || code == kap.ECONFLICT:
			s.fail(c, err)
		default:
			s.failStatus(c, http.StatusBadGateway, kap.Errorf(kap.EUNAVAILABLE, "the EHR did not give the screening data: %s", safeMessage(err)))
		}
		return
	}
	if h == nil {
		s.fail(c, kap.Errorf(kap.EINTERNAL, "the screening pull returned nothing"))
		return
	}
	w := h.Warnings()
	if w == nil {
		w = []kap.Issue{}
	}
	c.JSON(http.StatusOK, ScreeningAnswer{ClientID: clientID, Complete: h.Complete(), Hints: h, Warnings: w})
}

// safeMessage is the kap.Error message of err (no issues, no cause): the
// pull's errors hold no identifier or URL query.
func safeMessage(err error) string {
	var ke *kap.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return "the request failed"
}
