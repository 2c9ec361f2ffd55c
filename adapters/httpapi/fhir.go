package httpapi

import (
	"bytes"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// fhirRoutes installs the /fhir/r4 facade routes.
func (s *server) fhirRoutes(fh *gin.RouterGroup) {
	fh.POST("/$validate", s.validate)
}

// validate is POST /fhir/r4/$validate: the conformance inbound validator
// over a FHIR resource or Bundle; 200 with the OperationOutcome when valid
// (warnings included), 422 when not.
func (s *server) validate(c *gin.Context) {
	data, err := s.readBody(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	_, warnings, verr := s.validator.ValidateWithWarnings(bytes.TrimSpace(data))
	if verr != nil && kap.ErrorCode(verr) != kap.EINVALID {
		s.fail(c, verr)
		return
	}
	oo := fhir.Outcome(verr)
	fhir.Warnings(oo, warnings)
	st := http.StatusOK
	if verr != nil {
		st = http.StatusUnprocessableEntity
	}
	s.outcome(c, st, oo)
}
