package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/admin"
	"github.com/kapbridge/kap/adapters/bolt"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/adapters/ndjson"
	"github.com/kapbridge/kap/adapters/targetauth"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/config"
	"github.com/kapbridge/kap/internal/delivery"
)

const (
	tenant   = "clinic1"
	adminKey = "kap_admin_test_key_0123456789abcdef"
	apiKey   = "kap_api_test_key_0123456789abcdef"
)

// chromium returns the system Chromium, or skips (locally) / fails (CI=true)
// with the install command.
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no browser")
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	skipOrFail(t, "no Chromium: run scripts/test-deps.sh (apt-get install chromium)")
	return ""
}

// browser starts a headless Chromium that reaches for nothing but the test
// server, at a laptop's 1366x768.
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1366, 768),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 8*time.Minute)
	t.Cleanup(cancel3)
	if err := chromedp.Run(ctx); err != nil { // starts the browser: not under a step bound
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// shots saves screenshots: into docs/img when KAPBRIDGE_UPDATE_SCREENSHOTS=1
// (docs/admin.md shows them), else into $KAPBRIDGE_ARTIFACTS/admin or a
// temporary folder, as test artifacts.
type shots struct {
	t   *testing.T
	dir string
}

func newShots(t *testing.T) *shots {
	dir := os.Getenv("KAPBRIDGE_ARTIFACTS")
	switch {
	case os.Getenv("KAPBRIDGE_UPDATE_SCREENSHOTS") == "1":
		dir = filepath.Join("..", "..", "docs", "img")
	case dir != "":
		dir = filepath.Join(dir, "admin")
	default:
		dir = filepath.Join(os.TempDir(), "kapbridge-admin-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return &shots{t: t, dir: dir}
}

func (s *shots) take(name string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		var b []byte
		if err := chromedp.CaptureScreenshot(&b).Do(ctx); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(s.dir, "admin-"+name+".png"), b, 0o644)
	})
}

