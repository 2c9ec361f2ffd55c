package fhir

import (
	"strings"

	cpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/codes_go_proto"
	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	oopb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/operation_outcome_go_proto"

	"github.com/kapbridge/kap"
)

// IssueType returns the OperationOutcome issue type for a kap error code.
func IssueType(code string) cpb.IssueTypeCode_Value {
	switch code {
	case kap.EINVALID:
		return cpb.IssueTypeCode_INVALID
	case kap.ENOTFOUND:
		return cpb.IssueTypeCode_NOT_FOUND
	case kap.ECONFLICT, kap.EPRECONDITION:
		return cpb.IssueTypeCode_CONFLICT
	case kap.EUNAUTHORIZED:
		return cpb.IssueTypeCode_LOGIN
	case kap.EFORBIDDEN:
		return cpb.IssueTypeCode_FORBIDDEN
	case kap.ETOOLARGE:
		return cpb.IssueTypeCode_TOO_LONG
	case kap.EUNSUPPORTED, kap.ENOTIMPLEMENTED:
		return cpb.IssueTypeCode_NOT_SUPPORTED
	case kap.ERATELIMIT:
		return cpb.IssueTypeCode_THROTTLED
	case kap.EUNAVAILABLE:
		return cpb.IssueTypeCode_TRANSIENT
	}
	return cpb.IssueTypeCode_EXCEPTION
}

// issueType refines the type of a field issue from its reason.
func issueType(base cpb.IssueTypeCode_Value, reason string) cpb.IssueTypeCode_Value {
	if base != cpb.IssueTypeCode_INVALID {
		return base
	}
	r := strings.ToLower(reason)
	switch {
	case strings.Contains(r, "is required") || strings.Contains(r, "missing required"):
		return cpb.IssueTypeCode_REQUIRED
	case strings.Contains(r, "malformed") || strings.Contains(r, "unknown field") || strings.Contains(r, "duplicate key"):
		return cpb.IssueTypeCode_STRUCTURE
	case strings.Contains(r, "must be one of") || strings.Contains(r, "code"):
		return cpb.IssueTypeCode_CODE_INVALID
	}
	return cpb.IssueTypeCode_VALUE
}

// Outcome builds an OperationOutcome from an error: one issue per field
// issue (severity, type, diagnostics = the reason, expression = the path),
// or a single issue with the error's safe message. A nil error gives one
// informational issue.
func Outcome(err error) *oopb.OperationOutcome {
	oo := &oopb.OperationOutcome{}
	if err == nil {
		oo.Issue = append(oo.Issue, issue(cpb.IssueSeverityCode_INFORMATION, cpb.IssueTypeCode_INFORMATIONAL, "no errors", ""))
		return oo
	}
	base := IssueType(kap.ErrorCode(err))
	issues := kap.ErrorIssues(err)
	if len(issues) == 0 {
		oo.Issue = append(oo.Issue, issue(cpb.IssueSeverityCode_ERROR, base, kap.ErrorMessage(err), ""))
		return oo
	}
	for _, is := range issues {
		sev := cpb.IssueSeverityCode_ERROR
		if is.Severity == "warning" {
			sev = cpb.IssueSeverityCode_WARNING
		}
		oo.Issue = append(oo.Issue, issue(sev, issueType(base, is.Reason), is.Reason, is.Path))
	}
	return oo
}

// Warnings appends warning issues to an OperationOutcome.
func Warnings(oo *oopb.OperationOutcome, ws []kap.Issue) {
	for _, w := range ws {
		oo.Issue = append(oo.Issue, issue(cpb.IssueSeverityCode_WARNING, cpb.IssueTypeCode_BUSINESS_RULE, w.Reason, w.Path))
	}
}

func issue(sev cpb.IssueSeverityCode_Value, typ cpb.IssueTypeCode_Value, diag, path string) *oopb.OperationOutcome_Issue {
	is := &oopb.OperationOutcome_Issue{
		Severity:    &oopb.OperationOutcome_Issue_SeverityCode{Value: sev},
		Code:        &oopb.OperationOutcome_Issue_CodeType{Value: typ},
		Diagnostics: String(diag),
	}
	if path != "" {
		is.Expression = []*dpb.String{String(path)}
	}
	return is
}

// HasErrors reports whether an OperationOutcome has an error or fatal issue.
func HasErrors(oo *oopb.OperationOutcome) bool {
	for _, is := range oo.GetIssue() {
		switch is.GetSeverity().GetValue() {
		case cpb.IssueSeverityCode_ERROR, cpb.IssueSeverityCode_FATAL:
			return true
		}
	}
	return false
}
