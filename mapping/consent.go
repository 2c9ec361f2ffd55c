package mapping

import "github.com/kapbridge/kap"

// TODO(mapping): Consent → FHIR. Stub so the package compiles.
func (b *builder) consent(r *kap.Consent) error {
	return kap.Errorf(kap.ENOTIMPLEMENTED, "mapping of Consent is not implemented yet")
}

func (ix *index) consent() (kap.Record, error) {
	return nil, kap.Errorf(kap.ENOTIMPLEMENTED, "reverse mapping of Consent is not implemented yet")
}
