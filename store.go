package kap

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode"
)

// This file declares the durable state layer: the record store, the sync
// outbox, the delivery ledger, the cache, idempotency keys and rate-limit
// counters. Two adapters implement it: adapters/redis (shared by several
// gateway replicas) and adapters/bolt (the embedded one-file default). One
// contract suite (adapters/storetest) runs against both. See
// docs/durability.md for the guarantees and the key layout.

// Store bundles the parts of the durable state layer that one backend
// provides. Records().Put with PutOptions.Targets stores a record and queues
// it for delivery in one transaction.
type Store interface {
	Records() RecordStore
	Outbox() Outbox
	Ledger() Ledger
	Cache() Cache
	Idempotency() Idempotency
	RateLimiter() RateLimiter
	// Close releases the backend. It does not delete data.
	Close() error
}

// ResourceRef names a FHIR resource mapped from a record by its business
// identifier (Identifier.system and Identifier.value).
type ResourceRef struct {
	Type   string `json:"type"`
	System string `json:"system"`
	Value  string `json:"value"`
}

// StoredRecord is one version of a domain record together with the FHIR
// Bundle mapped from it. Record and Bundle are opaque to the store.
type StoredRecord struct {
	Tenant      string          `json:"tenant"`
	Kind        string          `json:"kind"`     // record kind, e.g. "DosingSession"
	ID          string          `json:"id"`       // the clinic's business id of the record
	ClientID    string          `json:"clientId"` // the clinic's client the record is about
	Version     int             `json:"version"`  // set by the store: 1, 2, ...
	ContentHash string          `json:"contentHash"`
	Date        time.Time       `json:"date"` // clinical date, for listing
	Record      json.RawMessage `json:"record,omitempty"`
	Bundle      json.RawMessage `json:"bundle,omitempty"`
	Resources   []ResourceRef   `json:"resources,omitempty"`
	StoredAt    time.Time       `json:"storedAt"` // set by the store
}

// PutOptions qualify RecordStore.Put.
type PutOptions struct {
	// IfMatch, when > 0, is the version the caller expects to be the latest
	// (HTTP If-Match). Put returns EPRECONDITION when it is not.
	IfMatch int
	// IfNoneMatch demands creation (HTTP If-None-Match: *): Put returns
	// EPRECONDITION when any version of the record exists, even one with
	// the same content. Of concurrent first writes exactly one succeeds.
	IfNoneMatch bool
	// Targets are the delivery targets the new version is queued for, in
	// the same transaction as the record itself. Nothing is queued when the
	// content equals the latest version.
	Targets []string
}

// ListQuery selects records of one client by clinical date.
type ListQuery struct {
	From, To time.Time // inclusive bounds on Date; zero means unbounded
	Limit    int       // at most this many (default 100, max 1000)
	Cursor   string    // from the previous page; "" for the first page
	// Kinds, when set, selects records of these kinds only; the others
	// are skipped without being read, and a page still holds up to Limit.
	Kinds []string
}

// PageSize returns the limit every implementation applies: Limit, or 100
// when unset, and never more than 1000.
func (q ListQuery) PageSize() int {
	if q.Limit <= 0 {
		return 100
	}
	return min(q.Limit, 1000)
}

// RetentionPolicy prunes old versions from the history. The latest version of
// a record is never pruned. Zero values disable a rule.
type RetentionPolicy struct {
	MaxAge      time.Duration // prune versions stored longer ago than this
	MaxVersions int           // keep at most this many versions per record
	// KeepQueuedFor lists delivery targets: a version whose outbox message
	// (MessageFor's id) is still queued, in flight or dead-lettered for one
	// of them is kept whatever its age, so that what is still to be
	// delivered, or was refused, stays readable in the history.
	KeepQueuedFor []string
}

