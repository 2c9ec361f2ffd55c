package mapping

import "github.com/kapbridge/kap"

// TODO(mapping): IntegrationSession → FHIR. Stub so the package compiles.
func (b *builder) integration(r *kap.IntegrationSession) error {
	return kap.Errorf(kap.ENOTIMPLEMENTED, "mapping of IntegrationSession is not implemented yet")
}

func (ix *index) integration() (kap.Record, error) {
	return nil, kap.Errorf(kap.ENOTIMPLEMENTED, "reverse mapping of IntegrationSession is not implemented yet")
}
