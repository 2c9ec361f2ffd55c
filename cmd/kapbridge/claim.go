package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// claimCmd: kapbridge claim [--payer ID] [--coverage FILE] [--intake FILE]
// [--diagnosis CODES] [--provider FILE]... [--preauth REF] FILE|-
//
// It builds the claim of a dosing or integration session under a payer
// profile and prints one JSON document: the FHIR Claim (null without a
// coverage, which FHIR requires), the claim lines and the preflight issues.
// Exit 0 when the preflight finds nothing, 1 when the payer would refuse
// the claim or the input is invalid, 2 for usage and I/O errors.
func (e *env) claimCmd(_ context.Context, args []string) int {
	fs := newFlags("claim", e.stderr)
	payer := fs.String("payer", "", "payer profile (mapping/payers): generic, medicare-j15, example-commercial; default the coverage's, else generic")
	covFile := fs.String("coverage", "", "the client's Coverage record (kap/v1 JSON)")
	intakeFile := fs.String("intake", "", "the client's Intake record: its indications are the diagnoses")
	dx := fs.String("diagnosis", "", "ICD-10-CM codes, comma-separated, primary first (instead of --intake)")
	preauth := fs.String("preauth", "", "prior-authorization reference")
	tenant := fs.String("tenant", "default", "the clinic's tenant id (names the identifier namespace)")
	var providerFiles payerFiles
	fs.Var(&providerFiles, "provider", "a Provider record (repeatable): the rendering provider is the monitoring prescriber")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "usage: kapbridge claim [--payer ID] [--coverage FILE] [--intake FILE | --diagnosis F33.2,F41.1] [--provider FILE]... [--preauth REF] FILE|-")
		return 2
	}
	in := kap.ClaimInput{PreAuthRef: *preauth, Providers: map[string]*kap.Provider{}}
	pin := kap.PreflightInput{}
	rec, code := e.payerRecord("claim", fs.Arg(0))
	if rec == nil {
		return code
	}
	switch s := rec.(type) {
	case *kap.DosingSession:
		in.Dosing, pin.Dosing = s, s
	case *kap.IntegrationSession:
		in.Integration, pin.Integration = s, s
	default:
		fmt.Fprintf(e.stderr, "kapbridge claim: %s is a %s record; a claim is built from a DosingSession or an IntegrationSession\n", fs.Arg(0), rec.RecordKind())
		return 1
	}
	if *covFile != "" {
		r, code := e.payerRecord("claim", *covFile)
		if r == nil {
			return code
		}
		c, ok := r.(*kap.Coverage)
		if !ok {
			fmt.Fprintf(e.stderr, "kapbridge claim: --coverage %s is a %s record, not a Coverage\n", *covFile, r.RecordKind())
			return 1
		}
		in.Coverage = c
	}
	if *intakeFile != "" {
		r, code := e.payerRecord("claim", *intakeFile)
		if r == nil {
			return code
		}
		it, ok := r.(*kap.Intake)
		if !ok {
			fmt.Fprintf(e.stderr, "kapbridge claim: --intake %s is a %s record, not an Intake\n", *intakeFile, r.RecordKind())
			return 1
		}
		in.Intake = it
	}
	for _, f := range providerFiles {
		r, code := e.payerRecord("claim", f)
		if r == nil {
			return code
		}
		if p, ok := r.(*kap.Provider); ok {
			in.Providers[p.ID] = p
		}
	}
	if *dx != "" {
		for _, d := range strings.Split(*dx, ",") {
			in.Diagnoses = append(in.Diagnoses, strings.TrimSpace(d))
		}
	}
	profileID := *payer
	if profileID == "" && in.Coverage != nil {
		profileID = in.Coverage.Profile()
	}
	if profileID == "" {
		profileID = "generic"
	}
	profile, err := mapping.PayerProfile(profileID)
	if err != nil {
		printIssues(e.stderr, err)
		return 2
	}
	claim, err := kap.BuildClaim(in, profile)
	if err != nil {
		printIssues(e.stderr, err)
		return 1
	}
	pin.Claim, pin.Profile, pin.Coverage = claim, profile, in.Coverage
	issues := kap.Preflight(pin)
	codec, err := fhir.NewCodec()
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge claim:", err)
		return 2
	}
	out := struct {
		Payer     string               `json:"payer"`
		Claim     json.RawMessage      `json:"claim"`
		Lines     *kap.Claim           `json:"lines"`
		Preflight []kap.PreflightIssue `json:"preflight"`
		Accepted  bool                 `json:"accepted"`
	}{Payer: profile.ID, Claim: json.RawMessage("null"), Lines: claim, Preflight: issues, Accepted: len(issues) == 0}
	if out.Preflight == nil {
		out.Preflight = []kap.PreflightIssue{}
	}
	if in.Coverage != nil {
		m := mapping.New(codec, mapping.Options{Tenant: *tenant})
		cl, err := m.MapClaim(claim, mapping.ClaimInput{Coverage: in.Coverage})
		if err != nil {
			printIssues(e.stderr, err)
			return 1
		}
		data, err := codec.Marshal(cl)
		if err != nil {
			fmt.Fprintln(e.stderr, "kapbridge claim:", err)
			return 2
		}
		out.Claim = data
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(e.stderr, "kapbridge claim:", err)
		return 2
	}
	for _, is := range issues {
		fmt.Fprintf(e.stderr, "refused: %s: %s (%s)\n", is.Path, is.Message, is.Rule)
	}
	if len(issues) > 0 {
		return 1
	}
	return 0
}