// gateway is the whole gateway of the test: the API, the console, the
// worker delivering to a real FHIR server and to an NDJSON folder.
type gateway struct {
	URL    string
	Store  kap.Store
	Peer   *fhirPeer
	Audit  *syncBuffer
	Worker *delivery.Worker
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startGateway(t *testing.T) *gateway {
	t.Helper()
	peer := startPeer(t)
	store, err := bolt.Open(filepath.Join(t.TempDir(), "kap.db"), bolt.Options{LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	codec, err := fhir.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	files := t.TempDir()
	targets := []config.Target{
		{Name: "ehr", Type: "fhir", BaseURL: peer.Base, Profile: "generic", MaxAttempts: 2},
		{Name: "files", Type: "ndjson", Dir: files},
	}
	es, err := ehr.New(ehr.Options{Name: "ehr", BaseURL: peer.Base, ProfileName: "generic", Codec: codec,
		Ledger: store.Ledger(), Cache: store.Cache(), Logger: log, AttemptTimeout: 30 * time.Second, TotalTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	nd, err := ndjson.New(ndjson.Options{Name: "files", Dir: files})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Close() })
	w, err := delivery.New(delivery.Config{Store: store, Logger: log,
		Targets: []delivery.Target{
			{Sender: es, SendTimeout: 90 * time.Second, Backoff: kap.Backoff{Base: 50 * time.Millisecond, Max: 100 * time.Millisecond, MaxAttempts: 2}},
			{Sender: nd},
		},
		Breaker: delivery.Breaker{Failures: 2, OpenFor: 300 * time.Millisecond},
		PollMin: 10 * time.Millisecond, PollMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A smart-backend target (no worker) whose keyFile is a directory, for
	// the keys page's rotation.
	key, err := targetauth.GenerateKey(targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	pemData, err := key.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, key.ID+".pem"), pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	ks, err := targetauth.LoadKeys(keyDir, "", targetauth.ES384)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{
		Tenants: []config.Tenant{{Name: tenant, APIKeys: []config.APIKey{
			{Name: "it-admin", SHA256: httpapi.HashKey(adminKey), Admin: true},
			{Name: "emr", SHA256: httpapi.HashKey(apiKey)},
		}}},
		Targets: append(slices.Clone(targets), config.Target{Name: "signed", Type: "fhir", BaseURL: peer.Base, Profile: "generic",
			Auth: config.TargetAuth{Type: targetauth.TypeSMARTBackend, TokenURL: peer.Base + "/token", ClientID: "kap", KeyFile: keyDir, Alg: targetauth.ES384}}),
	}
	audit := &syncBuffer{}
	console, err := admin.New(admin.Config{Store: store, Codec: codec, Config: cfg, Health: w, Wake: w.Wake,
		KeySets: []*targetauth.KeySet{ks}, Audit: audit, Logger: log, SampleEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{Store: store, Codec: codec, Tenants: cfg.Tenants, Targets: []string{"ehr", "files"},
		Logger: log, Admin: console, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	console.Start()
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		w.Stop(ctx)
		cancel()
		console.Close()
		store.Close()
	})
	return &gateway{URL: srv.URL, Store: store, Peer: peer, Audit: audit, Worker: w}
}

var collections = func() map[kap.Kind]string {
	m := map[kap.Kind]string{}
	for c, k := range httpapi.Collections {
		m[k] = c
	}
	return m
}()

// put submits a testdata record through the API and returns its stored
// form.
func (g *gateway) put(t *testing.T, file string) kap.StoredRecord {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "kap", file))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := kap.DecodeRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, g.URL+"/kap/v1/"+collections[rec.RecordKind()]+"/"+rec.RecordID(), bytes.NewReader(data))
	req.Header.Set("X-API-Key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %d %s", file, resp.StatusCode, body)
	}
	sr, err := g.Store.Records().Get(context.Background(), tenant, string(rec.RecordKind()), rec.RecordID())
	if err != nil {
		t.Fatal(err)
	}
	return sr
}

// waitFor polls cond until it holds or the (generous) timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *gateway) stats(t *testing.T, target string) kap.OutboxStats {
	st, err := g.Store.Outbox().Stats(context.Background(), target)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ownResource is the resource of rec that only rec maps (its business
// identifier carries the record id), to look for at the FHIR server.
func ownResource(t *testing.T, rec kap.StoredRecord) kap.ResourceRef {
	t.Helper()
	for _, r := range rec.Resources {
		if strings.HasSuffix(r.Value, rec.ID) || strings.Contains(r.Value, rec.ID+"/") || r.Value == rec.ID {
			return r
		}
	}
	t.Fatalf("no resource of %s/%s carries its id: %+v", rec.Kind, rec.ID, rec.Resources)
	return kap.ResourceRef{}
}

// text returns the visible text of the first node matching sel.
func text(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	var s string
	if err := run(ctx, chromedp.Text(sel, &s, chromedp.ByQuery)); err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// reloadUntil reloads the page until the text of sel contains want.
func reloadUntil(ctx context.Context, t *testing.T, sel, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var s string
		err := run(ctx, chromedp.Reload(), chromedp.WaitReady("body"), chromedp.Text(sel, &s, chromedp.ByQuery, chromedp.AtLeast(0)))
		if err == nil && strings.Contains(s, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q (last: %q, err %v)", sel, want, s, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	g := startGateway(t)
	shot := newShots(t)
	ctx := browser(t, exe)
	bg := context.Background()

	// Records delivered while the EHR is up.
	for _, f := range []string{"00-provider-prescriber.json", "01-provider-therapist.json", "02-provider-nurse.json"} {
		g.put(t, f)
	}
	waitFor(t, "the providers delivered", 90*time.Second, func() bool { return g.stats(t, "ehr").Depth == 0 })
	for _, f := range []string{"10-client-c001.json", "11-intake-c001.json", "12-consent-c001.json", "13-plan-c001.json"} {
		g.put(t, f)
	}
	waitFor(t, "client c001 delivered", 90*time.Second, func() bool { return g.stats(t, "ehr").Depth == 0 })
	if st := g.stats(t, "ehr"); st.DeadLetters != 0 {
		t.Fatalf("dead letters while the EHR is up: %+v", st)
	}

	// Log in (by keyboard: type the key, press Enter).
	var loc string
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/"),
		chromedp.WaitVisible("#key", chromedp.ByID),
		shot.take("login"),
		chromedp.SendKeys("#key", "wrong-key\r", chromedp.ByID),
		chromedp.WaitVisible("#login-error", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, "#login-error"); !strings.Contains(s, "not an admin key") {
		t.Fatalf("wrong key: %q", s)
	}
	if err := run(ctx,
		chromedp.SendKeys("#key", adminKey+"\r", chromedp.ByID),
		chromedp.WaitVisible("#target-ehr", chromedp.ByID),
		chromedp.Location(&loc),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(loc, "/admin/") {
		t.Fatalf("after login at %s", loc)
	}
	if s := text(ctx, t, "#tenant"); s != tenant {
		t.Fatalf("tenant shown %q", s)
	}
	// The session cookie is HttpOnly and SameSite=Strict.
	var cookies []*cdpCookie
	if err := run(ctx, getCookies(&cookies)); err != nil {
		t.Fatal(err)
	}
	if len(cookies) != 1 || !cookies[0].HTTPOnly || cookies[0].SameSite != "Strict" || cookies[0].Path != "/admin" {
		t.Fatalf("session cookie: %+v", cookies)
	}
	var delivered int64
	for _, th := range g.Worker.Health().Targets {
		if th.Name == "ehr" {
			delivered = th.Delivered
		}
	}
	if delivered < 7 {
		t.Fatalf("the worker delivered %d records to the EHR, want at least 7", delivered)
	}
	reloadUntil(ctx, t, "#target-ehr .hour-delivered", fmt.Sprint(delivered), 30*time.Second)
	if err := run(ctx, shot.take("overview")); err != nil {
		t.Fatal(err)
	}
	// Keyboard: the first Tab lands on the skip link, which moves focus
	// to the page's content.
	var focused string
	if err := run(ctx,
		chromedp.KeyEvent(kb.Tab),
		chromedp.Evaluate(`document.activeElement.className`, &focused),
	); err != nil {
		t.Fatal(err)
	}
	if focused != "skip" {
		t.Fatalf("first Tab focuses %q, want the skip link", focused)
	}
	if err := run(ctx, chromedp.KeyEvent(kb.Enter), chromedp.Evaluate(`document.activeElement.id`, &focused)); err != nil {
		t.Fatal(err)
	}
	if focused != "main" {
		t.Fatalf("the skip link moved focus to %q", focused)
	}

	// The EHR goes down: every connection is closed. Three records fail
	// their two attempts and become dead letters.
	g.Peer.Stop(t)
	ds1 := g.put(t, "16-dosing-c001-1.json")
	is1 := g.put(t, "17-integration-c001-1.json")
	ds2 := g.put(t, "18-dosing-c001-2.json")
	waitFor(t, "three dead letters", 120*time.Second, func() bool { return g.stats(t, "ehr").DeadLetters == 3 })
	reloadUntil(ctx, t, "#target-ehr h2", "failing", 30*time.Second)
	if s := text(ctx, t, "#target-ehr .lasterror"); !strings.Contains(s, "could not be reached") && !strings.Contains(s, "did not answer") {
		t.Fatalf("last error not in words: %q", s)
	}
	if s := text(ctx, t, "#target-ehr .dead"); strings.TrimSpace(s) != "3" {
		t.Fatalf("dead letters shown: %q", s)
	}
	if s := text(ctx, t, "#target-files h2"); strings.Contains(s, "failing") {
		t.Fatalf("the NDJSON target is shown failing: %q", s)
	}
	if err := run(ctx, shot.take("overview-failing")); err != nil {
		t.Fatal(err)
	}
	own := ownResource(t, ds1)
	if n := g.Peer.Count(t, own.Type, own.System, own.Value); n != 0 {
		t.Fatalf("%s at the EHR during the outage: %d", own.Type, n)
	}

	// The EHR is back; retry the first dead letter from the page.
	g.Peer.Restart(t)
	id1 := kap.MessageFor(ds1, "ehr", time.Time{}).ID
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/dead-letters"),
		chromedp.WaitVisible("#dl-ehr", chromedp.ByID),
		shot.take("dead-letters"),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, `#dl-ehr tr[data-id="`+id1+`"] .reason`); !strings.Contains(s, "could not be reached") && !strings.Contains(s, "attempts failed") {
		t.Fatalf("reason not in words: %q", s)
	}
	if err := run(ctx,
		chromedp.Click(`#dl-ehr tr[data-id="`+id1+`"] button.retry`, chromedp.ByQuery),
		chromedp.WaitVisible(".flash", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, ".flash"); !strings.Contains(s, "queued again") {
		t.Fatalf("flash after retry: %q", s)
	}
	// ... and see it delivered: the trace says so, and the EHR has it.
	if err := run(ctx, chromedp.Navigate(g.URL+"/admin/records/DosingSession/"+ds1.ID)); err != nil {
		t.Fatal(err)
	}
	reloadUntil(ctx, t, "main", "ehr: delivered", 90*time.Second)
	if n := g.Peer.Count(t, own.Type, own.System, own.Value); n != 1 {
		t.Fatalf("%s at the EHR after the retry: %d", own.Type, n)
	}
	if err := run(ctx, shot.take("trace")); err != nil {
		t.Fatal(err)
	}

	// Discard the integration session's dead letter with a reason.
	idIS := kap.MessageFor(is1, "ehr", time.Time{}).ID
	row := `#dl-ehr tr[data-id="` + idIS + `"]`
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/dead-letters"),
		chromedp.WaitVisible(row, chromedp.ByQuery),
		chromedp.Click(row+" details.discard summary", chromedp.ByQuery),
		chromedp.SendKeys(row+` input[name="reason"]`, "entered in the EHR by hand; duplicate", chromedp.ByQuery),
		shot.take("discard"),
		chromedp.Click(row+" button.danger", chromedp.ByQuery),
		chromedp.WaitVisible(".flash", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := run(ctx, chromedp.Evaluate(`document.querySelectorAll('#dl-ehr tr.dl').length`, &rows)); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("dead letters listed after retry and discard: %d, want 1", rows)
	}
	if ev := findAudit(t, g.Audit.String(), "discard"); ev == nil || !strings.Contains(ev.Details["reason"], "duplicate") ||
		ev.Who != "key:it-admin" || ev.Details["message"] != idIS {
		t.Fatalf("the discard is not audited: %s", g.Audit.String())
	}
	if st, err := g.Store.Outbox().Status(bg, tenant, "ehr", idIS); kap.ErrorCode(err) != kap.ENOTFOUND {
		t.Fatalf("the discarded message is still in the outbox: %+v %v", st, err)
	}

	// Retry all the rest for the target, with progress shown.
	if err := run(ctx,
		chromedp.Click("#retry-all-ehr", chromedp.ByID),
		chromedp.WaitVisible("#progress", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	waitText(ctx, t, "#job-state", "finished", 30*time.Second)
	if s := text(ctx, t, "#job-done") + "/" + text(ctx, t, "#job-total"); s != "1/1" {
		t.Fatalf("progress %s", s)
	}
	if err := run(ctx, shot.take("retry-all")); err != nil {
		t.Fatal(err)
	}
	own2 := ownResource(t, ds2)
	waitFor(t, "the second dosing session at the EHR", 90*time.Second, func() bool {
		return g.Peer.Count(t, own2.Type, own2.System, own2.Value) == 1
	})

	// Deliveries: the search is a POST; the client id never enters the URL.
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/deliveries"),
		chromedp.WaitVisible("#client", chromedp.ByID),
		chromedp.SendKeys("#client", "c001", chromedp.ByID),
		chromedp.Click(`form.search button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible("#results", chromedp.ByID),
		chromedp.Location(&loc),
		shot.take("deliveries"),
	); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(loc, "c001") {
		t.Fatalf("the client id is in the URL: %s", loc)
	}
	res := text(ctx, t, "#results")
	if !strings.Contains(res, ds1.ID) || !strings.Contains(res, "ehr: delivered") || !strings.Contains(res, "ehr: discarded") {
		t.Fatalf("search results: %q", res)
	}

	// Targets: connection test against the running EHR.
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/targets"),
		chromedp.Click("#test-ehr", chromedp.ByID),
		chromedp.WaitVisible("#test-result-ehr", chromedp.ByID),
		shot.take("targets"),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, "#test-result-ehr"); !strings.Contains(s, "Connection works") || !strings.Contains(s, "FHIR 4.0") || !strings.Contains(s, "write strategy") {
		t.Fatalf("connection test: %q", s)
	}
	if s := text(ctx, t, "main"); strings.Contains(s, "internal error") || !strings.Contains(s, "Preflight of a sample dosing session") {
		t.Fatalf("targets page: %.600q", s)
	}

	// Mapping preview of a record with an error: the field is named.
	bad := `{"kind":"Client","id":"c-preview","name":{"family":"Example","given":["Pat"]},"birthDate":"1984-13-45","gender":"female"}`
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/mapping"),
		chromedp.WaitVisible("#record", chromedp.ByID),
		chromedp.SetValue("#record", bad, chromedp.ByID),
		chromedp.Click("#preview", chromedp.ByID),
		chromedp.WaitVisible("#issues", chromedp.ByID),
		shot.take("mapping-error"),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, "#issues"); !strings.Contains(s, "birthDate") {
		t.Fatalf("the issue does not name the field: %q", s)
	}
	good, _ := os.ReadFile(filepath.Join("..", "..", "testdata", "kap", "16-dosing-c001-1.json"))
	if err := run(ctx,
		chromedp.SetValue("#record", string(good), chromedp.ByID),
		chromedp.Click("#preview", chromedp.ByID),
		chromedp.WaitVisible("#bundle", chromedp.ByID),
		shot.take("mapping"),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, "#bundle"); !strings.Contains(s, `"resourceType": "Bundle"`) {
		t.Fatalf("bundle: %.200q", s)
	}

	// Unknown outcomes. Fault injection: the answer to the write of one
	// delivered resource was lost, so the ledger holds it as unknown (what
	// the worker records when a write gets no answer). Resolving it from
	// the page reads the EHR, which has it: the ledger is confirmed with
	// the EHR's id again.
	lost := kap.LedgerKey{Tenant: tenant, Target: "ehr", ResourceType: own.Type, Identifier: own.System + "|" + own.Value}
	before, err := g.Store.Ledger().Get(bg, lost)
	if err != nil || before.State != kap.LedgerConfirmed || before.TargetID == "" {
		t.Fatalf("ledger of a delivered resource: %+v %v", before, err)
	}
	if err := g.Store.Ledger().Put(bg, kap.LedgerEntry{LedgerKey: lost, State: kap.LedgerUnknown, LastError: "no answer to the write"}); err != nil {
		t.Fatal(err)
	}
	row = `#unknown-ehr tr.unk[data-identifier="` + lost.Identifier + `"]`
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/unknown"), chromedp.WaitVisible(row, chromedp.ByQuery), shot.take("unknown"),
		chromedp.Click(row+" button.resolve", chromedp.ByQuery),
		chromedp.WaitVisible(".flash", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, ".flash"); !strings.Contains(s, "resolved by reading the target") {
		t.Fatalf("resolve: %q", s)
	}
	if e, err := g.Store.Ledger().Get(bg, lost); err != nil || e.State != kap.LedgerConfirmed || e.TargetID != before.TargetID {
		t.Fatalf("ledger after resolve: %+v %v (before %+v)", e, err, before)
	}
	var left int
	if err := run(ctx, chromedp.Evaluate(`document.querySelectorAll('#unknown-ehr tr.unk[data-identifier="`+lost.Identifier+`"]').length`, &left)); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatal("the resolved outcome is still listed")
	}

	// Keys: the gateway's JWKS with the key in use.
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/keys"), chromedp.WaitVisible("#keys", chromedp.ByID), shot.take("keys"),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, "#keys"); !strings.Contains(s, "active") {
		t.Fatalf("keys: %q", s)
	}
	// One rotation: publish a new key, then make it the signing key.
	if err := run(ctx,
		chromedp.Click("#rotate-signed button.publish", chromedp.ByQuery),
		chromedp.WaitVisible(".flash", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, ".flash"); !strings.Contains(s, "does not sign yet") {
		t.Fatalf("publish: %q", s)
	}
	if s := text(ctx, t, "#rotate-signed"); strings.Count(s, "published only") != 1 || strings.Count(s, "signing") < 1 {
		t.Fatalf("after publish: %q", s)
	}
	if err := run(ctx,
		chromedp.Click("#rotate-signed button.activate", chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	// The previous page had a flash too: wait for the new page's address
	// (evaluation errors while the page navigates are expected).
	for deadline := time.Now().Add(30 * time.Second); ; {
		var loc string
		if run(ctx, chromedp.Evaluate(`location.search`, &loc)) == nil && strings.Contains(loc, "key-activated") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("activation did not answer with the keys page")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := run(ctx, chromedp.WaitVisible(".flash", chromedp.ByQuery), shot.take("keys-rotated")); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, ".flash"); !strings.Contains(s, "now signs") {
		t.Fatalf("activate: %q", s)
	}
	if ev := findAudit(t, g.Audit.String(), "key-activate"); ev == nil || ev.Details["target"] != "signed" || ev.Details["kid"] == "" ||
		ev.Details["previous"] == ev.Details["kid"] {
		t.Fatalf("activate audit: %s", g.Audit.String())
	}
	if s := text(ctx, t, "#rotate-signed"); !strings.Contains(s, "published only") {
		t.Fatalf("the previous key left the page at activation: %q", s)
	}

	// Every visible form control has a label.
	var unlabelled []string
	for _, p := range []string{"/admin/deliveries", "/admin/dead-letters", "/admin/mapping", "/admin/targets"} {
		var u []string
		if err := run(ctx, chromedp.Navigate(g.URL+p), chromedp.WaitReady("main"), chromedp.Evaluate(`
			Array.from(document.querySelectorAll('input:not([type=hidden]),select,textarea'))
			  .filter(e => !(e.id && document.querySelector('label[for="'+e.id+'"]')) && !e.getAttribute('aria-label'))
			  .map(e => e.name)`, &u)); err != nil {
			t.Fatal(err)
		}
		unlabelled = append(unlabelled, u...)
	}
	if len(unlabelled) > 0 {
		t.Fatalf("form controls without a label: %v", unlabelled)
	}

	// Sign out: the old cookie no longer opens the console.
	if err := run(ctx,
		chromedp.Navigate(g.URL+"/admin/"),
		chromedp.Click(".logout button", chromedp.ByQuery),
		chromedp.WaitVisible("#key", chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if s := text(ctx, t, ".flash"); !strings.Contains(s, "signed out") {
		t.Fatalf("after sign-out: %q", s)
	}
}

// waitText polls the text of sel until it contains want.
func waitText(ctx context.Context, t *testing.T, sel, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var s string
		err := run(ctx, chromedp.Text(sel, &s, chromedp.ByQuery))
		if err == nil && strings.Contains(s, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q (last %q, %v)", sel, want, s, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type cdpCookie struct {
	Name, Path, SameSite string
	HTTPOnly, Secure     bool
}

func getCookies(out *[]*cdpCookie) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		cs, err := networkGetCookies(ctx)
		if err != nil {
			return err
		}
		for _, c := range cs {
			*out = append(*out, c)
		}
		return nil
	})
}

func networkGetCookies(ctx context.Context) ([]*cdpCookie, error) {
	cs, err := network.GetCookies().Do(ctx)
	if err != nil {
		return nil, err
	}
	var out []*cdpCookie
	for _, c := range cs {
		out = append(out, &cdpCookie{Name: c.Name, Path: c.Path, SameSite: string(c.SameSite), HTTPOnly: c.HTTPOnly, Secure: c.Secure})
	}
	return out, nil
}

// run runs browser actions with a bound of its own, so a page that never
// shows what a step waits for fails the step instead of hanging the test.
func run(ctx context.Context, actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}
