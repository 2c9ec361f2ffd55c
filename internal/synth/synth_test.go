package synth

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/kapbridge/kap"
)

func generate(t testing.TB, clients int, seed int64) []kap.Record {
	t.Helper()
	recs, err := Generate(Options{Clients: clients, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestEveryRecordValidAndRoundTrips(t *testing.T) {
	recs := generate(t, 50, 1)
	ids := map[string]bool{}
	for i, rec := range recs {
		if err := rec.Validate(); err != nil {
			t.Fatalf("record %d (%s %s): %v", i, rec.RecordKind(), rec.RecordID(), err)
		}
		key := string(rec.RecordKind()) + "/" + rec.RecordID()
		if ids[key] {
			t.Errorf("record %d: duplicate id %s", i, key)
		}
		ids[key] = true
		b, err := kap.EncodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		back, err := kap.DecodeRecord(b)
		if err != nil {
			t.Fatalf("record %d (%s %s) does not decode: %v", i, rec.RecordKind(), rec.RecordID(), err)
		}
		if d := cmp.Diff(rec, back); d != "" {
			t.Errorf("record %d (%s %s) round trip (-want +got):\n%s", i, rec.RecordKind(), rec.RecordID(), d)
		}
	}
}

// TestCourseShape checks the clinical shape of the courses: who has which
// records, in which order, and that sessions are plausible.
func TestCourseShape(t *testing.T) {
	recs := generate(t, 50, 7)
	byClient := map[string][]kap.Record{}
	var order []string
	routes := map[string]int{}
	formats := map[string]int{}
	var aes, ineligible, complete int
	for i, rec := range recs {
		if rec.RecordKind() == kap.KindProvider {
			if i >= 5 {
				t.Errorf("provider at position %d: providers must come first", i)
			}
			continue
		}
		cid := rec.RecordClientID()
		if _, ok := byClient[cid]; !ok {
			order = append(order, cid)
		}
		byClient[cid] = append(byClient[cid], rec)
	}
	if len(order) != 50 {
		t.Fatalf("got %d clients, want 50", len(order))
	}
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Errorf("clients out of order: %s after %s", order[i], order[i-1])
		}
	}
	for _, cid := range order {
		rs := byClient[cid]
		// Each client's records are contiguous: count positions.
		if rs[0].RecordKind() != kap.KindClient || rs[1].RecordKind() != kap.KindIntake {
			t.Fatalf("%s: starts with %s, %s; want Client, Intake", cid, rs[0].RecordKind(), rs[1].RecordKind())
		}
		in := rs[1].(*kap.Intake)
		if in.Screen.Outcome != kap.OutcomeEligible {
			ineligible++
			if len(rs) != 2 {
				t.Errorf("%s: ineligible client has %d records, want 2", cid, len(rs))
			}
			continue
		}
		count := map[kap.Kind]int{}
		var last time.Time
		var sessions []*kap.DosingSession
		for _, r := range rs {
			count[r.RecordKind()]++
			if d := r.RecordDate(); !d.IsZero() {
				if d.Before(last) {
					t.Errorf("%s: %s %s dated before the previous record", cid, r.RecordKind(), r.RecordID())
				}
				last = d
			}
			switch v := r.(type) {
			case *kap.DosingSession:
				sessions = append(sessions, v)
				routes[v.Administrations[0].Route]++
				aes += len(v.AdverseEvents)
				if n := len(v.Vitals); n < 9 || n > 13 {
					t.Errorf("%s: %d vital sets, want about 10", v.ID, n)
				}
				if w := v.SafetyWarnings(); len(w) > 0 && len(v.AdverseEvents) == 0 {
					t.Errorf("%s: safety warnings without an adverse event: %v", v.ID, w)
				}
				if d := v.End.Sub(v.Start.Time); d < 2*time.Hour || d > 3*time.Hour+30*time.Minute {
					t.Errorf("%s: lasts %v", v.ID, d)
				}
			case *kap.IntegrationSession:
				formats[v.Format]++
				if len(sessions) == 0 || v.DosingSessionID != sessions[len(sessions)-1].ID {
					t.Errorf("%s: does not follow its dosing session", v.ID)
				}
			}
		}
		if count[kap.KindConsent] != 1 || count[kap.KindTreatmentPlan] != 1 ||
			count[kap.KindDosingSession] != DosingSessions || count[kap.KindIntegrationSession] != DosingSessions ||
			count[kap.KindAssessment] < 3 {
			t.Errorf("%s: record counts %v", cid, count)
		}
		complete++
	}
	t.Logf("complete %d, ineligible %d, routes %v, integration formats %v, adverse events %d", complete, ineligible, routes, formats, aes)
	if ineligible == 0 || ineligible > 15 {
		t.Errorf("%d of 50 clients ineligible, want a few", ineligible)
	}
	for _, r := range kap.Routes {
		if routes[r] == 0 {
			t.Errorf("no session by route %s", r)
		}
	}
	for _, f := range kap.IntegrationFormats {
		if formats[f] == 0 {
			t.Errorf("no integration session of format %s", f)
		}
	}
	if aes == 0 {
		t.Error("no adverse events")
	}
}

func encodeAll(t testing.TB, recs []kap.Record) []byte {
	var buf bytes.Buffer
	for _, r := range recs {
		b, err := kap.EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func TestDeterministic(t *testing.T) {
	a := encodeAll(t, generate(t, 20, 42))
	b := encodeAll(t, generate(t, 20, 42))
	if !bytes.Equal(a, b) {
		t.Error("same seed gave different records")
	}
	c := encodeAll(t, generate(t, 20, 43))
	if bytes.Equal(a, c) {
		t.Error("different seeds gave the same records")
	}
	// A larger run extends a smaller one.
	small := encodeAll(t, generate(t, 5, 42))
	if !bytes.HasPrefix(a, small) {
		t.Error("the first 5 clients differ between a run of 5 and a run of 20")
	}
}

func TestStartLocation(t *testing.T) {
	loc := time.FixedZone("", 2*3600)
	start := time.Date(2025, 6, 1, 0, 0, 0, 0, loc)
	recs, err := Generate(Options{Clients: 3, Seed: 3, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		d := r.RecordDate()
		if d.IsZero() {
			continue
		}
		if d.Before(start) {
			t.Errorf("%s %s dated %v, before Start", r.RecordKind(), r.RecordID(), d)
		}
		if _, off := d.Zone(); off != 2*3600 {
			t.Errorf("%s %s: zone offset %d, want Start's", r.RecordKind(), r.RecordID(), off)
		}
	}
}

func TestBadOptions(t *testing.T) {
	for _, n := range []int{-1, MaxClients + 1} {
		if _, err := Generate(Options{Clients: n}); err == nil {
			t.Errorf("Clients %d: no error", n)
		}
	}
	recs := generate(t, 0, 1)
	for _, r := range recs {
		if r.RecordKind() != kap.KindProvider {
			t.Errorf("0 clients gave a %s", r.RecordKind())
		}
	}
}

func TestWriteDir(t *testing.T) {
	recs := generate(t, 12, 5)
	dir := filepath.Join(t.TempDir(), "out")
	paths, err := WriteDir(dir, recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != len(recs) {
		t.Fatalf("%d paths for %d records", len(paths), len(recs))
	}
	entries, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(entries) // lexical order must be the submission order
	if len(entries) != len(recs) {
		t.Fatalf("%d files for %d records", len(entries), len(recs))
	}
	for i, p := range entries {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := kap.DecodeRecord(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if rec.RecordKind() != recs[i].RecordKind() || rec.RecordID() != recs[i].RecordID() {
			t.Errorf("file %d (%s) holds %s %s, want %s %s", i, filepath.Base(p),
				rec.RecordKind(), rec.RecordID(), recs[i].RecordKind(), recs[i].RecordID())
		}
	}
	if _, err := WriteDir(dir, []kap.Record{nil}); err == nil {
		t.Error("nil record: no error")
	}
}

func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(strconv.Itoa(n)+"clients", func(b *testing.B) {
			var recs int
			for b.Loop() {
				r, err := Generate(Options{Clients: n, Seed: 1})
				if err != nil {
					b.Fatal(err)
				}
				recs = len(r)
			}
			b.ReportMetric(float64(recs), "records/op")
		})
	}
}