// RecordStore keeps the latest version and the history of every record of a
// tenant. Every method is scoped by tenant; nothing crosses tenants.
type RecordStore interface {
	// Put stores rec (Tenant, Kind, ID, ClientID and ContentHash required)
	// as the next version and, when opt.Targets is set, queues one outbox
	// message per target in the same transaction. When rec.ContentHash
	// equals the latest version's, nothing is written and the latest
	// version is returned with created=false. Returns EINVALID for a
	// missing or malformed field, EPRECONDITION when opt.IfMatch is not the
	// latest version.
	Put(ctx context.Context, rec StoredRecord, opt PutOptions) (stored StoredRecord, created bool, err error)
	// Get returns the latest version. Returns ENOTFOUND if there is none.
	Get(ctx context.Context, tenant, kind, id string) (StoredRecord, error)
	// GetVersion returns one version. Returns ENOTFOUND if it does not
	// exist or was pruned.
	GetVersion(ctx context.Context, tenant, kind, id string, version int) (StoredRecord, error)
	// History returns the kept versions, newest first. Returns ENOTFOUND
	// if the record does not exist.
	History(ctx context.Context, tenant, kind, id string) ([]StoredRecord, error)
	// ListByClient returns the latest versions of a client's records
	// ordered by Date then kind and id, and a cursor for the next page
	// ("" at the end). Returns EINVALID for a malformed cursor.
	ListByClient(ctx context.Context, tenant, clientID string, q ListQuery) (recs []StoredRecord, next string, err error)
	// Lookup returns the latest version of the record whose latest version
	// maps to the FHIR resource with that business identifier. Returns
	// ENOTFOUND if none does.
	Lookup(ctx context.Context, tenant string, ref ResourceRef) (StoredRecord, error)
	// Prune removes versions the policy no longer keeps and returns how
	// many it removed.
	Prune(ctx context.Context, tenant string, p RetentionPolicy) (int, error)
}

// OutboxMessage is one record version to deliver to one target.
type OutboxMessage struct {
	ID         string          `json:"id"` // unique per (tenant, target); "<kind>/<id>/<version>" for records
	Tenant     string          `json:"tenant"`
	Target     string          `json:"target"`
	ClientID   string          `json:"clientId"` // ordering key: one in flight per (target, client)
	Kind       string          `json:"kind"`
	RecordID   string          `json:"recordId"`
	Version    int             `json:"version"`
	Record     json.RawMessage `json:"record,omitempty"`
	Bundle     json.RawMessage `json:"bundle,omitempty"`
	Resources  []ResourceRef   `json:"resources,omitempty"`
	EnqueuedAt time.Time       `json:"enqueuedAt"`
	Attempts   []Attempt       `json:"attempts,omitempty"`
	// Replays is how many times the message was replayed from the dead
	// letters (set by Outbox.Replay).
	Replays int `json:"replays,omitempty"`
	// ReplayedAttempts is len(Attempts) at the last replay (set by
	// Outbox.Replay): the attempts before it are kept as history, and only
	// the later ones count against Backoff.MaxAttempts, so a replayed
	// message gets a fresh attempt budget.
	ReplayedAttempts int `json:"replayedAttempts,omitempty"`
}

// AttemptsSinceReplay is how many attempts count against the message's
// attempt budget: those made since the last replay (all of them when it was
// never replayed).
func (m OutboxMessage) AttemptsSinceReplay() int {
	return max(0, len(m.Attempts)-m.ReplayedAttempts)
}

// Attempt is the outcome of one delivery attempt.
type Attempt struct {
	At               time.Time       `json:"at"`
	Status           int             `json:"status,omitempty"` // HTTP status; 0 if no response
	Error            string          `json:"error,omitempty"`  // no PHI
	RetryAfter       time.Duration   `json:"retryAfter,omitempty"`
	OperationOutcome json.RawMessage `json:"operationOutcome,omitempty"` // what the target answered
}

// Lease is a message handed to one worker until Deadline. Token fences it: a
// worker whose lease was reclaimed cannot Ack, Retry or DeadLetter with its
// old token.
type Lease struct {
	Message  OutboxMessage
	Token    string
	Deadline time.Time
}

// DeadLetter is a message that will not be retried: its full context (record,
// Bundle, every attempt with the target's OperationOutcome) and why.
type DeadLetter struct {
	Message OutboxMessage `json:"message"`
	Reason  string        `json:"reason"`
	DeadAt  time.Time     `json:"deadAt"`
}

// OutboxStats describes the queue of one target across tenants.
type OutboxStats struct {
	Depth       int       // messages waiting or in flight
	Oldest      time.Time // EnqueuedAt of the oldest; zero if empty
	DeadLetters int
}

