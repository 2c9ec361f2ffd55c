package mapping

import "github.com/kapbridge/kap"

// TODO(mapping): TreatmentPlan → FHIR. Stub so the package compiles.
func (b *builder) plan(r *kap.TreatmentPlan) error {
	return kap.Errorf(kap.ENOTIMPLEMENTED, "mapping of TreatmentPlan is not implemented yet")
}

func (ix *index) plan() (kap.Record, error) {
	return nil, kap.Errorf(kap.ENOTIMPLEMENTED, "reverse mapping of TreatmentPlan is not implemented yet")
}
