package ehr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
)

// answerDropper forwards every request to the FHIR server; for the requests
// drop selects, it lets the server process the request and then closes the
// connection unanswered (a lost answer of an applied write).
type answerDropper struct {
	mu      sync.Mutex
	drop    func(r *http.Request, n int) bool // n: how many If-Match PUTs came, this one included
	ifMatch int
	dropped atomic.Int32
	puts    []string // If-Match values of the PUTs, in order
}

func startDropper(t *testing.T, base string, drop func(r *http.Request, n int) bool) (string, *answerDropper) {
	t.Helper()
	u := must(url.Parse(base))
	d := &answerDropper{drop: drop}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		n := 0
		if r.Method == http.MethodPut && r.Header.Get("If-Match") != "" {
			d.ifMatch++
			n = d.ifMatch
			d.puts = append(d.puts, r.Header.Get("If-Match"))
		}
		dropIt := d.drop(r, n)
		d.mu.Unlock()
		if dropIt {
			d.dropped.Add(1)
			rp.ServeHTTP(&discard{header: http.Header{}}, r)
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		rp.ServeHTTP(w, r)
	})}
	ln := must(net.Listen("tcp", "127.0.0.1:0"))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + u.Path, d
}

func (d *answerDropper) ifMatchPuts() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.puts...)
}

const (
	phoneV1 = "602-555-0144"
	phoneV2 = "602-555-0199"
	phoneV3 = "602-555-0123"
)

// clientV2 is the client record with a changed contact phone: the same
// business identifiers, new content.
func clientV2(t *testing.T) []byte {
	t.Helper()
	b := readTestdata(t, "10-client-c001.json")
	if !bytes.Contains(b, []byte(phoneV1)) {
		t.Fatal("testdata changed: no contact phone to change")
	}
	return bytes.ReplaceAll(b, []byte(phoneV1), []byte(phoneV2))
}

// checkPatient asserts one Patient c001 at the target, carrying phone, with
// the version the ledger confirmed.
func checkPatient(t *testing.T, srv *fhirServer, h *harness, phone string) map[string]any {
	t.Helper()
	st := srv.Stats(t)
	noDuplicates(t, st)
	if n := st.ByIdentifier["Patient|"+sid+"Patient|c001"]; n != 1 {
		t.Errorf("%d Patients with the identifier, want 1", n)
	}
	p := srv.One(t, identifierQuery("Patient", "c001"))
	b, _ := json.Marshal(p["contact"])
	if !strings.Contains(string(b), phone) {
		t.Errorf("the target's Patient does not carry our latest content (contact %s, want phone %s)", b, phone)
	}
	le, err := h.ledger.Get(context.Background(), kap.LedgerKey{Tenant: "demo", Target: "ehr-a", ResourceType: "Patient", Identifier: sid + "Patient|c001"})
	if err != nil || le.State != kap.LedgerConfirmed {
		t.Fatalf("ledger: %+v %v, want confirmed", le, err)
	}
	if le.TargetID != p["id"] {
		t.Errorf("ledger id %s, target id %v", le.TargetID, p["id"])
	}
	if v := p["meta"].(map[string]any)["versionId"]; le.VersionID != v {
		t.Errorf("ledger version %q, target version %v", le.VersionID, v)
	}
	return p
}

