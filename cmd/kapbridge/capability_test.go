package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestCapabilityServer: kapbridge capability --server prints the statement
// a running gateway answers at GET /fhir/r4/metadata (but for its date).
func TestCapabilityServer(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"capability", "--server"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	m := startServer(t, t.TempDir(), io.Discard)
	defer m.Close()
	c := &httpClient{t: t, base: "http://" + m.Addr()}
	resp := c.do("GET", "/fhir/r4/metadata", "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("GET /fhir/r4/metadata: %d %s", resp.status, resp.body)
	}
	decode := func(what string, data []byte) map[string]any {
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if doc["resourceType"] != "CapabilityStatement" || doc["date"] == nil {
			t.Fatalf("%s: not a dated CapabilityStatement: %.200s", what, data)
		}
		delete(doc, "date")
		return doc
	}
	cli, srv := decode("capability --server", out.Bytes()), decode("metadata", resp.body)
	if !reflect.DeepEqual(cli, srv) {
		a, _ := json.Marshal(cli)
		b, _ := json.Marshal(srv)
		t.Errorf("capability --server differs from GET /fhir/r4/metadata:\n%.2000s\n%.2000s", a, b)
	}
	if !strings.Contains(out.String(), `"searchParam"`) {
		t.Error("the server statement declares no search parameters")
	}
	if code := Run(context.Background(), []string{"capability", "extra"}, nil, &out, &errb); code != 2 {
		t.Errorf("an argument: exit %d, want 2", code)
	}
}
