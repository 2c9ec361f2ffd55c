package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/internal/config"
)

// Delivery states of the deliveries report.
const (
	DeliveryQueued       = "queued"
	DeliveryInFlight     = "in-flight"
	DeliveryRetrying     = "retrying"
	DeliveryDeadLettered = "dead-lettered"
	DeliveryDelivered    = "delivered"
	DeliveryUnknown      = "unknown" // sent, no answer: resolved by reading the target
	DeliveryNotSent      = "not-sent"
)

// DeliveryReport is the body of GET .../deliveries: where one version of a
// record is, per target and per resource of its Bundle.
type DeliveryReport struct {
	Kind    string           `json:"kind"`
	ID      string           `json:"id"`
	Version int              `json:"version"`
	Targets []TargetDelivery `json:"targets"`
}

// TargetDelivery is the state of the version's outbox message at one target.
type TargetDelivery struct {
	Target        string             `json:"target"`
	Message       string             `json:"message"` // outbox message id
	State         string             `json:"state"`
	Reason        string             `json:"reason,omitempty"` // not-sent: why; dead-lettered: the worker's reason
	EnqueuedAt    *time.Time         `json:"enqueuedAt,omitempty"`
	LeaseDeadline *time.Time         `json:"leaseDeadline,omitempty"`
	NextAttempt   *time.Time         `json:"nextAttempt,omitempty"`
	DeadAt        *time.Time         `json:"deadAt,omitempty"`
	Attempts      int                `json:"attempts"`
	LastAttempt   *AttemptReport     `json:"lastAttempt,omitempty"`
	Resources     []ResourceDelivery `json:"resources"`
}

// AttemptReport is one delivery attempt, with what the target answered.
type AttemptReport struct {
	At               time.Time       `json:"at"`
	Status           int             `json:"status,omitempty"`
	Error            string          `json:"error,omitempty"`
	RetryAfter       string          `json:"retryAfter,omitempty"`
	OperationOutcome json.RawMessage `json:"operationOutcome,omitempty"`
}

