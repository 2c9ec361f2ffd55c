package conformance

// Go checks of the US Core requirements listed in shared/domain/codes.md
// §1c, §8 and §9 that the offline validators cannot check because the US
// Core StructureDefinition is not available offline (us-core-encounter,
// -procedure, -careplan, -pulse-oximetry, ...), or that no profile states
// (vital signs identified by their LOINC code rather than by a declared
// profile). See docs/conformance-profiles.md.

import (
	"fmt"
	"strings"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"
	cppb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/care_plan_go_proto"
	encpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/encounter_go_proto"
	mapb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/medication_administration_go_proto"
	obspb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/observation_go_proto"
	procpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/procedure_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// USCoreProfiles is the US Core 3.1.1 profile each resource type must
// declare in meta.profile (codes.md §8e). Observations are handled apart:
// vital signs declare the R4 vitalsigns profile (US Core 3.1.1 uses it
// directly), pulse oximetry us-core-pulse-oximetry as well.
var USCoreProfiles = map[string]string{
	"Patient":           fhir.ProfileUSCorePatient,
	"Practitioner":      fhir.ProfileUSCorePractitioner,
	"PractitionerRole":  fhir.ProfileUSCorePractitionerRole,
	"Encounter":         fhir.ProfileUSCoreEncounter,
	"Condition":         fhir.ProfileUSCoreCondition,
	"Procedure":         fhir.ProfileUSCoreProcedure,
	"CarePlan":          fhir.ProfileUSCoreCarePlan,
	"Goal":              fhir.ProfileUSCoreGoal,
	"Provenance":        fhir.ProfileUSCoreProvenance,
	"MedicationRequest": fhir.ProfileUSCoreMedicationRequest,
	"Medication":        fhir.ProfileUSCoreMedication,
}

// vitalSign describes one vital sign: its LOINC code(s), the UCUM unit
// codes allowed for its value, and its R4 per-vital profile.
type vitalSign struct {
	name    string
	codes   []string // every one required in code.coding
	units   []string
	profile string
}

var (
	vitalBP = vitalSign{"blood pressure", []string{fhir.LOINCBloodPressure}, nil, fhir.ProfileBP}
	vitals  = []vitalSign{
		vitalBP,
		{"heart rate", []string{fhir.LOINCHeartRate}, []string{"/min"}, fhir.ProfileHeartRate},
		{"respiratory rate", []string{fhir.LOINCRespRate}, []string{"/min"}, fhir.ProfileRespRate},
		{"pulse oximetry", []string{fhir.LOINCPulseOx, fhir.LOINCO2Sat}, []string{"%"}, fhir.ProfileOxygenSat},
		{"body temperature", []string{fhir.LOINCBodyTemp}, []string{"Cel", "[degF]"}, fhir.ProfileBodyTemp},
		{"body weight", []string{fhir.LOINCBodyWeight}, []string{"kg", "g", "[lb_av]"}, fhir.ProfileBodyWeight},
		{"body height", []string{"8302-2"}, []string{"cm", "[in_i]"}, "http://hl7.org/fhir/StructureDefinition/bodyheight"},
		{"BMI", []string{"39156-5"}, []string{"kg/m2"}, "http://hl7.org/fhir/StructureDefinition/bmi"},
	}
	// Pulse-oximetry components (optional; codes.md §1b).
	pulseOxComponentUnits = map[string]string{"3151-8": "L/min", "3150-0": "%"}
)

// vitalOf returns the vital sign an Observation is, by any LOINC code of
// any vital (so a pulse-ox with only one of its two codes is still found),
// or by a declared per-vital profile.
func vitalOf(o *obspb.Observation) (vitalSign, bool) {
	for _, v := range vitals {
		for _, c := range v.codes {
			if fhir.HasCoding(o.GetCode(), fhir.SystemLOINC, c) {
				return v, true
			}
		}
	}
	for _, v := range vitals {
		if declares(o, v.profile) {
			return v, true
		}
	}
	return vitalSign{}, false
}

type metaResource interface {
	proto.Message
	GetMeta() *dpb.Meta
}

func declares(r proto.Message, profile string) bool {
	m, ok := r.(metaResource)
	if !ok {
		return false
	}
	for _, p := range m.GetMeta().GetProfile() {
		if u, _, _ := strings.Cut(p.GetValue(), "|"); u == profile {
			return true
		}
	}
	return false
}

func hasCategory(ccs []*dpb.CodeableConcept, system, code string) bool {
	for _, cc := range ccs {
		if fhir.HasCoding(cc, system, code) {
			return true
		}
	}
	return false
}

func isUCUM(q *dpb.Quantity, units []string) bool {
	if q.GetSystem().GetValue() != fhir.SystemUCUM || q.GetValue() == nil {
		return false
	}
	for _, u := range units {
		if q.GetCode().GetValue() == u {
			return true
		}
	}
	return false
}

// CheckUSCore checks the resources of a Bundle against the US Core
// requirements of codes.md §1c, §8 and §9. Issue paths are FHIRPath
// expressions from the Bundle ("Bundle.entry[3].resource.category");
// reasons name codes and elements, never values.
func CheckUSCore(b *bcrpb.Bundle) []kap.Issue {
	var out []kap.Issue
	for i, e := range b.GetEntry() {
		r := fhir.Unwrap(e.GetResource())
		if r == nil {
			continue
		}
		c := checker{base: fmt.Sprintf("Bundle.entry[%d].resource", i), rt: fhir.ResourceType(r)}
		if p, ok := USCoreProfiles[c.rt]; ok && !declares(r, p) {
			c.add("meta.profile", "%s does not declare the US Core profile %s", c.rt, p)
		}
		switch x := r.(type) {
		case *obspb.Observation:
			c.observation(x)
		case *cppb.CarePlan:
			c.carePlan(x)
		case *procpb.Procedure:
			if x.GetPerformed() == nil {
				c.add("performed", "Procedure has no performed[x] (US Core 3.1.1: 1..1)")
			}
			if x.GetCode() == nil {
				c.add("code", "Procedure has no code (US Core: 1..1)")
			}
		case *encpb.Encounter:
			if len(x.GetType()) == 0 {
				c.add("type", "Encounter has no type (US Core: 1..*)")
			}
			if x.GetClassValue() == nil {
				c.add("class", "Encounter has no class")
			}
		case *mapb.MedicationAdministration:
			// R4 has no MedicationAdministration.encounter (the proto has no
			// such field, so our output cannot carry one); the session link is
			// context, which must point to an Encounter.
			if ref := fhir.RefString(x.GetContext()); ref != "" && !refersTo(x.GetContext(), "Encounter") {
				c.add("context", "MedicationAdministration.context must refer to the Encounter")
			}
		}
		out = append(out, c.issues...)
	}
	return out
}

type checker struct {
	base, rt string
	issues   []kap.Issue
}

func (c *checker) add(path, format string, args ...any) {
	c.issues = append(c.issues, kap.Issue{Path: c.base + "." + path, Reason: fmt.Sprintf(format, args...)})
}

func (c *checker) observation(o *obspb.Observation) {
	for _, code := range []string{fhir.LOINCSystolic, fhir.LOINCDiastolic} {
		if fhir.HasCoding(o.GetCode(), fhir.SystemLOINC, code) {
			c.add("code", "Observation coded %s: blood pressure must be one %s Observation with systolic and diastolic components", code, fhir.LOINCBloodPressure)
		}
	}
	v, ok := vitalOf(o)
	if !ok {
		return
	}
	if !hasCategory(o.GetCategory(), fhir.SystemObservationCategory, "vital-signs") {
		c.add("category", "%s Observation has no category vital-signs", v.name)
	}
	if !declares(o, fhir.ProfileVitalSigns) {
		c.add("meta.profile", "%s Observation does not declare %s", v.name, fhir.ProfileVitalSigns)
	}
	for _, code := range v.codes {
		if !fhir.HasCoding(o.GetCode(), fhir.SystemLOINC, code) {
			c.add("code.coding", "%s Observation lacks the LOINC coding %s", v.name, code)
		}
	}
	if o.GetEffective() == nil {
		c.add("effective", "%s Observation has no effective[x]", v.name)
	}
	if o.GetSubject() == nil {
		c.add("subject", "%s Observation has no subject", v.name)
	}
	if v.name == "pulse oximetry" && !declares(o, fhir.ProfileUSCorePulseOximetry) {
		c.add("meta.profile", "pulse oximetry Observation does not declare %s", fhir.ProfileUSCorePulseOximetry)
	}
	if v.name == vitalBP.name {
		c.bloodPressure(o)
		return
	}
	q := o.GetValue().GetQuantity()
	switch {
	case o.GetValue() == nil && o.GetDataAbsentReason() == nil:
		c.add("value", "%s Observation has neither valueQuantity nor dataAbsentReason", v.name)
	case o.GetValue() != nil && q == nil:
		c.add("value", "%s Observation value is not a Quantity", v.name)
	case q != nil && !isUCUM(q, v.units):
		c.add("valueQuantity", "%s value must have a value, system %s and code %s", v.name, fhir.SystemUCUM, strings.Join(v.units, " or "))
	}
	if v.name == "pulse oximetry" {
		for j, comp := range o.GetComponent() {
			for code, unit := range pulseOxComponentUnits {
				if fhir.HasCoding(comp.GetCode(), fhir.SystemLOINC, code) {
					if cq := comp.GetValue().GetQuantity(); cq != nil && !isUCUM(cq, []string{unit}) {
						c.add(fmt.Sprintf("component[%d].valueQuantity", j), "pulse oximetry component %s must be in UCUM %s", code, unit)
					}
				}
			}
		}
	}
}

func (c *checker) bloodPressure(o *obspb.Observation) {
	if o.GetValue() != nil {
		c.add("value", "blood pressure Observation has a top-level value; systolic and diastolic go in components")
	}
	for _, code := range []string{fhir.LOINCSystolic, fhir.LOINCDiastolic} {
		n := 0
		for j, comp := range o.GetComponent() {
			if !fhir.HasCoding(comp.GetCode(), fhir.SystemLOINC, code) {
				continue
			}
			n++
			q := comp.GetValue().GetQuantity()
			if q == nil && comp.GetDataAbsentReason() == nil {
				c.add(fmt.Sprintf("component[%d].value", j), "blood pressure component %s has no valueQuantity", code)
			} else if q != nil && !isUCUM(q, []string{"mm[Hg]"}) {
				c.add(fmt.Sprintf("component[%d].valueQuantity", j), "blood pressure component %s must have a value, system %s and code mm[Hg]", code, fhir.SystemUCUM)
			}
		}
		if n != 1 {
			c.add("component", "blood pressure Observation has %d components coded %s, want 1", n, code)
		}
	}
}

func (c *checker) carePlan(p *cppb.CarePlan) {
	div := p.GetText().GetDiv().GetValue()
	if p.GetText() == nil || p.GetText().GetStatus() == nil || strings.TrimSpace(div) == "" {
		c.add("text", "CarePlan has no narrative (text.status and text.div; US Core 3.1.1: 1..1)")
	} else if !strings.Contains(div, "http://www.w3.org/1999/xhtml") {
		c.add("text.div", "CarePlan narrative div lacks the XHTML namespace")
	}
	if !hasCategory(p.GetCategory(), fhir.SystemCarePlanCategory, "assess-plan") {
		c.add("category", "CarePlan has no category assess-plan (%s)", fhir.SystemCarePlanCategory)
	}
	if p.GetSubject() == nil {
		c.add("subject", "CarePlan has no subject")
	}
}

// refersTo reports whether r refers to a resource of type rt: a relative
// or conditional reference "rt/..." or "rt?...", or a urn:uuid (a Bundle
// entry: the type is not checked here), or the proto's typed reference.
func refersTo(r *dpb.Reference, rt string) bool {
	s := fhir.RefString(r)
	return strings.HasPrefix(s, rt+"/") || strings.HasPrefix(s, rt+"?") || strings.HasPrefix(s, "urn:uuid:") ||
		strings.Contains(s, "/"+rt+"/")
}

// CheckKAPDeclarations checks that resources the KAP profiles cover declare
// them (so the validators apply them), and the psychotherapy-minutes
// extension, which no declared profile constrains.
func CheckKAPDeclarations(b *bcrpb.Bundle) []kap.Issue {
	var out []kap.Issue
	for i, e := range b.GetEntry() {
		r := fhir.Unwrap(e.GetResource())
		c := checker{base: fmt.Sprintf("Bundle.entry[%d].resource", i)}
		switch x := r.(type) {
		case *mapb.MedicationAdministration:
			if !declares(x, fhir.ProfileKAPDosingAdministration) {
				c.add("meta.profile", "MedicationAdministration does not declare %s", fhir.ProfileKAPDosingAdministration)
			}
		case *obspb.Observation:
			code := fhir.CodeOf(x.GetCode(), fhir.SystemKAP)
			if (code == "cadss" || code == "moaas") && !declares(x, fhir.ProfileKAPSessionScore) {
				c.add("meta.profile", "%s score Observation does not declare %s", code, fhir.ProfileKAPSessionScore)
			}
		case *encpb.Encounter:
			for _, t := range x.GetType() {
				if fhir.HasCoding(t, fhir.SystemKAP, "dosing-session") && !declares(x, fhir.ProfileKAPDosingEncounter) {
					c.add("meta.profile", "dosing-session Encounter does not declare %s", fhir.ProfileKAPDosingEncounter)
				}
			}
		case *procpb.Procedure:
			if ext := fhir.FindExtension(x.GetExtension(), fhir.ExtMinutes); ext != nil {
				if v := ext.GetValue().GetInteger(); v == nil || v.GetValue() < 0 {
					c.add("extension", "%s must be a valueInteger of 0 or more", fhir.ExtMinutes)
				}
			}
		}
		out = append(out, c.issues...)
	}
	return out
}
