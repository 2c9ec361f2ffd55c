package mapping

import "github.com/kapbridge/kap"

// TODO(mapping): Assessment → FHIR. Stub so the package compiles.
func (b *builder) assessment(r *kap.Assessment) error {
	return kap.Errorf(kap.ENOTIMPLEMENTED, "mapping of Assessment is not implemented yet")
}

func (ix *index) assessment() (kap.Record, error) {
	return nil, kap.Errorf(kap.ENOTIMPLEMENTED, "reverse mapping of Assessment is not implemented yet")
}
