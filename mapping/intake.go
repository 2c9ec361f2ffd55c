package mapping

import "github.com/kapbridge/kap"

// TODO(mapping): Intake → FHIR. Stub so the package compiles.
func (b *builder) intake(r *kap.Intake) error {
	return kap.Errorf(kap.ENOTIMPLEMENTED, "mapping of Intake is not implemented yet")
}

func (ix *index) intake() (kap.Record, error) {
	return nil, kap.Errorf(kap.ENOTIMPLEMENTED, "reverse mapping of Intake is not implemented yet")
}
