package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"google.golang.org/protobuf/proto"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
)

// statusOf is the one table from kap error codes to HTTP statuses. EINVALID
// is 422, except malformed JSON (400, see status). Codes not listed are 500.
var statusOf = map[string]int{
	kap.EINVALID:        http.StatusUnprocessableEntity,
	kap.ENOTFOUND:       http.StatusNotFound,
	kap.ECONFLICT:       http.StatusConflict,
	kap.EPRECONDITION:   http.StatusPreconditionFailed,
	kap.EUNAUTHORIZED:   http.StatusUnauthorized,
	kap.EFORBIDDEN:      http.StatusForbidden,
	kap.ETOOLARGE:       http.StatusRequestEntityTooLarge,
	kap.EUNSUPPORTED:    http.StatusUnsupportedMediaType,
	kap.ERATELIMIT:      http.StatusTooManyRequests,
	kap.EUNAVAILABLE:    http.StatusServiceUnavailable,
	kap.ENOTIMPLEMENTED: http.StatusNotImplemented,
}

// status returns the HTTP status of err.
func status(err error) int {
	code := kap.ErrorCode(err)
	if code == kap.EINVALID {
		for _, is := range kap.ErrorIssues(err) {
			if strings.HasPrefix(is.Reason, "malformed JSON") {
				return http.StatusBadRequest
			}
		}
	}
	if st, ok := statusOf[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

const fhirJSON = "application/fhir+json"

// fail answers with the OperationOutcome of err and the status of its code.
func (s *server) fail(c *gin.Context, err error) {
	s.failStatus(c, status(err), err)
}

// failStatus answers with err's OperationOutcome and status st. A 5xx never
// shows the error: the caller gets a generic message and the request id, the
// log gets the code and the safe message (no issues: they may quote input).
func (s *server) failStatus(c *gin.Context, st int, err error) {
	rid := c.GetString(ctxRequestID)
	if _, known := statusOf[kap.ErrorCode(err)]; !known {
		msg := ""
		var ke *kap.Error
		if errors.As(err, &ke) {
			msg = ke.Message
		}
		s.log.Error("request failed", "route", c.FullPath(), "request_id", rid,
			"code", kap.ErrorCode(err), "message", msg)
		if st < 500 {
			st = http.StatusInternalServerError
		}
		err = kap.Errorf(kap.EINTERNAL, "internal error; request id %s", rid)
	}
	s.outcome(c, st, fhir.Outcome(err))
}

// outcome writes a FHIR resource as application/fhir+json.
func (s *server) outcome(c *gin.Context, st int, res proto.Message) {
	data, err := s.cfg.Codec.Marshal(res)
	if err != nil {
		s.log.Error("cannot marshal an OperationOutcome", "request_id", c.GetString(ctxRequestID))
		c.Data(http.StatusInternalServerError, "text/plain; charset=utf-8", []byte("internal error\n"))
		return
	}
	c.Data(st, fhirJSON, data)
}
