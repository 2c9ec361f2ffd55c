package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/httpapi"
	kapredis "github.com/kapbridge/kap/adapters/redis"
	"github.com/kapbridge/kap/adapters/redis/redistest"
)

// Message-format compatibility across versions (docs/operations.md,
// "Upgrades"). testdata/compat/v1/ holds what the gateway of format v1 left
// in Redis after accepting one dosing session and one client for an NDJSON
// target and before any worker ran: every key, as a readable dump
// (redis-dump.json), and the queued OutboxMessage JSON by itself
// (outbox-message.json). TestCompatV1 loads the dump into a fresh Redis and
// lets the current binary's worker deliver it.
//
// To add v2 when the format changes: keep v1, run
//
//	KAPBRIDGE_COMPAT_WRITE=v2 go test ./internal/cluster/ -run TestCompatWrite
//
// and make TestCompat* cover both.

const compatTenant, compatKey = "clinic-a", "compat-fixture-api-key"

// keyDump is one Redis key of the dump.
type keyDump struct {
	Key    string              `json:"key"`
	Type   string              `json:"type"`
	TTLms  int64               `json:"ttlMs,omitempty"`
	String string              `json:"string,omitempty"`
	Hash   map[string]string   `json:"hash,omitempty"`
	List   []string            `json:"list,omitempty"`
	Set    []string            `json:"set,omitempty"`
	ZSet   []zmember           `json:"zset,omitempty"`
	Stream []streamEntry       `json:"stream,omitempty"`
	Groups []streamGroup       `json:"groups,omitempty"`
	Extra  map[string][]string `json:"extra,omitempty"`
}

type zmember struct {
	Member string  `json:"member"`
	Score  float64 `json:"score"`
}

type streamEntry struct {
	ID     string            `json:"id"`
	Fields map[string]string `json:"fields"`
}

type streamGroup struct {
	Name            string `json:"name"`
	LastDeliveredID string `json:"lastDeliveredId"`
}

func compatDir(version string) string {
	return filepath.Join(rootDir, "testdata", "compat", version)
}

