package ehr

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/kapbridge/kap"
)

// sendTransaction writes the entries as one transaction Bundle of
// conditional PUTs. The target applies it atomically; a lost answer leaves
// every entry unknown, resolved by a search on the next Send.
func (s *Sender) sendTransaction(ctx context.Context, st *sendState, es []*entry) error {
	entries := make([]any, 0, len(es))
	for _, e := range es {
		entries = append(entries, map[string]any{
			"fullUrl":  e.FullURL,
			"resource": e.Resource,
			"request":  map[string]any{"method": "PUT", "url": e.Type + "?" + e.query()},
		})
	}
	bundle := map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries}
	for try := 0; ; try++ {
		resp, err := s.write(ctx, http.MethodPost, "", bundle, nil)
		if err != nil {
			se := noAnswer(err, false)
			if se.Kind == kap.SendUnknown {
				for _, e := range es {
					se.Resources = append(se.Resources, s.unknown(st, e))
				}
			}
			return se
		}
		st.status = resp.Status
		if (resp.Status == http.StatusConflict || resp.Status == http.StatusPreconditionFailed) && try == 0 {
			continue // a concurrent change at the target; the PUTs are conditional, one more try
		}
		if resp.Status != http.StatusOK {
			return s.statusError(resp)
		}
		return s.readTransactionResponse(st, es, resp.Body)
	}
}

func (s *Sender) readTransactionResponse(st *sendState, es []*entry, body []byte) error {
	var b struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			Resource json.RawMessage `json:"resource"`
			Response struct {
				Status   string `json:"status"`
				Location string `json:"location"`
				Etag     string `json:"etag"`
			} `json:"response"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil || b.ResourceType != "Bundle" || len(b.Entry) != len(es) {
		// The target said 200 but the answer is unreadable: the
		// transaction was applied, the ids are not known.
		se := &kap.SendError{Kind: kap.SendUnknown, Status: http.StatusOK, Err: fmt.Errorf("unreadable transaction-response (%d entries for %d sent)", len(b.Entry), len(es))}
		for _, e := range es {
			se.Resources = append(se.Resources, s.unknown(st, e))
		}
		return se
	}
	for i, e := range es {
		r := b.Entry[i]
		var res struct {
			ID   string `json:"id"`
			Meta struct {
				VersionID string `json:"versionId"`
			} `json:"meta"`
		}
		if len(r.Resource) > 0 {
			_ = json.Unmarshal(r.Resource, &res)
		}
		iv, ok := parseLocation(r.Response.Location, e.Type)
		if !ok && res.ID != "" {
			iv, ok = idVersion{ID: res.ID}, true
		}
		if iv.Version == "" {
			iv.Version = etagVersion(r.Response.Etag)
		}
		if iv.Version == "" && res.ID == iv.ID {
			iv.Version = res.Meta.VersionID
		}
		if !ok || !strings.HasPrefix(r.Response.Status, "2") {
			st.done = append(st.done, kap.LedgerEntry{LedgerKey: e.ledgerKey(st.msg.Tenant, s.name), State: kap.LedgerSent, LastError: "transaction-response named no id"})
			continue
		}
		s.confirm(st, e, iv, 0)
	}
	return nil
}