// Outbox delivers messages at least once, per target, in enqueue order per
// client: at most one message of a (target, client) is in flight, and a
// message waiting for a retry holds back that client's later messages only.
type Outbox interface {
	// Enqueue appends messages (Tenant, Target, ClientID, ID required) to
	// their clients' queues atomically. A message whose ID is already
	// queued or dead-lettered in that (tenant, target) is not queued again.
	// Returns EINVALID for a missing field.
	Enqueue(ctx context.Context, msgs ...OutboxMessage) error
	// Lease hands out up to max messages of target that are due: the head
	// message of clients that have nothing in flight, including leases
	// that expired (their worker is presumed dead).
	Lease(ctx context.Context, target string, max int) ([]Lease, error)
	// Ack removes a delivered message and releases the client's next one.
	// Returns ECONFLICT if the lease was reclaimed by another worker or
	// the message is gone.
	Ack(ctx context.Context, l Lease) error
	// Retry records the attempt and makes the message due again at `at`;
	// until then the client's later messages wait. Returns ECONFLICT like
	// Ack.
	Retry(ctx context.Context, l Lease, at time.Time, a Attempt) error
	// DeadLetter records the last attempt, moves the message to the dead
	// letters and releases the client's next message. Returns ECONFLICT
	// like Ack.
	DeadLetter(ctx context.Context, l Lease, reason string, a Attempt) error
	// DeadLetters lists a tenant's dead letters of target, oldest first.
	DeadLetters(ctx context.Context, tenant, target string, limit int) ([]DeadLetter, error)
	// Replay queues a dead letter again at the end of its client's queue,
	// keeping its attempts as history with a fresh attempt budget: it
	// increments Replays and sets ReplayedAttempts to len(Attempts).
	// Returns ENOTFOUND if there is no such dead letter.
	Replay(ctx context.Context, tenant, target, id string) error
	// Discard removes a dead letter for good (an operator's decision that
	// it must not be delivered; the caller audits it): it is no longer
	// listed, counted by Stats or reported by Status, and Replay cannot
	// bring it back. reason is for the caller's audit trail (no PHI); the
	// store does not keep it. Returns ENOTFOUND if there is no such dead
	// letter.
	Discard(ctx context.Context, tenant, target, id, reason string) error
	// ReplayAll replays every dead letter of a tenant's target and returns
	// how many.
	ReplayAll(ctx context.Context, tenant, target string) (int, error)
	// Stats returns the depth, the oldest message and the dead-letter count
	// of target across tenants.
	Stats(ctx context.Context, target string) (OutboxStats, error)
	// Release gives a leased message back without recording an attempt
	// (a worker shutting down): it is due again at once, still at the
	// head of its client's queue. Returns ECONFLICT like Ack.
	Release(ctx context.Context, l Lease) error
	// Status returns the state of one message of a tenant's target in
	// O(1) (bbolt: O(log n)). Returns ENOTFOUND when the message is not
	// queued and not dead-lettered: it was delivered (acknowledged) or
	// never queued.
	Status(ctx context.Context, tenant, target, id string) (MessageStatus, error)
}

// MessageState is where a message is in the outbox.
type MessageState string

// The states Outbox.Status reports.
const (
	// MessageQueued: waiting to be leased (due now, or behind an earlier
	// message of the same client).
	MessageQueued MessageState = "queued"
	// MessageInFlight: leased by a worker until LeaseDeadline.
	MessageInFlight MessageState = "in-flight"
	// MessageRetrying: at least one attempt failed; due again at
	// NextAttempt (zero when it is due now).
	MessageRetrying MessageState = "retrying"
	// MessageDead: dead-lettered; Reason and the attempts say why.
	MessageDead MessageState = "dead"
)

// MessageStatus is the state of one outbox message.
type MessageStatus struct {
	ID            string       `json:"id"`
	State         MessageState `json:"state"`
	EnqueuedAt    time.Time    `json:"enqueuedAt"`
	LeaseDeadline time.Time    `json:"leaseDeadline,omitzero"` // in-flight
	NextAttempt   time.Time    `json:"nextAttempt,omitzero"`   // retrying
	Attempts      []Attempt    `json:"attempts,omitempty"`     // with the target's OperationOutcome
	Reason        string       `json:"reason,omitempty"`       // dead
	DeadAt        time.Time    `json:"deadAt,omitzero"`        // dead
}

