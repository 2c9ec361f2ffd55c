package ehr_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/fhir"
)

const sid = "https://fhir.kapbridge.org/sid/demo/"

// harness is one Sender with a real ledger (the embedded store), recording
// the outcome of each Send the way the delivery worker does.
type harness struct {
	t      *testing.T
	s      *ehr.Sender
	ledger kap.Ledger
}

func newHarness(t *testing.T, base, profile string, store *bolt.Store) *harness {
	t.Helper()
	if store == nil {
		store = must(bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{}))
		t.Cleanup(func() { store.Close() })
	}
	s, err := ehr.New(ehr.Options{Name: "ehr-a", BaseURL: base, ProfileName: profile, Ledger: store.Ledger(), Cache: store.Cache(),
		Codec: fhir.MustCodec(), TotalTimeout: 3 * time.Minute, AttemptTimeout: 90 * time.Second, HTTP: fastHTTP()})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, s: s, ledger: store.Ledger()}
}

// send delivers a testdata Bundle and writes the ledger like the worker.
func (h *harness) send(file string) (kap.SendResult, error) {
	h.t.Helper()
	return h.sendBundle(readTestdata(h.t, file))
}

func (h *harness) sendBundle(b []byte) (kap.SendResult, error) {
	h.t.Helper()
	ctx := context.Background()
	res, err := h.s.Send(ctx, message(b))
	entries := res.Resources
	if err != nil {
		entries = kap.SendErrorOf(err).Resources
	}
	for _, e := range entries {
		e.Tenant, e.Target = "demo", "ehr-a"
		if err := h.ledger.Put(ctx, e); err != nil {
			h.t.Fatal(err)
		}
	}
	return res, err
}

func (h *harness) mustSend(files ...string) {
	h.t.Helper()
	for _, f := range files {
		if _, err := h.send(f); err != nil {
			h.t.Fatalf("%s: %v", f, err)
		}
	}
}

// targetID is the target's id of a resource, from the ledger.
func (h *harness) targetID(typ, value string) string {
	h.t.Helper()
	le, err := h.ledger.Get(context.Background(), kap.LedgerKey{Tenant: "demo", Target: "ehr-a", ResourceType: typ, Identifier: sid + typ + "|" + value})
	if err != nil || le.TargetID == "" || le.State != kap.LedgerConfirmed {
		h.t.Fatalf("ledger %s %s: %+v %v", typ, value, le, err)
	}
	return le.TargetID
}

func identifierQuery(typ, value string) string {
	return typ + "?identifier=" + url.QueryEscape(sid+typ+"|"+value)
}

func noDuplicates(t *testing.T, st serverStats) {
	t.Helper()
	if len(st.Duplicates) > 0 {
		t.Errorf("duplicates at the target: %+v", st.Duplicates)
	}
}