// remsCmd: kapbridge rems [--intake FILE] [--answers FILE] [--format
// text|html|json|fhir] FILE|-
//
// It checks an intranasal esketamine session against the Spravato REMS
// Patient Monitoring Form and prints the summary (text by default), the
// report as JSON, or the FHIR QuestionnaireResponse. Exit 0 when every
// item is answered, 1 when something is missing or the input is invalid.
func (e *env) remsCmd(_ context.Context, args []string) int {
	fs := newFlags("rems", e.stderr)
	intakeFile := fs.String("intake", "", "the client's Intake record (answers the concomitant-medication questions)")
	answersFile := fs.String("answers", "", `the clinician's answers as JSON, e.g. {"sedativeHypnotics": false, "sedation": true}`)
	format := fs.String("format", "text", "text, html, json or fhir (QuestionnaireResponse)")
	tenant := fs.String("tenant", "default", "the clinic's tenant id (names the identifier namespace)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "usage: kapbridge rems [--intake FILE] [--answers FILE] [--format text|html|json|fhir] FILE|-")
		return 2
	}
	rec, code := e.payerRecord("rems", fs.Arg(0))
	if rec == nil {
		return code
	}
	s, ok := rec.(*kap.DosingSession)
	if !ok {
		fmt.Fprintf(e.stderr, "kapbridge rems: %s is a %s record, not a DosingSession\n", fs.Arg(0), rec.RecordKind())
		return 1
	}
	in := kap.REMSInput{Session: s}
	if *intakeFile != "" {
		r, code := e.payerRecord("rems", *intakeFile)
		if r == nil {
			return code
		}
		it, ok := r.(*kap.Intake)
		if !ok {
			fmt.Fprintf(e.stderr, "kapbridge rems: --intake %s is a %s record, not an Intake\n", *intakeFile, r.RecordKind())
			return 1
		}
		in.Intake = it
	}
	if *answersFile != "" {
		data, err := e.readInput(*answersFile)
		if err != nil {
			fmt.Fprintln(e.stderr, "kapbridge rems:", err)
			return 2
		}
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in.Answers); err != nil {
			fmt.Fprintf(e.stderr, "kapbridge rems: --answers: %v (fields: sedation, dissociation, respiratoryDepression, benzodiazepines, sedativeHypnotics, psychostimulants, maois, opioids; true or false)\n", err)
			return 1
		}
	}
	r, err := kap.CheckREMS(in)
	if err != nil {
		printIssues(e.stderr, err)
		return 1
	}
	switch *format {
	case "text":
		fmt.Fprint(e.stdout, r.Text())
	case "html":
		h, err := r.HTML()
		if err != nil {
			fmt.Fprintln(e.stderr, "kapbridge rems:", err)
			return 2
		}
		fmt.Fprint(e.stdout, h)
	case "json":
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	case "fhir":
		codec, err := fhir.NewCodec()
		if err != nil {
			fmt.Fprintln(e.stderr, "kapbridge rems:", err)
			return 2
		}
		qr, err := mapping.New(codec, mapping.Options{Tenant: *tenant}).MapREMS(r, mapping.REMSInput{})
		if err != nil {
			printIssues(e.stderr, err)
			return 1
		}
		data, err := codec.MarshalIndent(qr)
		if err != nil {
			fmt.Fprintln(e.stderr, "kapbridge rems:", err)
			return 2
		}
		e.stdout.Write(data)
		fmt.Fprintln(e.stdout)
	default:
		fmt.Fprintf(e.stderr, "kapbridge rems: --format must be text, html, json or fhir\n")
		return 2
	}
	for _, it := range r.Missing() {
		fmt.Fprintf(e.stderr, "missing: %s: %s\n", it.ID, it.Missing)
	}
	if !r.Complete() {
		return 1
	}
	return 0
}

// payerRecord reads and decodes a kap/v1 record; on failure it prints the
// problem and returns the exit code (1 invalid record, 2 I/O).
func (e *env) payerRecord(cmd, name string) (kap.Record, int) {
	data, err := e.readInput(name)
	if err != nil {
		fmt.Fprintf(e.stderr, "kapbridge %s: %v\n", cmd, err)
		return nil, 2
	}
	rec, err := kap.DecodeRecord(data)
	if err != nil {
		fmt.Fprintf(e.stderr, "kapbridge %s: %s:\n", cmd, name)
		printIssues(e.stderr, err)
		return nil, 1
	}
	return rec, 0
}

// payerFiles is a repeatable string flag.
type payerFiles []string

func (m *payerFiles) String() string     { return strings.Join(*m, ",") }
func (m *payerFiles) Set(s string) error { *m = append(*m, s); return nil }