// LedgerState is the state of the last write of a resource to a target.
type LedgerState string

// Ledger states. Unknown means the request was sent and no answer came (a
// timeout): it must be resolved by reading the target, never retried blindly
// as a new create.
const (
	LedgerSent      LedgerState = "sent"
	LedgerConfirmed LedgerState = "confirmed"
	LedgerFailed    LedgerState = "failed"
	LedgerUnknown   LedgerState = "unknown"
)

// Valid reports whether s is one of the four states.
func (s LedgerState) Valid() bool {
	switch s {
	case LedgerSent, LedgerConfirmed, LedgerFailed, LedgerUnknown:
		return true
	}
	return false
}

// LedgerKey names one resource at one target.
type LedgerKey struct {
	Tenant       string `json:"tenant"`
	Target       string `json:"target"`
	ResourceType string `json:"resourceType"`
	Identifier   string `json:"identifier"` // "system|value"
}

// LedgerEntry is what the gateway knows of a resource at a target.
type LedgerEntry struct {
	LedgerKey
	TargetID  string      `json:"targetId,omitempty"`  // the id the target assigned
	VersionID string      `json:"versionId,omitempty"` // the target's meta.versionId
	State     LedgerState `json:"state"`
	UpdatedAt time.Time   `json:"updatedAt"` // set by the store
	LastError string      `json:"lastError,omitempty"`
}

// Ledger keeps, per (tenant, target, resource type, business identifier),
// the target's id and version and the state of the last write.
type Ledger interface {
	// Get returns the entry. Returns ENOTFOUND if there is none.
	Get(ctx context.Context, k LedgerKey) (LedgerEntry, error)
	// Put writes the entry. Returns EINVALID for a missing key field or an
	// invalid state.
	Put(ctx context.Context, e LedgerEntry) error
	// PutAll writes the entries like Put, in one transaction per (tenant,
	// target) (bbolt: all in one): the entries of one delivered record
	// version (65 for a dosing session) cost one write instead of one each.
	// opt.KeepUnknown applies the delivery worker's rule atomically with
	// the write. Returns EINVALID, naming the entry, before writing
	// anything when an entry is invalid. A key given twice keeps the last
	// entry.
	PutAll(ctx context.Context, entries []LedgerEntry, opt LedgerPutOptions) error
	// ListByState returns up to limit entries of a tenant's target in state.
	ListByState(ctx context.Context, tenant, target string, state LedgerState, limit int) ([]LedgerEntry, error)
}

// LedgerPutOptions qualify Ledger.PutAll.
type LedgerPutOptions struct {
	// KeepUnknown: a failed entry does not replace a stored unknown one
	// (a write was sent and no answer came; only a read of the target may
	// resolve it): the stored state stays unknown and the new LastError is
	// written. And a failed or unknown entry without a TargetID keeps the
	// stored TargetID and VersionID.
	KeepUnknown bool
}

// MergeLedgerEntry returns next as PutAll with KeepUnknown writes it over the
// stored prev: a failed or unknown next keeps prev's target id and version
// when it has none, and stays unknown when prev is unknown.
func MergeLedgerEntry(prev, next LedgerEntry) LedgerEntry {
	if next.State != LedgerFailed && next.State != LedgerUnknown {
		return next
	}
	if next.TargetID == "" {
		next.TargetID, next.VersionID = prev.TargetID, prev.VersionID
	}
	if prev.State == LedgerUnknown {
		next.State = LedgerUnknown
	}
	return next
}

// Cache keeps values until their TTL passes. Keys are chosen by the caller
// and should carry the tenant when the value belongs to one.
type Cache interface {
	// Get returns the value. Returns ENOTFOUND if it is missing or expired.
	Get(ctx context.Context, key string) ([]byte, error)
	// Set stores the value for ttl (> 0). Returns EINVALID for ttl <= 0.
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Delete removes the value; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// CacheToken stores an access token in c so that it is served until skew
// before its expiry. A token that expires within skew is not stored.
func CacheToken(ctx context.Context, c Cache, key, token string, expiry time.Time, skew time.Duration, now time.Time) error {
	ttl := expiry.Add(-skew).Sub(now)
	if ttl <= 0 {
		return nil
	}
	return c.Set(ctx, key, []byte(token), ttl)
}

// IdempotencyTTL is how long the first response to an Idempotency-Key is
// kept.
const IdempotencyTTL = 24 * time.Hour

// StoredResponse is the first response given to an Idempotency-Key.
type StoredResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    []byte            `json:"body,omitempty"`
}

