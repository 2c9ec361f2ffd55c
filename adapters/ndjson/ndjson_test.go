package ndjson_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ndjson"
)

var day0 = time.Date(2026, 3, 14, 23, 59, 0, 0, time.UTC)

func msg(tenant, id string, version int) kap.OutboxMessage {
	bundle := fmt.Sprintf("{\n  \"resourceType\": \"Bundle\",\n  \"type\": \"transaction\",\n  \"id\": %q\n}", id)
	return kap.OutboxMessage{
		ID: fmt.Sprintf("DosingSession/%s/%d", id, version), Tenant: tenant, Target: "files", ClientID: "c1",
		Kind: "DosingSession", RecordID: id, Version: version, Bundle: json.RawMessage(bundle),
		Resources: []kap.ResourceRef{{Type: "Procedure", System: "https://fhir.kapbridge.org/id/" + tenant + "/session", Value: id}},
	}
}

func open(t *testing.T, dir string, now func() time.Time) *ndjson.Sender {
	t.Helper()
	s, err := ndjson.New(ndjson.Options{Name: "files", Dir: filepath.Join(dir, "files"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func TestWritesOneLinePerBundleWithModes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func() time.Time { return day0 })
	ctx := context.Background()
	for i := range 3 {
		res, err := s.Send(ctx, msg("clinic", fmt.Sprintf("s%d", i), 1))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Resources) != 1 || res.Resources[0].TargetID != fmt.Sprintf("2026-03-14.ndjson:%d", i+1) ||
			res.Resources[0].State != kap.LedgerConfirmed || res.Resources[0].Identifier != "https://fhir.kapbridge.org/id/clinic/session|s"+fmt.Sprint(i) {
			t.Fatalf("result %d: %+v", i, res)
		}
	}
	path := filepath.Join(dir, "files", "2026-03-14.ndjson")
	got := lines(t, path)
	if len(got) != 3 {
		t.Fatalf("%d lines, want 3", len(got))
	}
	for i, l := range got {
		var b map[string]any
		if err := json.Unmarshal([]byte(l), &b); err != nil || b["resourceType"] != "Bundle" || b["id"] != fmt.Sprintf("s%d", i) {
			t.Fatalf("line %d = %q (%v)", i, l, err)
		}
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{path, 0o600}, {filepath.Join(dir, "files"), 0o700 | os.ModeDir}, {filepath.Join(dir, "files", ".index"), 0o700 | os.ModeDir},
		{filepath.Join(dir, "files", ".index", "2026-03-14.idx"), 0o600}} {
		st, err := os.Stat(p.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != p.mode {
			t.Errorf("%s: mode %v, want %v", p.path, st.Mode(), p.mode)
		}
	}
}

func TestRedeliveryIsNotWrittenTwiceAcrossRestartAndDays(t *testing.T) {
	dir := t.TempDir()
	now := day0
	clock := func() time.Time { return now }
	s, err := ndjson.New(ndjson.Options{Name: "files", Dir: filepath.Join(dir, "files"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := s.Send(ctx, msg("clinic", "s1", 1))
	if err != nil {
		t.Fatal(err)
	}
	// Same process, same message.
	again, err := s.Send(ctx, msg("clinic", "s1", 1))
	if err != nil || again.Resources[0].TargetID != first.Resources[0].TargetID {
		t.Fatalf("redelivery: %+v %v", again, err)
	}
	// Another tenant's message with the same id is a different message.
	if _, err := s.Send(ctx, msg("other", "s1", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The process restarts after midnight; the outbox redelivers.
	now = day0.Add(2 * time.Minute)
	s2 := open(t, dir, clock)
	again, err = s2.Send(ctx, msg("clinic", "s1", 1))
	if err != nil || again.Resources[0].TargetID != "2026-03-14.ndjson:1" {
		t.Fatalf("redelivery after restart: %+v %v", again, err)
	}
	next, err := s2.Send(ctx, msg("clinic", "s1", 2))
	if err != nil || next.Resources[0].TargetID != "2026-03-15.ndjson:1" {
		t.Fatalf("version 2: %+v %v", next, err)
	}
	if n := len(lines(t, filepath.Join(dir, "files", "2026-03-14.ndjson"))); n != 2 {
		t.Fatalf("day 1 has %d lines, want 2", n)
	}
	if n := len(lines(t, filepath.Join(dir, "files", "2026-03-15.ndjson"))); n != 1 {
		t.Fatalf("day 2 has %d lines, want 1", n)
	}
}

// A crash after the intent and in the middle of the data line: the partial
// line is removed on open and the message is written again whole.
func TestRepairsATornWrite(t *testing.T) {
	dir := t.TempDir()
	clock := func() time.Time { return day0 }
	s, err := ndjson.New(ndjson.Options{Name: "files", Dir: filepath.Join(dir, "files"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Send(ctx, msg("clinic", "s1", 1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	data := filepath.Join(dir, "files", "2026-03-14.ndjson")
	idx := filepath.Join(dir, "files", ".index", "2026-03-14.idx")
	before, _ := os.ReadFile(data)
	// Simulate the crash: the intent of s2 is durable, half its line is.
	line := `{"resourceType":"Bundle","type":"transaction","id":"s2"}` + "\n"
	appendFile(t, idx, fmt.Sprintf(`{"t":"clinic","m":"DosingSession/s2/1","o":%d,"n":%d,"l":2}`+"\n", len(before), len(line)))
	appendFile(t, data, line[:20])
	// and a torn index line after it would be dropped too.
	s2 := open(t, dir, clock)
	after, _ := os.ReadFile(data)
	if !bytes.Equal(after, before) {
		t.Fatalf("the torn line was not removed:\n%s", after)
	}
	res, err := s2.Send(ctx, msg("clinic", "s2", 1))
	if err != nil || res.Resources[0].TargetID != "2026-03-14.ndjson:2" {
		t.Fatalf("rewrite: %+v %v", res, err)
	}
	got := lines(t, data)
	if len(got) != 2 || got[1] != strings.TrimSuffix(line, "\n") {
		t.Fatalf("lines: %q", got)
	}
	// A completed write with its intent is kept and not repeated.
	s2.Close()
	appendFile(t, idx, `{"t":"clinic","m":"Dosing`) // torn index line
	s3 := open(t, dir, clock)
	if _, err := s3.Send(ctx, msg("clinic", "s2", 1)); err != nil {
		t.Fatal(err)
	}
	if n := len(lines(t, data)); n != 2 {
		t.Fatalf("%d lines after a torn index line, want 2", n)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	if _, err := ndjson.New(ndjson.Options{Name: "files", Dir: filepath.Join(dir, "files")}); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second open of the same folder: %v", err)
	}
	if _, err := ndjson.New(ndjson.Options{Name: "bad/name", Dir: dir}); err == nil {
		t.Fatal("a bad target name was accepted")
	}
	if _, err := ndjson.New(ndjson.Options{Name: "x"}); err == nil || !strings.Contains(err.Error(), "dir is required") {
		t.Fatalf("no dir: %v", err)
	}
	m := msg("clinic", "s1", 1)
	m.Bundle = json.RawMessage(`{"resourceType":`)
	_, err := s.Send(context.Background(), m)
	if se := kap.SendErrorOf(err); err == nil || se.Kind != kap.SendPermanent {
		t.Fatalf("invalid JSON: %v", err)
	}
	m.Bundle = nil
	_, err = s.Send(context.Background(), m)
	if se := kap.SendErrorOf(err); err == nil || se.Kind != kap.SendPermanent {
		t.Fatalf("no bundle: %v", err)
	}
	s.Close()
	if _, err := s.Send(context.Background(), msg("clinic", "s1", 1)); kap.SendErrorOf(err).Kind != kap.SendTransient || err == nil {
		t.Fatalf("send after close: %v", err)
	}
}

// Concurrent sends are group-committed: every message is one line, line
// numbers are unique, and after a restart each is found, not rewritten.
func TestConcurrentSendsAreGroupCommitted(t *testing.T) {
	dir := t.TempDir()
	clock := func() time.Time { return day0 }
	s, err := ndjson.New(ndjson.Options{Name: "files", Dir: filepath.Join(dir, "files"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Send(context.Background(), msg("clinic", fmt.Sprintf("s%d", i), 1))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = res.Resources[0].TargetID
		}()
	}
	wg.Wait()
	s.Close()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("position %s given twice", id)
		}
		seen[id] = true
	}
	data := filepath.Join(dir, "files", "2026-03-14.ndjson")
	got := lines(t, data)
	if len(got) != n {
		t.Fatalf("%d lines, want %d", len(got), n)
	}
	s2 := open(t, dir, clock)
	for i := range n {
		res, err := s2.Send(context.Background(), msg("clinic", fmt.Sprintf("s%d", i), 1))
		if err != nil || res.Resources[0].TargetID != ids[i] {
			t.Fatalf("s%d after restart: %+v %v (was %s)", i, res, err, ids[i])
		}
		// The position names the line that holds the message.
		var line int
		fmt.Sscanf(strings.TrimPrefix(ids[i], "2026-03-14.ndjson:"), "%d", &line)
		if !strings.Contains(got[line-1], fmt.Sprintf(`"id":"s%d"`, i)) {
			t.Fatalf("line %d holds %s, not s%d", line, got[line-1], i)
		}
	}
	if n2 := len(lines(t, data)); n2 != n {
		t.Fatalf("%d lines after redelivery, want %d", n2, n)
	}
}

// In the last batch, a line whose bytes do not match its CRC (pages lost in
// a crash) is dropped with every later one; the lines before are kept.
func TestRepairChecksTheLastBatchByCRC(t *testing.T) {
	dir := t.TempDir()
	clock := func() time.Time { return day0 }
	s, err := ndjson.New(ndjson.Options{Name: "files", Dir: filepath.Join(dir, "files"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), msg("clinic", "s1", 1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	data := filepath.Join(dir, "files", "2026-03-14.ndjson")
	idx := filepath.Join(dir, "files", ".index", "2026-03-14.idx")
	before, _ := os.ReadFile(data)
	l2 := `{"resourceType":"Bundle","id":"s2"}` + "\n"
	l3 := `{"resourceType":"Bundle","id":"s3"}` + "\n"
	off := len(before)
	appendFile(t, idx, fmt.Sprintf(`{"t":"clinic","m":"DosingSession/s2/1","o":%d,"n":%d,"l":2,"c":%d,"b":99}`+"\n", off, len(l2), crc32.ChecksumIEEE([]byte(l2))))
	appendFile(t, idx, fmt.Sprintf(`{"t":"clinic","m":"DosingSession/s3/1","o":%d,"n":%d,"l":3,"c":%d,"b":99}`+"\n", off+len(l2), len(l3), crc32.ChecksumIEEE([]byte(l3))))
	// s2 landed; s3's middle page did not (zeros), its newline did.
	appendFile(t, data, l2+strings.Repeat("\x00", len(l3)-1)+"\n")
	s2 := open(t, dir, clock)
	got := lines(t, data)
	if len(got) != 2 || !strings.Contains(got[1], `"s2"`) {
		t.Fatalf("lines after repair: %q", got)
	}
	res, err := s2.Send(context.Background(), msg("clinic", "s2", 1))
	if err != nil || res.Resources[0].TargetID != "2026-03-14.ndjson:2" {
		t.Fatalf("s2 was lost: %+v %v", res, err)
	}
	res, err = s2.Send(context.Background(), msg("clinic", "s3", 1))
	if err != nil || res.Resources[0].TargetID != "2026-03-14.ndjson:3" {
		t.Fatalf("s3 rewrite: %+v %v", res, err)
	}
	if n := len(lines(t, data)); n != 3 {
		t.Fatalf("%d lines, want 3", n)
	}
}

// The recipient took the day file away: the gateway still opens, does not
// write those messages again, and starts a new file for new ones.
func TestDayFileTakenAway(t *testing.T) {
	dir := t.TempDir()
	clock := func() time.Time { return day0 }
	s, err := ndjson.New(ndjson.Options{Name: "files", Dir: filepath.Join(dir, "files"), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), msg("clinic", "s1", 1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	data := filepath.Join(dir, "files", "2026-03-14.ndjson")
	if err := os.Rename(data, filepath.Join(dir, "processed.ndjson")); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dir, clock)
	if _, err := s2.Send(context.Background(), msg("clinic", "s1", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("a message the recipient took was written again")
	}
	res, err := s2.Send(context.Background(), msg("clinic", "s2", 1))
	if err != nil || res.Resources[0].TargetID != "2026-03-14.ndjson:1" {
		t.Fatalf("s2: %+v %v", res, err)
	}
	if got := lines(t, data); len(got) != 1 || !strings.Contains(got[0], `"s2"`) {
		t.Fatalf("new file: %q", got)
	}
}
