package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kapbridge/kap"
)

// Benchmarks of the console's pages on bbolt (no browser): what an
// administrator waits for. Figures in docs/admin.md.

var seedRound int

// seedDeadLetters dead-letters n record versions of distinct clients of
// clinic1 for "files".
func seedDeadLetters(b *testing.B, e *env, n int) {
	b.Helper()
	ctx := context.Background()
	seedRound++
	for i := range n {
		id := fmt.Sprintf("c%05d", i)
		rec := kap.StoredRecord{Tenant: "clinic1", Kind: "Client", ID: id, ClientID: id, ContentHash: fmt.Sprintf("h%d", seedRound),
			Record: json.RawMessage(`{"kind":"Client","id":"` + id + `"}`), Date: time.Now()}
		if _, _, err := e.store.Records().Put(ctx, rec, kap.PutOptions{Targets: []string{"files"}}); err != nil {
			b.Fatal(err)
		}
	}
	for left := n; left > 0; {
		ls, err := e.store.Outbox().Lease(ctx, "files", 1000)
		if err != nil || len(ls) == 0 {
			b.Fatalf("lease: %v %d", err, len(ls))
		}
		for _, l := range ls {
			a := kap.Attempt{At: time.Now(), Status: 503, Error: "delivery transient (HTTP 503)"}
			if err := e.store.Outbox().DeadLetter(ctx, l, "10 attempts failed; last: delivery transient (HTTP 503)", a); err != nil {
				b.Fatal(err)
			}
		}
		left -= len(ls)
	}
}

func benchEnv(b *testing.B) (*env, *http.Client) {
	e := newEnv(b, false)
	c := e.client(b)
	resp, err := c.PostForm(e.srv.URL+"/admin/login", url.Values{"key": {adminKey}})
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	return e, c
}

func get(b *testing.B, c *http.Client, u string) string {
	resp, err := c.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	return sb.String()
}

func BenchmarkOverview500DeadLetters(b *testing.B) {
	e, c := benchEnv(b)
	seedDeadLetters(b, e, 500)
	for b.Loop() {
		get(b, c, e.srv.URL+"/admin/")
	}
}

func BenchmarkDeadLettersPage500(b *testing.B) {
	e, c := benchEnv(b)
	seedDeadLetters(b, e, 500)
	if s := get(b, c, e.srv.URL+"/admin/dead-letters"); strings.Count(s, `class="dl"`) != 500 {
		b.Fatalf("rows: %d", strings.Count(s, `class="dl"`))
	}
	for b.Loop() {
		get(b, c, e.srv.URL+"/admin/dead-letters")
	}
}

var jobRE = regexp.MustCompile(`/admin/jobs/([0-9a-f]+)`)

// BenchmarkRetryAll500 times "retry all" of 500 dead letters, from the
// click to the job's end.
func BenchmarkRetryAll500(b *testing.B) {
	e, c := benchEnv(b)
	for b.Loop() {
		b.StopTimer()
		seedDeadLetters(b, e, 500)
		tok := csrfRE.FindStringSubmatch(get(b, c, e.srv.URL+"/admin/dead-letters"))[1]
		b.StartTimer()
		resp, err := c.PostForm(e.srv.URL+"/admin/dead-letters/retry-all", url.Values{"csrf": {tok}, "target": {"files"}})
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		id := jobRE.FindStringSubmatch(resp.Header.Get("Location"))[1]
		for {
			var j struct{ State string }
			resp, err := c.Get(e.srv.URL + "/admin/jobs/" + id + "/status")
			if err != nil {
				b.Fatal(err)
			}
			json.NewDecoder(resp.Body).Decode(&j)
			resp.Body.Close()
			if j.State != "running" {
				if j.State != "finished" {
					b.Fatalf("job %s", j.State)
				}
				break
			}
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		// Drain the queue for the next round.
		for {
			ls, _ := e.store.Outbox().Lease(context.Background(), "files", 1000)
			if len(ls) == 0 {
				break
			}
			for _, l := range ls {
				e.store.Outbox().Ack(context.Background(), l)
			}
		}
		b.StartTimer()
	}
}

func BenchmarkMappingPreviewDosingSession(b *testing.B) {
	e, c := benchEnv(b)
	rec, err := os.ReadFile(filepath.Join("..", "..", "testdata", "kap", "16-dosing-c001-1.json"))
	if err != nil {
		b.Fatal(err)
	}
	tok := csrfRE.FindStringSubmatch(get(b, c, e.srv.URL+"/admin/mapping"))[1]
	for b.Loop() {
		resp, err := c.PostForm(e.srv.URL+"/admin/mapping", url.Values{"csrf": {tok}, "record": {string(rec)}})
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("preview: %d", resp.StatusCode)
		}
	}
}
