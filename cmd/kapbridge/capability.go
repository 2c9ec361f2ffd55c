package main

import (
	"context"
	"fmt"
	"time"

	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/kapbridge/kap/adapters/httpapi"
	"github.com/kapbridge/kap/conformance"
	"github.com/kapbridge/kap/fhir"
	"github.com/kapbridge/kap/internal/synth"
	"github.com/kapbridge/kap/mapping"
)

// Version is the software version reported in the CapabilityStatement.
var Version = "0.1.0-dev"

// capabilityCmd prints the CapabilityStatement generated from what the
// mapping really produces: it maps a synthetic course covering every
// record kind and route, and collects the resource types and profiles.
// With --server it prints the statement of the gateway's FHIR facade, the
// one GET /fhir/r4/metadata answers (interactions, search parameters).
func (e *env) capabilityCmd(_ context.Context, args []string) int {
	fs := newFlags("capability", e.stderr)
	server := fs.Bool("server", false, "print the server CapabilityStatement GET /fhir/r4/metadata answers")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(e.stderr, "usage: kapbridge capability [--server]")
		return 2
	}
	codec, err := fhir.NewCodec()
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge capability:", err)
		return 2
	}
	var cs *bcrpb.ContainedResource
	if *server {
		var data []byte
		if data, err = httpapi.CapabilityStatement(codec, time.Now()); err == nil {
			cs, err = codec.Unmarshal(data)
		}
	} else {
		cs, err = capabilityStatement(codec, nil)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge capability:", err)
		return 2
	}
	out, err := codec.MarshalIndent(cs)
	if err != nil {
		fmt.Fprintln(e.stderr, "kapbridge capability:", err)
		return 2
	}
	e.stdout.Write(out)
	fmt.Fprintln(e.stdout)
	return 0
}

// capabilityStatement maps a synthetic course and builds the statement.
func capabilityStatement(codec *fhir.Codec, server map[string][]string) (*bcrpb.ContainedResource, error) {
	recs, err := synth.Generate(synth.Options{Clients: 8, Seed: 1})
	if err != nil {
		return nil, err
	}
	m := mapping.New(codec, mapping.Options{Tenant: "capability"})
	var bundles []*bcrpb.Bundle
	for _, r := range recs {
		b, err := m.Map(r, mapping.MapInput{Recorded: time.Unix(0, 0)})
		if err != nil {
			return nil, fmt.Errorf("mapping %s %s: %w", r.RecordKind(), r.RecordID(), err)
		}
		bundles = append(bundles, b)
	}
	return conformance.Capability(codec, conformance.CapabilityOptions{Software: "KAP Bridge", Version: Version, Server: server}, bundles)
}