// ResourceDelivery is one resource of the Bundle at a target: its state and,
// from the delivery ledger, the id and version the target gave it (the last
// write, which may be of an earlier version of the record).
type ResourceDelivery struct {
	ResourceType string     `json:"resourceType"`
	Identifier   string     `json:"identifier"` // system|value
	State        string     `json:"state"`
	TargetID     string     `json:"targetId,omitempty"`
	VersionID    string     `json:"versionId,omitempty"`
	UpdatedAt    *time.Time `json:"updatedAt,omitempty"`
	Error        string     `json:"error,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// findRecord resolves the record of a deliveries request: the collection
// of the URL, or for /kap/v1/records/{id} the collection query parameter or
// the one collection holding the id.
func (s *server) findRecord(c *gin.Context) (kap.StoredRecord, bool) {
	tenant, ctx, id := c.GetString(ctxTenant), c.Request.Context(), c.Param("id")
	if kap.ValidateID("id", id) != nil {
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "no such record"))
		return kap.StoredRecord{}, false
	}
	coll := c.Param("collection")
	if c.Param("collection") == AllRecords {
		// The route's scope check knows no kind here: check it now.
		types := allKindTypes()
		if q := c.Query("collection"); q != "" {
			coll = q
			types = KindResourceTypes[Collections[q]]
		}
		if !s.allowsTypes(c, types, config.PermRead) {
			return kap.StoredRecord{}, false
		}
	}
	var kinds []kap.Kind
	if coll == AllRecords {
		kinds = kap.Kinds
	} else if k, ok := Collections[coll]; ok {
		kinds = []kap.Kind{k}
	} else {
		s.fail(c, errUnknownCollection)
		return kap.StoredRecord{}, false
	}
	version := 0
	if v := c.Query("version"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.fail(c, badQuery("version", "must be a positive integer"))
			return kap.StoredRecord{}, false
		}
		version = n
	}
	var found []kap.StoredRecord
	for _, k := range kinds {
		var sr kap.StoredRecord
		var err error
		if version > 0 {
			sr, err = s.cfg.Store.Records().GetVersion(ctx, tenant, string(k), id, version)
		} else {
			sr, err = s.cfg.Store.Records().Get(ctx, tenant, string(k), id)
		}
		if kap.ErrorCode(err) == kap.ENOTFOUND {
			continue
		} else if err != nil {
			s.fail(c, err)
			return kap.StoredRecord{}, false
		}
		found = append(found, sr)
	}
	switch len(found) {
	case 0:
		s.fail(c, kap.Errorf(kap.ENOTFOUND, "no such record"))
		return kap.StoredRecord{}, false
	case 1:
		return found[0], true
	}
	s.fail(c, badQuery("collection", "is required: records of several collections have this id"))
	return kap.StoredRecord{}, false
}

// deliveries is GET /kap/v1/{collection}/{id}/deliveries (and
// /kap/v1/records/{id}/deliveries): the delivery state of the latest version
// (or ?version=n) at every target of the tenant, from Outbox.Status and the
// delivery ledger.
func (s *server) deliveries(c *gin.Context) {
	sr, ok := s.findRecord(c)
	if !ok {
		return
	}
	tenant, ctx := c.GetString(ctxTenant), c.Request.Context()
	msgID := kap.MessageFor(sr, "", time.Time{}).ID
	var decisions map[string]targetDecision // computed when a target shows nothing
	report := DeliveryReport{Kind: sr.Kind, ID: sr.ID, Version: sr.Version, Targets: []TargetDelivery{}}
	for _, p := range s.policies(tenant) {
		td := TargetDelivery{Target: p.Name, Message: msgID, Resources: []ResourceDelivery{}}
		st, err := s.cfg.Store.Outbox().Status(ctx, tenant, p.Name, msgID)
		inOutbox := err == nil
		if err != nil && kap.ErrorCode(err) != kap.ENOTFOUND {
			s.fail(c, err)
			return
		}
		if inOutbox {
			td.State = string(st.State)
			if st.State == kap.MessageDead {
				td.State = DeliveryDeadLettered
				td.Reason = st.Reason
			}
			td.EnqueuedAt, td.LeaseDeadline = timePtr(st.EnqueuedAt), timePtr(st.LeaseDeadline)
			td.NextAttempt, td.DeadAt = timePtr(st.NextAttempt), timePtr(st.DeadAt)
			td.Attempts = len(st.Attempts)
			if n := len(st.Attempts); n > 0 {
				a := st.Attempts[n-1]
				td.LastAttempt = &AttemptReport{At: a.At, Status: a.Status, Error: a.Error, OperationOutcome: a.OperationOutcome}
				if a.RetryAfter > 0 {
					td.LastAttempt.RetryAfter = a.RetryAfter.String()
				}
			}
		}
		seen := false // this version's write is in the ledger for some resource
		for _, ref := range sr.Resources {
			rd := ResourceDelivery{ResourceType: ref.Type, Identifier: ref.System + "|" + ref.Value}
			e, err := s.cfg.Store.Ledger().Get(ctx, kap.LedgerKey{Tenant: tenant, Target: p.Name,
				ResourceType: ref.Type, Identifier: rd.Identifier})
			inLedger := err == nil
			if err != nil && kap.ErrorCode(err) != kap.ENOTFOUND {
				s.fail(c, err)
				return
			}
			// A ledger entry written before this version was stored is an
			// earlier version's write: it shows where the resource is,
			// not that this version got there.
			fresh := inLedger && !e.UpdatedAt.Before(sr.StoredAt)
			if inLedger {
				rd.TargetID, rd.VersionID, rd.UpdatedAt, rd.Error = e.TargetID, e.VersionID, timePtr(e.UpdatedAt), e.LastError
			}
			seen = seen || fresh
			switch {
			case inLedger && e.State == kap.LedgerUnknown:
				rd.State = DeliveryUnknown
			case inOutbox:
				rd.State = td.State
			case fresh && (e.State == kap.LedgerConfirmed || e.State == kap.LedgerSent):
				rd.State = DeliveryDelivered
			default:
				rd.State = DeliveryNotSent
			}
			td.Resources = append(td.Resources, rd)
		}
		if !inOutbox {
			// Acknowledged (delivered) or never queued for this target.
			td.State = DeliveryDelivered
			if !seen {
				td.State = DeliveryNotSent
				if decisions == nil {
					decisions = s.currentDecisions(c, sr)
				}
				if d, ok := decisions[p.Name]; ok && !d.Allow {
					td.Reason = d.Reason
				} else {
					td.Reason = "not queued for this target, or the target's write profile took none of its resources"
				}
			}
		}
		report.Targets = append(report.Targets, td)
	}
	c.JSON(http.StatusOK, report)
}

// currentDecisions is what decideTargets says of the record today (a
// consent may have changed since the version was queued).
func (s *server) currentDecisions(c *gin.Context, sr kap.StoredRecord) map[string]targetDecision {
	out := map[string]targetDecision{}
	rec, err := kap.DecodeRecord(sr.Record)
	if err != nil {
		return out
	}
	ds, err := s.decideTargets(c.Request.Context(), sr.Tenant, rec)
	if err != nil {
		return out
	}
	for _, d := range ds {
		out[d.Policy.Name] = d
	}
	return out
}
