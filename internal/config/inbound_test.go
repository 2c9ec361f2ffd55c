package config

import (
	"strings"
	"testing"

	"github.com/kapbridge/kap"
)

func TestInboundPatientSystem(t *testing.T) {
	for _, tc := range []struct {
		sys string
		ok  bool
	}{
		{"urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", true},
		{"https://ehr.example.com/mrn", true},
		{"urn:uuid:6f1c2d0e-8f5e-4a55-9a44-2b2c5f1e9d10", true},
		{"mrn", false},
		{"https://ehr.example.com/mrn|x", false},
		{"https://ehr.example.com/mrn?x=1", false},
		{"urn:oid:1.2.x", false},
		{"ftp://ehr.example.com/mrn", false},
	} {
		content := "tenants:\n  - name: a\n    inboundPatientSystem: \"" + tc.sys + "\"\n"
		c, err := Load(writeFile(t, "c.yaml", content), env(nil))
		if tc.ok {
			if err != nil || c.Tenants[0].InboundPatientSystem != tc.sys {
				t.Errorf("%q: %v", tc.sys, err)
			}
			continue
		}
		if kap.ErrorCode(err) != kap.EINVALID || !strings.Contains(err.Error(), "tenants[0].inboundPatientSystem") {
			t.Errorf("%q: err = %v", tc.sys, err)
		}
	}
}
