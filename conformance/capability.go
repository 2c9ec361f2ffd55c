package conformance

import (
	"encoding/json"
	"sort"
	"time"

	dpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/datatypes_go_proto"
	bcrpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/kapbridge/kap/fhir"
)

// CapabilityOptions describe the software a CapabilityStatement is about.
type CapabilityOptions struct {
	Software, Version string
	Date              time.Time
	// Server lists the FHIR REST interactions the gateway serves, by
	// resource type (e.g. "Observation": {"read", "search-type"}); empty
	// while no FHIR facade runs.
	Server map[string][]string
}

// Capability generates the gateway's CapabilityStatement from what it really
// does: the resource types and profiles found in Bundles the mapping
// produced (as a client, it writes them with transactions of conditional
// updates), plus the server interactions the caller registers. It is
// validated through the codec before it is returned.
func Capability(codec *fhir.Codec, opts CapabilityOptions, bundles []*bcrpb.Bundle) (*bcrpb.ContainedResource, error) {
	profiles := map[string]map[string]bool{}
	for _, b := range bundles {
		for _, e := range b.GetEntry() {
			r := fhir.Unwrap(e.GetResource())
			if r == nil {
				continue
			}
			t := fhir.ResourceType(r)
			if profiles[t] == nil {
				profiles[t] = map[string]bool{}
			}
			if md := r.ProtoReflect().Descriptor().Fields().ByName("meta"); md != nil {
				if meta, ok := r.ProtoReflect().Get(md).Message().Interface().(*dpb.Meta); ok {
					for _, p := range meta.GetProfile() {
						profiles[t][p.GetValue()] = true
					}
				}
			}
		}
	}
	type interaction struct {
		Code string `json:"code"`
	}
	type resource struct {
		Type              string        `json:"type"`
		SupportedProfile  []string      `json:"supportedProfile,omitempty"`
		Interaction       []interaction `json:"interaction"`
		ConditionalUpdate bool          `json:"conditionalUpdate,omitempty"`
	}
	type rest struct {
		Mode          string        `json:"mode"`
		Documentation string        `json:"documentation,omitempty"`
		Resource      []resource    `json:"resource,omitempty"`
		Interaction   []interaction `json:"interaction,omitempty"`
	}
	var client rest
	client.Mode = "client"
	client.Documentation = "KAP Bridge writes each clinic record to EHRs and payers as one transaction Bundle of conditional updates (PUT Type?identifier=system|value)."
	client.Interaction = []interaction{{"transaction"}}
	for _, t := range sortedKeys(profiles) {
		r := resource{Type: t, Interaction: []interaction{{"update"}}, ConditionalUpdate: true}
		r.SupportedProfile = sortedKeys(profiles[t])
		client.Resource = append(client.Resource, r)
	}
	rests := []rest{client}
	if len(opts.Server) > 0 {
		server := rest{Mode: "server"}
		for _, t := range sortedKeys(opts.Server) {
			r := resource{Type: t}
			for _, i := range opts.Server[t] {
				r.Interaction = append(r.Interaction, interaction{i})
			}
			if p := profiles[t]; p != nil {
				r.SupportedProfile = sortedKeys(p)
			}
			server.Resource = append(server.Resource, r)
		}
		rests = append(rests, server)
	}
	if opts.Date.IsZero() {
		opts.Date = time.Now()
	}
	doc := map[string]any{
		"resourceType": "CapabilityStatement",
		"url":          fhir.CanonicalBase + "/CapabilityStatement/kapbridge",
		"name":         "KAPBridge",
		"title":        "KAP Bridge FHIR R4 gateway",
		"status":       "active",
		"date":         opts.Date.UTC().Format("2006-01-02"),
		"publisher":    "KAP Bridge",
		"kind":         "instance",
		"software":     map[string]any{"name": opts.Software, "version": opts.Version},
		"implementation": map[string]any{
			"description": "KAP Bridge: FHIR R4 (US Core 3.1.1) gateway for ketamine-assisted psychotherapy clinics",
		},
		"fhirVersion": "4.0.1",
		"format":      []string{"application/fhir+json"},
		"rest":        rests,
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return codec.Unmarshal(data)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
