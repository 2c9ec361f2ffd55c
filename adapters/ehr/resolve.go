package ehr

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpclient"
)

// maxPutRounds bounds the writes putResolved sends for one resource in one
// Send; an unsettled write after them goes back to the worker (transient).
const maxPutRounds = 4

// maxInlineWait is the longest Retry-After putResolved waits for before
// repeating a write; a longer one goes back to the worker.
const maxInlineWait = 5 * time.Second

// putResolved writes e to Type/id with If-Match on iv's version (the
// search strategy's update, and the retry after a 409/412). httpclient does
// not repeat such a write once it may have reached the target, because a
// repeat of an applied write names a stale version and is refused with 412
// (issue #6). Instead, an answer that does not settle the write (none, a
// retryable status, 409 or 412) is resolved by reading the resource by id:
//
//   - it carries what we sent (carries): the write is in place, confirmed
//     with the version read;
//   - it is gone: unknown, the next attempt searches by business identifier;
//   - its version is still iv's after no answer or a retryable status: the
//     write did not land; repeat it;
//   - another version without our content, or a 409/412: someone else
//     changed it; one more write with the fresh version (a second genuine
//     conflict in the same Send is transient, never permanent).
//
// At most maxPutRounds writes. The error is a *kap.SendError: unknown when
// the last write's answer was lost and the read failed, transient otherwise.
// A 409/412 is never returned as an answer.
func (s *Sender) putResolved(ctx context.Context, st *sendState, e *entry, iv idVersion) (*httpclient.Response, error) {
	conflicts := 0
	for round := 1; ; round++ {
		resp, err := s.putByID(ctx, e, iv, true)
		if err == nil && !unsettled(resp.Status) {
			return resp, nil
		}
		if se, ok := err.(*kap.SendError); ok {
			return nil, se // not sent (encoding or request error)
		}
		cur, rerr := s.read(ctx, e.Type, iv.ID)
		if rerr != nil {
			if err != nil {
				return nil, s.unresolved(st, e, iv, err)
			}
			return nil, rerr
		}
		if cur == nil {
			if err != nil {
				return nil, s.unresolved(st, e, iv, err)
			}
			return nil, &kap.SendError{Kind: kap.SendTransient, Status: resp.Status, Resources: []kap.LedgerEntry{s.unknown(st, e)},
				Err: fmt.Errorf("the target answered %d to an update of %s and no longer has the resource; it is searched again", resp.Status, e.Type)}
		}
		if carries(cur.Resource, e.Resource) {
			s.log.DebugContext(ctx, "write resolved by reading the target", "target", s.name, "type", e.Type, "round", round)
			return cur.response(), nil
		}
		conflict := cur.Version != iv.Version || (err == nil && (resp.Status == http.StatusConflict || resp.Status == http.StatusPreconditionFailed))
		if conflict {
			conflicts++
		}
		switch {
		case conflicts > 1:
			return nil, &kap.SendError{Kind: kap.SendTransient, Status: statusOf(resp), RetryAfter: retryAfterOf(resp),
				Err: fmt.Errorf("the target's %s changed again during the update (a concurrent writer); retried later", e.Type)}
		case round >= maxPutRounds:
			if err != nil {
				return nil, s.unresolved(st, e, iv, err)
			}
			return nil, s.statusError(resp)
		case err == nil && !conflict && httpclient.RetryableStatus(resp.Status):
			// Not applied: wait as the target asks, or go back to the worker.
			wait := resp.RetryAfter
			if wait == 0 {
				wait = time.Duration(round) * 100 * time.Millisecond
			}
			if wait > maxInlineWait {
				return nil, s.statusError(resp)
			}
			if werr := sleepCtx(ctx, wait); werr != nil {
				return nil, &kap.SendError{Kind: kap.SendTransient, Err: werr}
			}
		}
		iv = cur.idVersion
	}
}

// unsettled reports whether an answer to a write with If-Match leaves open
// whether the write is in place or why it was refused.
func unsettled(status int) bool {
	return status == http.StatusConflict || status == http.StatusPreconditionFailed || httpclient.RetryableStatus(status)
}