// The ECONFLICT errors of Idempotency.Reserve; adapters return these values
// so callers can tell them apart with errors.Is.
var (
	ErrIdempotencyKeyReused   = Errorf(ECONFLICT, "the Idempotency-Key was used for a different request")
	ErrIdempotencyKeyInFlight = Errorf(ECONFLICT, "a request with this Idempotency-Key is in progress")
)

// Idempotency remembers the first response to an Idempotency-Key of a tenant.
type Idempotency interface {
	// Reserve claims key for a request whose content hashes to
	// fingerprint. It returns (nil, nil) when the caller should process the
	// request and then Complete (or Release) it, and the stored response
	// when the key was completed within IdempotencyTTL. Returns ECONFLICT
	// while another request with the key is in flight (a reservation
	// expires after the adapter's in-flight timeout) and when the key was
	// used with a different fingerprint.
	Reserve(ctx context.Context, tenant, key, fingerprint string) (*StoredResponse, error)
	// Complete stores the response for IdempotencyTTL. Returns ENOTFOUND
	// if the key is not reserved.
	Complete(ctx context.Context, tenant, key string, resp StoredResponse) error
	// Release drops a reservation (the request failed and may be retried).
	Release(ctx context.Context, tenant, key string) error
}

// RateLimiter is a token bucket per key (a client credential), shared by all
// gateway replicas using the same backend.
type RateLimiter interface {
	// Allow takes one token from the bucket of key that refills at rate
	// tokens per second up to burst. When none is left it returns false and
	// how long until one is. Returns EINVALID for rate <= 0 or burst < 1.
	Allow(ctx context.Context, key string, rate float64, burst int) (allowed bool, retryAfter time.Duration, err error)
}

// Backoff is the retry policy of a delivery: exponential backoff with full
// jitter, honouring (up to MaxRetryAfter) a Retry-After the target gave.
type Backoff struct {
	Base          time.Duration // first ceiling; default 1s
	Max           time.Duration // ceiling cap; default 10m
	MaxAttempts   int           // attempts before dead-lettering; default 10
	MaxRetryAfter time.Duration // cap on a target's Retry-After; default 1h
	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = time.Second
	}
	if b.Max <= 0 {
		b.Max = 10 * time.Minute
	}
	if b.MaxAttempts <= 0 {
		b.MaxAttempts = 10
	}
	if b.MaxRetryAfter <= 0 {
		b.MaxRetryAfter = time.Hour
	}
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
	return b
}

// Delay returns how long to wait after attempt (1 for the first) failed: a
// uniform random duration in [0, min(Max, Base*2^(attempt-1))], but at least
// retryAfter when the target sent one (capped at MaxRetryAfter).
func (b Backoff) Delay(attempt int, retryAfter time.Duration) time.Duration {
	b = b.withDefaults()
	if attempt < 1 {
		attempt = 1
	}
	ceil := float64(b.Base) * math.Pow(2, float64(attempt-1))
	if ceil > float64(b.Max) || math.IsInf(ceil, 0) {
		ceil = float64(b.Max)
	}
	d := time.Duration(b.Rand() * ceil)
	if retryAfter > 0 {
		retryAfter = min(retryAfter, b.MaxRetryAfter)
		d = max(d, retryAfter)
	}
	return d
}

// Next returns when to try again after attempt failed at now, and false when
// attempt was the last one.
func (b Backoff) Next(now time.Time, attempt int, retryAfter time.Duration) (time.Time, bool) {
	if attempt >= b.withDefaults().MaxAttempts {
		return time.Time{}, false
	}
	return now.Add(b.Delay(attempt, retryAfter)), true
}

