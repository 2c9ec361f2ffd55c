package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func (e *env) mapCmd(_ context.Context, args []string) int {
	fs := newFlags("map", e.stderr)
	tenant := fs.String("tenant", "default", "the clinic's tenant id (names the identifier namespace)")
	version := fs.Int("version", 1, "the record version (goes into the Provenance tag)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "usage: kapbridge map [--tenant ID] [--version N] FILE|-")
		return 2
	}
	data, err := e.readInput(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge map:", err)
		return 2
	}
	codec, err := fhir.NewCodec()
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge map:", err)
		return 2
	}
	rec, err := kap.DecodeRecord(data)
	if err != nil {
		printIssues(e.stderr, err)
		return 1
	}
	m := mapping.New(codec, mapping.Options{Tenant: *tenant})
	b, err := m.Map(rec, mapping.MapInput{Version: *version})
	if err != nil {
		printIssues(e.stderr, err)
		return 1
	}
	out, err := codec.MarshalIndent(b)
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge map:", err)
		return 2
	}
	e.stdout.Write(out)
	fmt.Fprintln(e.stdout)
	return 0
}

func printIssues(w io.Writer, err error) {
	issues := kap.ErrorIssues(err)
	if len(issues) == 0 {
		fmt.Fprintln(w, "error:", kap.ErrorMessage(err))
		return
	}
	for _, is := range issues {
		sev := "error"
		if is.Severity != "" {
			sev = is.Severity
		}
		fmt.Fprintf(w, "%s: %s\n", sev, is.String())
	}
}

// validateCmd accepts a kap/v1 record (it has "kind") or FHIR JSON (it has
// "resourceType") and prints an OperationOutcome.
func (e *env) validateCmd(_ context.Context, args []string) int {
	fs := newFlags("validate", e.stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "usage: kapbridge validate FILE|-")
		return 2
	}
	data, err := e.readInput(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge validate:", err)
		return 2
	}
	codec, err := fhir.NewCodec()
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge validate:", err)
		return 2
	}
	warnings, verr := Validate(conformance.NewValidator(codec), codec, data)
	oo := fhir.Outcome(verr)
	fhir.Warnings(oo, warnings)
	out, err := codec.MarshalIndent(oo)
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge validate:", err)
		return 2
	}
	e.stdout.Write(out)
	fmt.Fprintln(e.stdout)
	if verr != nil {
		return 1
	}
	return 0
}

// Validate checks a kap/v1 record (and the FHIR it maps to) or a FHIR
// resource or Bundle (the gateway's inbound path: the codec's validating
// unmarshal plus the conformance rules), and returns the warnings and the
// error (nil if valid).
func Validate(inbound *conformance.Validator, codec *fhir.Codec, data []byte) ([]kap.Issue, error) {
	var head struct {
		Kind         *string `json:"kind"`
		ResourceType *string `json:"resourceType"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		// Let the FHIR precheck describe the malformed JSON.
		_, err := codec.Unmarshal(data)
		return nil, err
	}
	switch {
	case head.Kind != nil && head.ResourceType == nil:
		rec, err := kap.DecodeRecord(data)
		if err != nil {
			return nil, err
		}
		var warnings []kap.Issue
		if s, ok := rec.(*kap.DosingSession); ok {
			warnings = s.SafetyWarnings()
		}
		m := mapping.New(codec, mapping.Options{})
		if _, err := m.Map(rec, mapping.MapInput{}); err != nil {
			return warnings, err
		}
		return warnings, nil
	case head.ResourceType != nil:
		_, warnings, err := inbound.ValidateWithWarnings(bytes.TrimSpace(data))
		return warnings, err
	}
	return nil, &kap.Error{Code: kap.EINVALID, Message: "not a KAP record or a FHIR resource",
		Issues: []kap.Issue{{Reason: `the document has neither "kind" (a kap/v1 record) nor "resourceType" (FHIR)`}}}
}
