package httpapi_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/kapbridge/kap/adapters/httpapi"
)

// OnQueued is called once per request whose record version was queued,
// after the message is in the outbox; not for a write that queued nothing
// (unchanged content, a refused record).
func TestOnQueuedWakesAfterTheEnqueue(t *testing.T) {
	eachStore(t, func(t *testing.T, f storeFactory) {
		store := f(t, nil)
		var calls, depthAtCall atomic.Int64
		srv := apiServer(t, store, func(c *httpapi.Config) {
			c.OnQueued = func() {
				calls.Add(1)
				st, err := store.Outbox().Stats(context.Background(), httpapi.DefaultTarget)
				if err == nil {
					depthAtCall.Store(int64(st.Depth))
				}
			}
		})
		base := srv.URL + "/kap/v1/dosing-sessions"
		if r := call(t, "POST", base, dosing(t, "ds-q1", "")); r.status != http.StatusCreated {
			t.Fatalf("create: HTTP %d", r.status)
		}
		if calls.Load() != 1 || depthAtCall.Load() != 1 {
			t.Fatalf("after the create: %d calls, depth %d at the call; want 1 call after the message was queued", calls.Load(), depthAtCall.Load())
		}
		if r := call(t, "PUT", base+"/ds-q1", dosing(t, "ds-q1", "")); r.status != http.StatusOK {
			t.Fatalf("unchanged put: HTTP %d", r.status)
		}
		if r := call(t, "POST", base, []byte(`{"id":"ds-bad"}`)); r.status < 400 {
			t.Fatalf("a bad record was accepted: HTTP %d", r.status)
		}
		if calls.Load() != 1 {
			t.Fatalf("%d calls after writes that queued nothing, want 1", calls.Load())
		}
		if r := call(t, "PUT", base+"/ds-q1", dosing(t, "ds-q1", "second"), "If-Match", `W/"1"`); r.status >= 300 {
			t.Fatalf("new version: HTTP %d", r.status)
		}
		if calls.Load() != 2 || depthAtCall.Load() != 2 {
			t.Fatalf("after a new version: %d calls, depth %d", calls.Load(), depthAtCall.Load())
		}
	})
}