// Each write strategy against the real FHIR server: the strategy the
// CapabilityStatement selects, references rewritten to the target's ids,
// and a redelivery that creates nothing new.
func TestStrategiesAgainstFHIRServer(t *testing.T) {
	srv := startFHIR(t, "transaction")
	for _, tc := range []struct {
		mode, strategy, interaction string
	}{
		{"transaction", ehr.StrategyTransaction, "transaction"},
		{"conditional-update", ehr.StrategyConditionalUpdate, "update-conditional"},
		{"conditional-create", ehr.StrategyConditionalCreate, "create-conditional"},
		{"plain", ehr.StrategySearch, "create"},
		{"none", ehr.StrategySearch, "create"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			srv.Control(t, map[string]any{"reset": true, "clearFaults": true, "mode": tc.mode})
			h := newHarness(t, srv.Base, "generic", nil)
			if got := must(h.s.Strategy(context.Background(), "Observation")); got != tc.strategy {
				t.Fatalf("strategy %s, want %s", got, tc.strategy)
			}
			h.mustSend("00-provider-prescriber.json", "02-provider-nurse.json", "10-client-c001.json", "13-plan-c001.json", "16-dosing-c001-1.json")
			first := srv.Stats(t)
			noDuplicates(t, first)
			if first.Interactions[tc.interaction] == 0 {
				t.Errorf("no %s interaction at the server: %v", tc.interaction, first.Interactions)
			}
			if tc.strategy != ehr.StrategyTransaction && first.Interactions["transaction"] > 0 {
				t.Errorf("a transaction was sent in mode %s", tc.mode)
			}

			// The target's stored resources reference the target's ids.
			pid := h.targetID("Patient", "c001")
			enc := h.targetID("Encounter", "dosing/ds-c001-1")
			hr := srv.One(t, identifierQuery("Observation", "dosing/ds-c001-1/vitals/20260223T160500Z/hr"))
			if got := refOf(hr, "subject"); got != "Patient/"+pid {
				t.Errorf("Observation.subject %q, want Patient/%s", got, pid)
			}
			if got := refOf(hr, "encounter"); got != "Encounter/"+enc {
				t.Errorf("Observation.encounter %q, want Encounter/%s", got, enc)
			}
			ma := srv.One(t, identifierQuery("MedicationAdministration", "dosing/ds-c001-1/administration/a1"))
			if got, want := refOf(ma, "medicationReference"), "Medication/"+h.targetID("Medication", "dosing/ds-c001-1/medication/a1"); got != want {
				t.Errorf("MedicationAdministration.medicationReference %q, want %q", got, want)
			}
			if got, want := refOf(ma, "request"), "MedicationRequest/"+h.targetID("MedicationRequest", "plan/plan-c001/medication-request"); got != want {
				t.Errorf("MedicationAdministration.request %q, want %q (a reference to an earlier record)", got, want)
			}
			plan := srv.One(t, identifierQuery("CarePlan", "plan/plan-c001"))
			if !strings.Contains(must(jsonString(plan)), "MedicationRequest/"+h.targetID("MedicationRequest", "plan/plan-c001/medication-request")) {
				t.Errorf("CarePlan.activity.reference not rewritten to the target's MedicationRequest")
			}

			// Redelivery: the same message again creates nothing.
			res, err := h.send("16-dosing-c001-1.json")
			if err != nil {
				t.Fatal(err)
			}
			again := srv.Stats(t)
			noDuplicates(t, again)
			if again.Total != first.Total {
				t.Errorf("redelivery changed the resource count %d -> %d", first.Total, again.Total)
			}
			if len(res.Resources) != 65 {
				t.Errorf("%d resources confirmed on redelivery, want 65", len(res.Resources))
			}
			for _, le := range res.Resources {
				if le.ResourceType == "Encounter" && le.TargetID != enc {
					t.Errorf("redelivery moved the Encounter to %s (was %s)", le.TargetID, enc)
				}
			}
		})
	}
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// A write whose answer was lost is resolved on the next Send by searching
// the identifier, never by a blind second create.
func TestUnknownWriteResolvedBySearch(t *testing.T) {
	srv := startFHIR(t, "transaction")

	t.Run("transaction", func(t *testing.T) {
		srv.Control(t, map[string]any{"reset": true, "clearFaults": true, "mode": "transaction"})
		h := newHarness(t, srv.Base, "generic", nil)
		must(h.s.Strategy(context.Background(), "Patient")) // metadata read before the fault
		srv.Control(t, map[string]any{"drop": map[string]any{"count": 1}})
		_, err := h.send("10-client-c001.json")
		if se := kap.SendErrorOf(err); se.Kind != kap.SendUnknown {
			t.Fatalf("got %v, want unknown", err)
		}
		searches := srv.Stats(t).Interactions["search"]
		if _, err := h.send("10-client-c001.json"); err != nil {
			t.Fatal(err)
		}
		st := srv.Stats(t)
		noDuplicates(t, st)
		if n := st.ByIdentifier["Patient|"+sid+"Patient|c001"]; n != 1 {
			t.Errorf("%d Patients with the identifier, want 1", n)
		}
		if st.Interactions["search"] <= searches {
			t.Error("the unknown write was not resolved by a search")
		}
		h.targetID("Patient", "c001")
	})

	t.Run("search strategy", func(t *testing.T) {
		srv.Control(t, map[string]any{"reset": true, "clearFaults": true, "mode": "plain"})
		// A proxy that forwards the first POST and drops its answer.
		u := must(url.Parse(srv.Base))
		var posts atomic.Int32
		rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
		proxy := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && posts.Add(1) == 1 {
				rec := &discard{header: http.Header{}}
				rp.ServeHTTP(rec, r)
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
			rp.ServeHTTP(w, r)
		})}
		ln := must(net.Listen("tcp", "127.0.0.1:0"))
		go proxy.Serve(ln)
		t.Cleanup(func() { proxy.Close() })
		base := "http://" + ln.Addr().String() + u.Path

		h := newHarness(t, base, "generic", nil)
		// The create landed: a search and a read in the same attempt find
		// it carrying what was sent, so it is confirmed, not repeated.
		if _, err := h.send("10-client-c001.json"); err != nil {
			t.Fatalf("got %v, want the lost create resolved by reading the target", err)
		}
		if _, err := h.send("10-client-c001.json"); err != nil {
			t.Fatal(err)
		}
		st := srv.Stats(t)
		if n := st.ByIdentifier["Patient|"+sid+"Patient|c001"]; n != 1 {
			t.Errorf("%d Patients with the identifier, want 1 (the lost create was found, not repeated)", n)
		}
		if st.Interactions["create"] != 2 { // the lost Patient, then the Provenance
			t.Errorf("%d creates, want 2: %v", st.Interactions["create"], st.Interactions)
		}
		h.targetID("Patient", "c001")
	})
}

