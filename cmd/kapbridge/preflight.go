package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/kapbridge/kap"
	"github.com/kapbridge/kap/adapters/ehr"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/mapping"
)

// preflightCmd checks a Bundle (or a kap/v1 record, mapped first) against an
// EHR write profile without contacting the EHR: what it would refuse, what
// falls back to the summary note, what is changed on the way.
//
// Exit 0 when the Bundle is readable (findings are informational), 1 when
// it is not or --strict and something is not sent as is, 2 on usage errors.
func (e *env) preflightCmd(_ context.Context, args []string) int {
	fs := newFlags("preflight", e.stderr)
	profile := fs.String("profile", "generic", "write profile: "+strings.Join(ehr.Profiles(), ", ")+", or a profile file")
	tenant := fs.String("tenant", "default", "tenant id, when FILE is a kap/v1 record to map first")
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	strict := fs.Bool("strict", false, "exit 1 when any resource would not be sent as is")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(e.stderr, "usage: kapbridge preflight [--profile NAME] [--json] [--strict] FILE|-")
		return 2
	}
	var p *ehr.Profile
	var err error
	if strings.ContainsAny(*profile, `/\.`) { // a profile file, as in the targets config
		var b []byte
		if b, err = os.ReadFile(*profile); err == nil {
			p, err = ehr.ParseProfile(b)
		}
	} else {
		p, err = ehr.LoadProfile(*profile)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge preflight:", kap.ErrorMessage(err))
		return 2
	}
	data, err := e.readInput(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge preflight:", err)
		return 2
	}
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if json.Unmarshal(data, &head) == nil && head.ResourceType == "" {
		// A kap/v1 record: map it the way the gateway does.
		codec, err := fhir.NewCodec()
		if err != nil {
			fmt.Fprintln(e.stderr, "kapbridge preflight:", err)
			return 2
		}
		rec, err := kap.DecodeRecord(data)
		if err != nil {
			printIssues(e.stderr, err)
			return 1
		}
		b, err := mapping.New(codec, mapping.Options{Tenant: *tenant}).Map(rec, mapping.MapInput{Version: 1})
		if err != nil {
			printIssues(e.stderr, err)
			return 1
		}
		if data, err = codec.Marshal(b); err != nil {
			fmt.Fprintln(e.stderr, "kapbridge preflight:", err)
			return 2
		}
	}
	findings := ehr.Preflight(p, data)
	if *asJSON {
		out, _ := json.MarshalIndent(map[string]any{"profile": p.Name, "findings": findings}, "", "  ")
		e.stdout.Write(out)
		fmt.Fprintln(e.stdout)
	} else {
		fmt.Fprintf(e.stdout, "profile %s (%s)\n", p.Name, p.Title)
		counts := map[string]int{}
		for _, f := range findings {
			fmt.Fprintln(e.stdout, f.String())
			if f.ResourceType != "" {
				counts[f.Action]++
			}
		}
		fmt.Fprintf(e.stdout, "summary: %d fallback, %d not sent, %d modified\n", counts[ehr.ActionFallback], counts[ehr.ActionNotSent], counts["modified"])
	}
	code := 0
	for _, f := range findings {
		if f.Severity == "error" || (*strict && (f.Action == ehr.ActionFallback || f.Action == ehr.ActionNotSent || f.Action == "modified")) {
			code = 1
		}
	}
	return code
}