// compatConfig is the configuration of both the writing and the
// delivering gateway: one tenant, one ndjson target in dir.
func compatConfig(t testing.TB, dir string) string {
	t.Helper()
	cfg := map[string]any{
		"tenants": []map[string]any{{"name": compatTenant, "targets": []string{"ndjson"},
			"apiKeys": []map[string]any{{"name": "compat", "sha256": httpapi.HashKey(compatKey)}}}},
		"targets": []map[string]any{{"name": "ndjson", "type": "ndjson", "dir": dir}},
	}
	b, _ := json.Marshal(cfg)
	p := filepath.Join(t.TempDir(), "kapbridge.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCompatWrite writes the fixture of the current format with the real
// binary (an API process on a fresh Redis), when KAPBRIDGE_COMPAT_WRITE
// names the version directory.
func TestCompatWrite(t *testing.T) {
	version := os.Getenv("KAPBRIDGE_COMPAT_WRITE")
	if version == "" {
		t.Skip("set KAPBRIDGE_COMPAT_WRITE=vN to write testdata/compat/vN")
	}
	rs := redistest.Start(t, redistest.Options{})
	cfg := compatConfig(t, t.TempDir())
	api := startProc(t, "api", "api", cfg, "redis://"+rs.Addr)
	for _, f := range []string{"10-client-c001.json", "16-dosing-c001-1.json"} {
		body, err := os.ReadFile(filepath.Join(rootDir, "testdata", "kap", f))
		if err != nil {
			t.Fatal(err)
		}
		coll := "clients"
		if strings.Contains(f, "dosing") {
			coll = "dosing-sessions"
		}
		req, _ := http.NewRequest(http.MethodPost, api.URL+"/kap/v1/"+coll, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", compatKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %d", f, resp.StatusCode)
		}
	}
	api.Stop(t)
	c := goredis.NewClient(&goredis.Options{Addr: rs.Addr})
	defer c.Close()
	dump := dumpRedis(t, c)
	dir := compatDir(version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(dump, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "redis-dump.json"), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	// The first queued message by itself.
	for _, k := range dump {
		if strings.HasSuffix(k.Key, ":ob:ndjson:msgs") {
			for _, v := range k.Hash {
				var pretty bytes.Buffer
				json.Indent(&pretty, []byte(v), "", "  ")
				if strings.Contains(v, `"kind":"DosingSession"`) {
					os.WriteFile(filepath.Join(dir, "outbox-message.json"), append(pretty.Bytes(), '\n'), 0o644)
				}
			}
		}
	}
	t.Logf("wrote %d keys to %s", len(dump), dir)
}

// dumpRedis reads every key (SCAN) with its type, contents and TTL.
func dumpRedis(t testing.TB, c *goredis.Client) []keyDump {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	var out []keyDump
	for _, k := range keys {
		typ := c.Type(ctx, k).Val()
		d := keyDump{Key: k, Type: typ}
		if ttl := c.PTTL(ctx, k).Val(); ttl > 0 {
			d.TTLms = ttl.Milliseconds()
		}
		switch typ {
		case "string":
			d.String = c.Get(ctx, k).Val()
		case "hash":
			d.Hash = c.HGetAll(ctx, k).Val()
		case "list":
			d.List = c.LRange(ctx, k, 0, -1).Val()
		case "set":
			d.Set = c.SMembers(ctx, k).Val()
			sort.Strings(d.Set)
		case "zset":
			for _, z := range c.ZRangeWithScores(ctx, k, 0, -1).Val() {
				d.ZSet = append(d.ZSet, zmember{Member: z.Member.(string), Score: z.Score})
			}
		case "stream":
			for _, e := range c.XRange(ctx, k, "-", "+").Val() {
				f := map[string]string{}
				for fk, fv := range e.Values {
					f[fk] = fmt.Sprint(fv)
				}
				d.Stream = append(d.Stream, streamEntry{ID: e.ID, Fields: f})
			}
			for _, g := range c.XInfoGroups(ctx, k).Val() {
				if g.Pending != 0 {
					t.Fatalf("%s: group %s has pending entries; dump before any worker runs", k, g.Name)
				}
				d.Groups = append(d.Groups, streamGroup{Name: g.Name, LastDeliveredID: g.LastDeliveredID})
			}
		default:
			t.Fatalf("%s: type %s is not handled by the dump", k, typ)
		}
		out = append(out, d)
	}
	return out
}

// restoreRedis writes a dump into an empty Redis.
func restoreRedis(t testing.TB, c *goredis.Client, dump []keyDump) {
	t.Helper()
	ctx := context.Background()
	for _, d := range dump {
		var err error
		switch d.Type {
		case "string":
			err = c.Set(ctx, d.Key, d.String, 0).Err()
		case "hash":
			err = c.HSet(ctx, d.Key, d.Hash).Err()
		case "list":
			err = c.RPush(ctx, d.Key, anys(d.List)...).Err()
		case "set":
			err = c.SAdd(ctx, d.Key, anys(d.Set)...).Err()
		case "zset":
			var zs []goredis.Z
			for _, z := range d.ZSet {
				zs = append(zs, goredis.Z{Member: z.Member, Score: z.Score})
			}
			err = c.ZAdd(ctx, d.Key, zs...).Err()
		case "stream":
			for _, e := range d.Stream {
				if err = c.XAdd(ctx, &goredis.XAddArgs{Stream: d.Key, ID: e.ID, Values: e.Fields}).Err(); err != nil {
					break
				}
			}
			for _, g := range d.Groups {
				if err == nil {
					err = c.XGroupCreateMkStream(ctx, d.Key, g.Name, g.LastDeliveredID).Err()
				}
			}
		default:
			err = fmt.Errorf("type %s", d.Type)
		}
		if err == nil && d.TTLms > 0 {
			err = c.PExpire(ctx, d.Key, time.Duration(d.TTLms)*time.Millisecond).Err()
		}
		if err != nil {
			t.Fatalf("restore %s: %v", d.Key, err)
		}
	}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// TestCompatV1Message: the OutboxMessage JSON of format v1 decodes into
// the current kap.OutboxMessage without losing a field.
func TestCompatV1Message(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(compatDir("v1"), "outbox-message.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m kap.OutboxMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("v1 message does not decode: %v", err)
	}
	if m.Tenant != compatTenant || m.Target != "ndjson" || m.Kind != "DosingSession" || m.Version != 1 ||
		len(m.Bundle) == 0 || len(m.Record) == 0 || len(m.Resources) == 0 || m.EnqueuedAt.IsZero() {
		t.Errorf("v1 message decoded incompletely: %+v", m)
	}
	// Every field v1 wrote survives a decode and encode by this version.
	var v1, now map[string]any
	json.Unmarshal(b, &v1)
	again, _ := json.Marshal(m)
	json.Unmarshal(again, &now)
	for k := range v1 {
		if _, ok := now[k]; !ok {
			t.Errorf("field %q of the v1 message is lost by this version", k)
		}
	}
}

// TestCompatV1Delivered loads the Redis state of format v1 into a fresh
// Redis and runs the current binary as a worker: both queued messages are
// delivered to the NDJSON target, in order, and the outbox is empty.
func TestCompatV1Delivered(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Redis")
	}
	b, err := os.ReadFile(filepath.Join(compatDir("v1"), "redis-dump.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dump []keyDump
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t, redistest.Options{})
	c := goredis.NewClient(&goredis.Options{Addr: rs.Addr})
	defer c.Close()
	restoreRedis(t, c, dump)

	out := t.TempDir()
	w := startProc(t, "worker", "worker", compatConfig(t, out), "redis://"+rs.Addr)
	store := kapredis.New(c, kapredis.Options{})
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := store.Outbox().Stats(ctx, "ndjson")
		if err == nil && st.Depth == 0 {
			if st.DeadLetters != 0 {
				dls, _ := store.Outbox().DeadLetters(ctx, compatTenant, "ndjson", 5)
				t.Fatalf("v1 messages dead-lettered: %+v", dls)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v1 messages not delivered in 60s: %+v %v\n%s", st, err, w.Tail(20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.ndjson"))
	var lines []string
	for _, f := range files {
		data, _ := os.ReadFile(f)
		lines = append(lines, strings.Split(strings.TrimSpace(string(data)), "\n")...)
	}
	if len(lines) != 2 {
		t.Fatalf("%d NDJSON lines, want the 2 v1 messages", len(lines))
	}
	// The client's Patient first, then the dosing session (enqueue order).
	for i, want := range []string{`"Patient"`, `"MedicationAdministration"`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d does not hold a %s: %.200s", i+1, want, lines[i])
		}
	}
	// Each line is a whole FHIR Bundle.
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("line %d: %v", i+1, err)
		}
	}
	t.Logf("%d v1 keys restored; delivered by the current worker: %s", len(dump), strconv.Itoa(len(lines))+" lines")
}