type discard struct{ header http.Header }

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// The error classes with the real server's fault switches.
func TestErrorClassesAgainstFHIRServer(t *testing.T) {
	srv := startFHIR(t, "conditional-update")
	srv.Control(t, map[string]any{"reset": true})
	client := readTestdata(t, "10-client-c001.json")

	t.Run("400 refused content is permanent with the OperationOutcome", func(t *testing.T) {
		srv.Control(t, map[string]any{"clearFaults": true, "reject": map[string]any{"prefix": "reject-", "status": 400}})
		h := newHarness(t, srv.Base, "generic", nil)
		bad := []byte(strings.ReplaceAll(string(client), "Patient|c001", "Patient|reject-c001"))
		bad = []byte(strings.ReplaceAll(string(bad), `"value": "c001"`, `"value": "reject-c001"`))
		_, err := h.sendBundle(bad)
		se := kap.SendErrorOf(err)
		if se.Kind != kap.SendPermanent || se.Status != 400 || !strings.Contains(string(se.OperationOutcome), "OperationOutcome") {
			t.Fatalf("got %v (outcome %s), want permanent 400 with the OperationOutcome", err, se.OperationOutcome)
		}
		if strings.Contains(se.Error(), "reject-c001") {
			t.Errorf("error %q names the identifier", se.Error())
		}
	})
	t.Run("429 with a short Retry-After is waited out", func(t *testing.T) {
		srv.Control(t, map[string]any{"clearFaults": true, "fail429": map[string]any{"count": 1, "retryAfter": 1}})
		h := newHarness(t, srv.Base, "generic", nil)
		if _, err := h.sendBundle(client); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("429 with a long Retry-After goes back to the worker", func(t *testing.T) {
		srv.Control(t, map[string]any{"clearFaults": true, "fail429": map[string]any{"count": 10, "retryAfter": 120}})
		h := newHarness(t, srv.Base, "generic", nil)
		_, err := h.sendBundle(client)
		se := kap.SendErrorOf(err)
		if se.Kind != kap.SendTransient || se.Status != 429 || se.RetryAfter != 2*time.Minute {
			t.Fatalf("got %v retryAfter %v, want transient 429 after 2m", err, se.RetryAfter)
		}
	})
	t.Run("503 is transient", func(t *testing.T) {
		srv.Control(t, map[string]any{"clearFaults": true, "fail503": map[string]any{"count": 50, "retryAfter": 0}})
		h := newHarness(t, srv.Base, "generic", nil)
		_, err := h.sendBundle(client)
		se := kap.SendErrorOf(err)
		if se.Kind != kap.SendTransient || se.Status != 503 {
			t.Fatalf("got %v, want transient 503", err)
		}
	})
	t.Run("connection dropped on a conditional PUT is retried", func(t *testing.T) {
		srv.Control(t, map[string]any{"clearFaults": true, "drop": map[string]any{"count": 1}})
		h := newHarness(t, srv.Base, "generic", nil)
		if _, err := h.sendBundle(client); err != nil {
			t.Fatal(err)
		}
		noDuplicates(t, srv.Stats(t))
	})
	srv.Control(t, map[string]any{"clearFaults": true})
}

// Vendor profiles against the real server: refused content goes to the
// fallback note, visibly in NotSent; nothing refused reaches the target.
func TestProfilesAgainstFHIRServer(t *testing.T) {
	srv := startFHIR(t, "conditional-update")
	store := must(bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{}))
	t.Cleanup(func() { store.Close() })
	// The patient exists at the EHR (registered there, here by the
	// generic profile), as Epic and Oracle Health require.
	generic := newHarness(t, srv.Base, "generic", store)
	generic.mustSend("00-provider-prescriber.json", "02-provider-nurse.json", "10-client-c001.json", "13-plan-c001.json")
	base := srv.Stats(t)

	oracle := newHarness(t, srv.Base, "oracle-health", store)
	if got := must(oracle.s.Strategy(context.Background(), "Observation")); got != ehr.StrategySearch {
		t.Errorf("oracle-health strategy %s, want search (no conditional writes)", got)
	}
	res, err := oracle.send("16-dosing-c001-1.json")
	if err != nil {
		t.Fatal(err)
	}
	vitals, obs := vitalSigns(t, "16-dosing-c001-1.json")
	refused := map[string]int{}
	for _, ns := range res.NotSent {
		refused[ns.ResourceType]++
		if ns.ResourceType != "Provenance" && ns.Fallback != "DocumentReference" {
			t.Errorf("%s not sent without the fallback note: %+v", ns.ResourceType, ns)
		}
	}
	if refused["MedicationAdministration"] != 1 || refused["Observation"] != obs-vitals || refused["Provenance"] != 1 {
		t.Errorf("not sent %v, want the administration, %d non-vital Observations and the Provenance", refused, obs-vitals)
	}
	st := srv.Stats(t)
	if st.Resources["MedicationAdministration"] != base.Resources["MedicationAdministration"] {
		t.Error("a MedicationAdministration reached Oracle Health")
	}
	if got := st.Resources["Observation"] - base.Resources["Observation"]; got != vitals {
		t.Errorf("%d Observations written, want the %d vital signs", got, vitals)
	}
	note := srv.One(t, identifierQuery("DocumentReference", "dosing/ds-c001-1/summary"))
	att := note["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)
	if att["contentType"] != "application/xhtml+xml" {
		t.Errorf("note content type %v, want XHTML for Oracle Health", att["contentType"])
	}
	if got := refOf(note, "subject"); got != "Patient/"+generic.targetID("Patient", "c001") {
		t.Errorf("note subject %q", got)
	}
	// Redelivery: the note is updated in place, nothing new.
	if _, err := oracle.send("16-dosing-c001-1.json"); err != nil {
		t.Fatal(err)
	}
	again := srv.Stats(t)
	noDuplicates(t, again)
	if again.Total != st.Total {
		t.Errorf("redelivery changed the resource count %d -> %d", st.Total, again.Total)
	}

	// Epic: Conditions go in as provisional.
	epic := newHarness(t, srv.Base, "epic", store)
	if _, err := epic.send("11-intake-c001.json"); err != nil {
		t.Fatal(err)
	}
	cond := srv.Get(t, "Condition?subject="+url.QueryEscape("Patient/"+generic.targetID("Patient", "c001")))
	entries, _ := cond["entry"].([]any)
	if len(entries) == 0 {
		t.Fatal("no Condition at the target")
	}
	for _, e := range entries {
		c := e.(map[string]any)["resource"].(map[string]any)
		if !strings.Contains(must(jsonString(c["verificationStatus"])), `"provisional"`) {
			t.Errorf("Condition verificationStatus %v, want provisional", c["verificationStatus"])
		}
	}
	// A second delivery: Epic takes no update; the Conditions stay, confirmed.
	res, err = epic.send("11-intake-c001.json")
	if err != nil {
		t.Fatal(err)
	}
	noDuplicates(t, srv.Stats(t))
	for _, le := range res.Resources {
		if le.ResourceType == "Condition" && !strings.Contains(le.LastError, "not updated") {
			t.Errorf("second Condition delivery %+v, want confirmed with a not-updated note", le)
		}
	}
}

// BenchmarkSendDosingSession delivers a 65-resource dosing session again and
// again (redelivery, the steady state: every resource exists) with each
// strategy against the real FHIR server. The server (Medplum's in-memory
// repository, validating every write) dominates the time.
func BenchmarkSendDosingSession(b *testing.B) {
	for _, tc := range []struct{ mode string }{{"transaction"}, {"conditional-update"}, {"conditional-create"}, {"plain"}} {
		b.Run(tc.mode, func(b *testing.B) {
			srv := startFHIRB(b, tc.mode)
			store := must(bolt.Open(filepath.Join(b.TempDir(), "kap.db"), bolt.Options{}))
			defer store.Close()
			s := must(ehr.New(ehr.Options{Name: "ehr-a", BaseURL: srv.Base, Ledger: store.Ledger(), Cache: store.Cache(), HTTP: fastHTTP()}))
			ctx := context.Background()
			put := func(res kap.SendResult) {
				for _, e := range res.Resources {
					e.Tenant, e.Target = "demo", "ehr-a"
					_ = store.Ledger().Put(ctx, e)
				}
			}
			for _, f := range []string{"00-provider-prescriber.json", "02-provider-nurse.json", "10-client-c001.json", "13-plan-c001.json"} {
				put(must(s.Send(ctx, message(readTestdata(b, f)))))
			}
			msg := message(readTestdata(b, "16-dosing-c001-1.json"))
			put(must(s.Send(ctx, msg)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				res, err := s.Send(ctx, msg)
				if err != nil {
					b.Fatal(err)
				}
				put(res) // as the worker does
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/session")
		})
	}
}
