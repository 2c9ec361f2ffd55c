package kap

import (
	"fmt"
	"regexp"
	"sort"
)

// BillingCode is a CPT or HCPCS code the clinic may bill for KAP services.
// The list is copied from ../shared/domain/codes.md section 4 (all VERIFIED
// there) and is what record validation accepts.
type BillingCode struct {
	Code    string
	System  string // "CPT" or "HCPCS"
	Display string // a short description of our own (CPT text is AMA content)
	AddOnTo []string
}

// BillingCodes by code.
var BillingCodes = map[string]BillingCode{
	"0820T": {Code: "0820T", System: "CPT", Display: "Psychedelic medication therapy monitoring, first physician/QHP, each hour"},
	"0821T": {Code: "0821T", System: "CPT", Display: "Psychedelic monitoring, second physician/QHP concurrent, each hour", AddOnTo: []string{"0820T"}},
	"0822T": {Code: "0822T", System: "CPT", Display: "Psychedelic monitoring, clinical staff concurrent, each hour", AddOnTo: []string{"0820T"}},
	"90791": {Code: "90791", System: "CPT", Display: "Psychiatric diagnostic evaluation"},
	"90832": {Code: "90832", System: "CPT", Display: "Psychotherapy, 30 minutes with patient"},
	"90834": {Code: "90834", System: "CPT", Display: "Psychotherapy, 45 minutes with patient"},
	"90837": {Code: "90837", System: "CPT", Display: "Psychotherapy, 60 minutes with patient"},
	// 90853 is named in the 90785 row of codes.md (interactive complexity
	// goes with 90853); group psychotherapy.
	"90853": {Code: "90853", System: "CPT", Display: "Group psychotherapy"},
	"90785": {Code: "90785", System: "CPT", Display: "Interactive complexity", AddOnTo: []string{"90791", "90832", "90834", "90837", "90853"}},
	"96365": {Code: "96365", System: "CPT", Display: "IV infusion, initial, up to 1 hour"},
	"96366": {Code: "96366", System: "CPT", Display: "IV infusion, each additional hour", AddOnTo: []string{"96365"}},
	"G2082": {Code: "G2082", System: "HCPCS", Display: "Esketamine nasal self-administration up to 56 mg, with 2 hours observation"},
	"G2083": {Code: "G2083", System: "HCPCS", Display: "Esketamine nasal self-administration over 56 mg, with 2 hours observation"},
	"J3490": {Code: "J3490", System: "HCPCS", Display: "Unclassified drugs (ketamine)"},
	"J0013": {Code: "J0013", System: "HCPCS", Display: "Esketamine, nasal spray"},
}

// PsychotherapyCode returns the CPT psychotherapy code for the minutes of
// individual psychotherapy (APA time rule: 90832 16–37, 90834 38–52, 90837
// 53 or more), or "" below 16 minutes.
func PsychotherapyCode(minutes int) string {
	switch {
	case minutes >= 53:
		return "90837"
	case minutes >= 38:
		return "90834"
	case minutes >= 16:
		return "90832"
	}
	return ""
}

func (v *validator) billing(path string, codes []string) {
	seen := map[string]bool{}
	for i, c := range codes {
		p := fmt.Sprintf("%s[%d]", path, i)
		if _, ok := BillingCodes[c]; !ok {
			v.add(p, "is not a known KAP billing code (known: %s)", knownBilling())
		} else if seen[c] {
			v.add(p, "appears twice")
		}
		seen[c] = true
	}
	for i, c := range codes {
		bc := BillingCodes[c]
		if len(bc.AddOnTo) == 0 {
			continue
		}
		ok := false
		for _, p := range bc.AddOnTo {
			ok = ok || seen[p]
		}
		if !ok {
			v.add(fmt.Sprintf("%s[%d]", path, i), "is an add-on code and needs its primary code (%v)", bc.AddOnTo)
		}
	}
}

func knownBilling() string {
	var s []string
	for c := range BillingCodes {
		s = append(s, c)
	}
	sort.Strings(s)
	return fmt.Sprint(s)
}

var icd10Pattern = regexp.MustCompile(`^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$`)

func (v *validator) icd10(path, s string) {
	switch {
	case s == "":
		v.add(path, "is required: an ICD-10-CM code such as F33.2")
	case !icd10Pattern.MatchString(s):
		v.add(path, "must be an ICD-10-CM code such as F33.2")
	}
}
