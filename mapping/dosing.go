package mapping

import "github.com/kapbridge/kap"

// TODO(mapping): DosingSession → FHIR. Stub so the package compiles.
func (b *builder) dosing(r *kap.DosingSession) error {
	return kap.Errorf(kap.ENOTIMPLEMENTED, "mapping of DosingSession is not implemented yet")
}

func (ix *index) dosing() (kap.Record, error) {
	return nil, kap.Errorf(kap.ENOTIMPLEMENTED, "reverse mapping of DosingSession is not implemented yet")
}
