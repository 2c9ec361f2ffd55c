package kap_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	kap "github.com/kapbridge/kap"
)

func TestSpliceEqualsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, m := range []kap.OutboxMessage{
		{ID: "DosingSession/ds-1/2", Tenant: "t", Target: "ehr", ClientID: "c\"1", Version: 2, EnqueuedAt: at,
			Record: json.RawMessage(`{"kind":"DosingSession","id":"ds-1"}`), Bundle: json.RawMessage(` {"resourceType" : "Bundle"} `)},
		{ID: "x", Tenant: "t", Target: "ehr", ClientID: "c", Bundle: json.RawMessage(`{"resourceType":"Bundle"}`)},
		{ID: "x", Tenant: "t", Target: "ehr", ClientID: "c"},
	} {
		data, err := kap.MarshalOutboxMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		var got, want kap.OutboxMessage
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("%s does not parse: %v", data, err)
		}
		std, _ := json.Marshal(m)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		// Compare with the raw fields compacted, as encoding/json stores them.
		for _, p := range []*json.RawMessage{&got.Record, &got.Bundle} {
			if len(*p) > 0 {
				var v any
				json.Unmarshal(*p, &v)
				*p, _ = json.Marshal(v)
			}
		}
		for _, p := range []*json.RawMessage{&want.Record, &want.Bundle} {
			if len(*p) > 0 {
				var v any
				json.Unmarshal(*p, &v)
				*p, _ = json.Marshal(v)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("spliced %s\n decodes to %+v\n want %+v", data, got, want)
		}
	}
	if err := kap.CheckRawJSON("bundle", json.RawMessage(`{"resourceType":`)); kap.ErrorCode(err) != kap.EINVALID {
		t.Fatalf("truncated JSON: %v", err)
	}
}
