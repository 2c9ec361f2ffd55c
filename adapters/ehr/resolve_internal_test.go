package ehr

import (
	"encoding/json"
	"testing"
)

func TestCarries(t *testing.T) {
	sent := `{"resourceType":"Patient","id":"7","meta":{"profile":["p"]},"identifier":[{"system":"s","value":"c001"}],
		"name":[{"family":"F","given":["A","B"]}],"active":true,"extension":[{"url":"u","valueDecimal":1.5}]}`
	for _, tc := range []struct {
		name, have string
		want       bool
	}{
		{"same content, target's id and meta", `{"resourceType":"Patient","id":"x","meta":{"versionId":"3"},"identifier":[{"system":"s","value":"c001"}],
			"name":[{"family":"F","given":["A","B"]}],"active":true,"extension":[{"url":"u","valueDecimal":1.5}]}`, true},
		{"target adds a narrative and an identifier", `{"resourceType":"Patient","text":{"status":"generated"},"identifier":[{"system":"ehr","value":"9"},{"system":"s","value":"c001","use":"usual"}],
			"name":[{"family":"F","given":["A","B"]}],"active":true,"extension":[{"url":"u","valueDecimal":1.5}]}`, true},
		{"a value changed", `{"resourceType":"Patient","identifier":[{"system":"s","value":"c001"}],
			"name":[{"family":"G","given":["A","B"]}],"active":true,"extension":[{"url":"u","valueDecimal":1.5}]}`, false},
		{"an element missing", `{"resourceType":"Patient","identifier":[{"system":"s","value":"c001"}],
			"name":[{"family":"F","given":["A","B"]}],"extension":[{"url":"u","valueDecimal":1.5}]}`, false},
		{"array order changed", `{"resourceType":"Patient","identifier":[{"system":"s","value":"c001"}],
			"name":[{"family":"F","given":["B","A"]}],"active":true,"extension":[{"url":"u","valueDecimal":1.5}]}`, false},
		{"a number changed", `{"resourceType":"Patient","identifier":[{"system":"s","value":"c001"}],
			"name":[{"family":"F","given":["A","B"]}],"active":true,"extension":[{"url":"u","valueDecimal":2.5}]}`, false},
		{"a type changed", `{"resourceType":"Patient","identifier":[{"system":"s","value":"c001"}],
			"name":[{"family":"F","given":["A","B"]}],"active":"true","extension":[{"url":"u","valueDecimal":1.5}]}`, false},
	} {
		var s, h map[string]any
		if err := json.Unmarshal([]byte(sent), &s); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(tc.have), &h); err != nil {
			t.Fatal(err)
		}
		if got := carries(h, s); got != tc.want {
			t.Errorf("%s: carries = %v, want %v", tc.name, got, tc.want)
		}
	}
}