// ValidateName checks a tenant, target or record kind: 1 to 64 characters of
// letters, digits, '.', '_' and '-'. Returns EINVALID naming field.
func ValidateName(field, v string) error {
	if v == "" {
		return Errorf(EINVALID, "%s is required", field)
	}
	if len(v) > 64 {
		return Errorf(EINVALID, "%s is longer than 64 characters", field)
	}
	for _, r := range v {
		if !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) || r == '.' || r == '_' || r == '-') {
			return Errorf(EINVALID, "%s may hold only letters, digits, '.', '_' and '-'", field)
		}
	}
	return nil
}

// ValidateID checks a business id, client id or key: 1 to 256 characters, no
// control characters. Returns EINVALID naming field.
func ValidateID(field, v string) error {
	if v == "" {
		return Errorf(EINVALID, "%s is required", field)
	}
	if len(v) > 256 {
		return Errorf(EINVALID, "%s is longer than 256 characters", field)
	}
	for _, r := range v {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return Errorf(EINVALID, "%s holds a control or invalid character", field)
		}
	}
	return nil
}

// ValidateRecord checks the fields of rec that Put requires.
func ValidateRecord(rec StoredRecord) error {
	if err := ValidateName("tenant", rec.Tenant); err != nil {
		return err
	}
	if err := ValidateName("kind", rec.Kind); err != nil {
		return err
	}
	if err := ValidateID("id", rec.ID); err != nil {
		return err
	}
	if err := ValidateID("clientId", rec.ClientID); err != nil {
		return err
	}
	if rec.ContentHash == "" {
		return Errorf(EINVALID, "contentHash is required")
	}
	for i, r := range rec.Resources {
		if err := ValidateName(fmt.Sprintf("resources[%d].type", i), r.Type); err != nil {
			return err
		}
		if err := ValidateID(fmt.Sprintf("resources[%d].value", i), r.Value); err != nil {
			return err
		}
		if r.System != "" {
			if err := ValidateID(fmt.Sprintf("resources[%d].system", i), r.System); err != nil {
				return err
			}
		}
	}
	return nil
}

// ValidateMessage checks the fields of m that Enqueue requires.
func ValidateMessage(m OutboxMessage) error {
	if err := ValidateName("tenant", m.Tenant); err != nil {
		return err
	}
	if err := ValidateName("target", m.Target); err != nil {
		return err
	}
	if err := ValidateID("clientId", m.ClientID); err != nil {
		return err
	}
	return ValidateID("id", m.ID)
}

// ValidateLedgerEntry checks what Ledger.Put requires of e.
func ValidateLedgerEntry(e LedgerEntry) error {
	if err := ValidateLedgerKey(e.LedgerKey); err != nil {
		return err
	}
	if !e.State.Valid() {
		return Errorf(EINVALID, "state must be sent, confirmed, failed or unknown")
	}
	return nil
}

// ValidateLedgerKey checks a ledger key.
func ValidateLedgerKey(k LedgerKey) error {
	if err := ValidateName("tenant", k.Tenant); err != nil {
		return err
	}
	if err := ValidateName("target", k.Target); err != nil {
		return err
	}
	if err := ValidateName("resourceType", k.ResourceType); err != nil {
		return err
	}
	return ValidateID("identifier", k.Identifier)
}

// MessageFor returns the outbox message that queues rec for target.
func MessageFor(rec StoredRecord, target string, now time.Time) OutboxMessage {
	return OutboxMessage{
		ID:         rec.Kind + "/" + rec.ID + "/" + strconv.Itoa(rec.Version),
		Tenant:     rec.Tenant,
		Target:     target,
		ClientID:   rec.ClientID,
		Kind:       rec.Kind,
		RecordID:   rec.ID,
		Version:    rec.Version,
		Record:     rec.Record,
		Bundle:     rec.Bundle,
		Resources:  rec.Resources,
		EnqueuedAt: now,
	}
}

// ValidateRecordKey checks the (tenant, kind, id) key of a stored record;
// every RecordStore implementation calls it first.
func ValidateRecordKey(tenant, kind, id string) error {
	if err := ValidateName("tenant", tenant); err != nil {
		return err
	}
	if err := ValidateName("kind", kind); err != nil {
		return err
	}
	return ValidateID("id", id)
}

// ValidateIdempotencyKey checks the (tenant, key) of an idempotency entry.
func ValidateIdempotencyKey(tenant, key string) error {
	if err := ValidateName("tenant", tenant); err != nil {
		return err
	}
	return ValidateID("idempotencyKey", key)
}
