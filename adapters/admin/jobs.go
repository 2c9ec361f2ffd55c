package admin

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
)

// job is a long action (retry all dead letters of a target) whose progress
// the page shows. Jobs live in this process only.
type job struct {
	ID     string `json:"id"`
	Tenant string `json:"-"`
	Target string `json:"target"`
	Total  int    `json:"total"`
	Done   int    `json:"done"`
	State  string `json:"state"` // running, finished, failed
	Error  string `json:"error,omitempty"`
}

type jobs struct {
	mu   sync.Mutex
	byID map[string]*job
	ids  []string
}

func newJobs() *jobs { return &jobs{byID: map[string]*job{}} }

const keepJobs = 100

func (js *jobs) start(tenant, target string, total int) job {
	b := make([]byte, 12)
	rand.Read(b)
	j := &job{ID: hex.EncodeToString(b), Tenant: tenant, Target: target, Total: total, State: "running"}
	js.mu.Lock()
	defer js.mu.Unlock()
	js.byID[j.ID] = j
	js.ids = append(js.ids, j.ID)
	if len(js.ids) > keepJobs {
		delete(js.byID, js.ids[0])
		js.ids = js.ids[1:]
	}
	return *j
}

func (js *jobs) update(j job, fn func(*job)) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if p := js.byID[j.ID]; p != nil {
		fn(p)
	}
}

func (js *jobs) progress(j job, done int) { js.update(j, func(p *job) { p.Done = done }) }

func (js *jobs) finish(j job) { js.update(j, func(p *job) { p.State = "finished" }) }

func (js *jobs) fail(j job, msg string) {
	js.update(j, func(p *job) { p.State, p.Error = "failed", msg })
}

// get returns a copy of the tenant's job.
func (js *jobs) get(tenant, id string) (job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	p := js.byID[id]
	if p == nil || p.Tenant != tenant {
		return job{}, false
	}
	return *p, true
}