// unresolved is a write whose answer was lost and could not be resolved by
// a read: unknown, so that the next attempt searches first.
func (s *Sender) unresolved(st *sendState, e *entry, iv idVersion, err error) *kap.SendError {
	le := s.unknown(st, e)
	le.TargetID = iv.ID
	return &kap.SendError{Kind: kap.SendUnknown, Resources: []kap.LedgerEntry{le}, Err: err}
}

func statusOf(resp *httpclient.Response) int {
	if resp == nil {
		return 0
	}
	return resp.Status
}

func retryAfterOf(resp *httpclient.Response) time.Duration {
	if resp == nil {
		return 0
	}
	return resp.RetryAfter
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// current is a resource as the target holds it.
type current struct {
	idVersion
	Resource map[string]any
	body     []byte
	header   http.Header
}

// response is the answer a write that is in place would have had.
func (c *current) response() *httpclient.Response {
	h := c.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	return &httpclient.Response{Status: http.StatusOK, Header: h, Body: c.body}
}

// read gets Type/id. nil when the target has no such resource (404, 410).
func (s *Sender) read(ctx context.Context, typ, id string) (*current, error) {
	resp, err := s.do(ctx, http.MethodGet, typ+"/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return nil, noAnswer(err, true)
	}
	switch resp.Status {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusGone:
		return nil, nil
	default:
		return nil, s.statusError(resp)
	}
	var r map[string]any
	if json.Unmarshal(resp.Body, &r) != nil || r["resourceType"] != typ {
		return nil, &kap.SendError{Kind: kap.SendTransient, Status: resp.Status, Err: fmt.Errorf("the read of a %s answered no %s", typ, typ)}
	}
	c := &current{idVersion: idVersion{ID: id}, Resource: r, body: resp.Body, header: resp.Header}
	if m, ok := r["meta"].(map[string]any); ok {
		c.Version, _ = m["versionId"].(string)
	}
	if c.Version == "" {
		c.Version = etagVersion(resp.Header.Get("ETag"))
	}
	return c, nil
}

// carries reports whether the target's copy of a resource (have) holds what
// we sent (sent): every element of sent but id and meta is in have with the
// same value. Objects may hold more (a narrative, an extension the target
// adds); an array holds sent's elements in order, possibly among others.
// A target that rewrites a value (a normalised date) reads as not carrying
// it: that costs one more write with the fresh version, never a duplicate.
// This compares content, not a tag we would add: a tag survives a change by
// someone else, content does not, and it needs nothing on the wire beyond
// the mapped resource.
func carries(have, sent map[string]any) bool {
	for k, sv := range sent {
		if k == "id" || k == "meta" {
			continue
		}
		hv, ok := have[k]
		if !ok || !contains(hv, sv) {
			return false
		}
	}
	return true
}

func contains(have, sent any) bool {
	switch sv := sent.(type) {
	case map[string]any:
		hv, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, c := range sv {
			h, ok := hv[k]
			if !ok || !contains(h, c) {
				return false
			}
		}
		return true
	case []any:
		hv, ok := have.([]any)
		if !ok {
			return false
		}
		j := 0
		for _, c := range sv {
			for j < len(hv) && !contains(hv[j], c) {
				j++
			}
			if j == len(hv) {
				return false
			}
			j++
		}
		return true
	case string, float64, bool, nil:
		return have == sent
	}
	return false
}

// findCreated resolves a create whose answer was lost by reading the
// target at once: exactly one resource with e's business identifier that
// carries what we sent means the create landed. Otherwise (none found, the
// read failed, other content) it reports false and the write stays unknown:
// a create still in flight at the target could land after a search that
// found nothing, so a second create is never sent in the same attempt.
func (s *Sender) findCreated(ctx context.Context, e *entry) (*httpclient.Response, bool) {
	hits, err := s.search(ctx, e.Type, e.query())
	if err != nil || len(hits) != 1 {
		return nil, false
	}
	cur, err := s.read(ctx, e.Type, hits[0].ID)
	if err != nil || cur == nil || !carries(cur.Resource, e.Resource) {
		return nil, false
	}
	s.log.DebugContext(ctx, "create resolved by reading the target", "target", s.name, "type", e.Type)
	return cur.response(), true
}