// Issue #6: against a plain peer (search, then PUT Type/id with If-Match),
// a lost answer to an applied update is confirmed by reading the resource,
// not repeated with the stale version (which the peer refuses with 412) and
// never dead-lettered.
func TestLostIfMatchAnswerResolvedByRead(t *testing.T) {
	srv := startFHIR(t, "plain")

	t.Run("every answer to an update lost", func(t *testing.T) {
		srv.Control(t, map[string]any{"reset": true, "clearFaults": true, "mode": "plain"})
		h := newHarness(t, srv.Base, "generic", nil)
		h.mustSend("10-client-c001.json")
		v1 := h.targetID("Patient", "c001")

		base, d := startDropper(t, srv.Base, func(r *http.Request, n int) bool { return n > 0 })
		h2 := &harness{t: t, s: must(ehr.New(ehr.Options{Name: "ehr-a", BaseURL: base, ProfileName: "generic", Ledger: h.ledger,
			TotalTimeout: 3 * time.Minute, AttemptTimeout: 90 * time.Second, HTTP: fastHTTP()})), ledger: h.ledger}
		if _, err := h2.sendBundle(clientV2(t)); err != nil {
			t.Fatalf("send with every update answer lost: %v (want confirmed by a read)", err)
		}
		if got := h.targetID("Patient", "c001"); got != v1 {
			t.Errorf("Patient id %s, want %s (updated in place)", got, v1)
		}
		checkPatient(t, srv, h, phoneV2)
		// Patient and Provenance: one update each, confirmed by a read.
		if puts := d.ifMatchPuts(); len(puts) != 2 || d.dropped.Load() != 2 {
			t.Errorf("If-Match PUTs %v, %d dropped; want 2, each sent once", puts, d.dropped.Load())
		}
		if n := faultStats(t, srv).Requests["PUT 412"]; n != 0 {
			t.Errorf("the peer answered 412 %d times, want 0", n)
		}
	})

	t.Run("stale version, then the answer of the retry lost", func(t *testing.T) {
		srv.Control(t, map[string]any{"reset": true, "clearFaults": true, "mode": "plain"})
		h := newHarness(t, srv.Base, "generic", nil)
		h.mustSend("10-client-c001.json")
		id := h.targetID("Patient", "c001")

		// Someone else updates the Patient: the ledger's version is stale.
		p := srv.Get(t, "Patient/"+id)
		p["contact"].([]any)[0].(map[string]any)["telecom"].([]any)[0].(map[string]any)["value"] = phoneV3
		v1 := p["meta"].(map[string]any)["versionId"]
		putJSON(t, srv.Base+"/Patient/"+id, p)
		other := srv.Get(t, "Patient/"+id)["meta"].(map[string]any)["versionId"]

		// The first update meets 412; the answer to the retry with the
		// fresh version is lost.
		base, d := startDropper(t, srv.Base, func(r *http.Request, n int) bool { return n == 2 })
		h2 := &harness{t: t, s: must(ehr.New(ehr.Options{Name: "ehr-a", BaseURL: base, ProfileName: "generic", Ledger: h.ledger,
			TotalTimeout: 3 * time.Minute, AttemptTimeout: 90 * time.Second, HTTP: fastHTTP()})), ledger: h.ledger}
		if _, err := h2.sendBundle(clientV2(t)); err != nil {
			t.Fatalf("send: %v (want the conflict retried and its lost answer confirmed by a read)", err)
		}
		got := checkPatient(t, srv, h, phoneV2)
		if v := got["meta"].(map[string]any)["versionId"]; v == other || v == v1 {
			t.Errorf("Patient version %v, want a new one on top of the other writer's %v", v, other)
		}
		puts := d.ifMatchPuts()
		if len(puts) < 2 || puts[0] != `W/"`+v1.(string)+`"` || puts[1] != `W/"`+other.(string)+`"` {
			t.Errorf("If-Match PUTs %v, want the stale version %v (412), then the other writer's %v", puts, v1, other)
		}
		if n := faultStats(t, srv).Requests["PUT 412"]; n != 1 {
			t.Errorf("the peer answered 412 %d times, want 1 (the stale version)", n)
		}
	})

	t.Run("answers lost at random over many records", func(t *testing.T) {
		srv.Control(t, map[string]any{"reset": true, "clearFaults": true, "mode": "plain"})
		h := newHarness(t, srv.Base, "generic", nil)
		files := []string{"00-provider-prescriber.json", "02-provider-nurse.json", "10-client-c001.json", "13-plan-c001.json", "16-dosing-c001-1.json"}
		h.mustSend(files...)
		// Redeliver the record versions with new content while the peer
		// drops 30% of the answers after processing; a worker would retry
		// transient and unknown outcomes, never a permanent one.
		srv.Control(t, map[string]any{"drop": map[string]any{"percent": 30}})
		for _, f := range append(files[2:3], files[2:]...) {
			b := bytes.ReplaceAll(readTestdata(t, f), []byte(phoneV1), []byte(phoneV2))
			for attempt := 1; ; attempt++ {
				_, err := h.sendBundle(b)
				if err == nil {
					break
				}
				se := kap.SendErrorOf(err)
				if se.Kind == kap.SendPermanent {
					t.Fatalf("%s: permanent after lost answers: %v", f, err)
				}
				if attempt == 30 {
					t.Fatalf("%s: not delivered after %d attempts: %v", f, attempt, err)
				}
			}
		}
		srv.Control(t, map[string]any{"clearFaults": true})
		checkPatient(t, srv, h, phoneV2)
		st := faultStats(t, srv)
		if st.Faults["drop"] == 0 {
			t.Error("no answer was dropped; the test proves nothing")
		}
		t.Logf("requests %v, faults %v", st.Requests, st.Faults)
	})
}

// A create whose answer is lost and which the target does not hold (not
// processed, or still in flight) stays unknown: no second create in the same
// attempt; the next attempt searches and writes it.
func TestLostCreateNotFoundStaysUnknown(t *testing.T) {
	srv := startFHIR(t, "plain")
	srv.Control(t, map[string]any{"reset": true, "clearFaults": true, "mode": "plain"})
	u := must(url.Parse(srv.Base))
	var posts atomic.Int32
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	proxy := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && posts.Add(1) == 1 {
			// Read, never forwarded, connection closed.
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		rp.ServeHTTP(w, r)
	})}
	ln := must(net.Listen("tcp", "127.0.0.1:0"))
	go proxy.Serve(ln)
	t.Cleanup(func() { proxy.Close() })
	h := newHarness(t, "http://"+ln.Addr().String()+u.Path, "generic", nil)

	_, err := h.send("10-client-c001.json")
	se := kap.SendErrorOf(err)
	if se.Kind != kap.SendUnknown || len(se.Resources) != 1 || se.Resources[0].State != kap.LedgerUnknown {
		t.Fatalf("got %v with %+v, want unknown for the Patient", err, se.Resources)
	}
	if n := srv.Stats(t).ByIdentifier["Patient|"+sid+"Patient|c001"]; n != 0 {
		t.Fatalf("%d Patients at the target, want 0 (the create was not forwarded)", n)
	}
	if _, err := h.send("10-client-c001.json"); err != nil {
		t.Fatal(err)
	}
	st := srv.Stats(t)
	noDuplicates(t, st)
	if n := st.ByIdentifier["Patient|"+sid+"Patient|c001"]; n != 1 {
		t.Errorf("%d Patients with the identifier, want 1", n)
	}
	h.targetID("Patient", "c001")
}

func putJSON(t *testing.T, u string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	req, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
}

// faultStats reads the peer's request and fault counters.
func faultStats(t *testing.T, srv *fhirServer) (s struct {
	Requests map[string]int `json:"requests"`
	Faults   map[string]int `json:"faults"`
}) {
	t.Helper()
	resp, err := http.Get(srv.control + "/__stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
