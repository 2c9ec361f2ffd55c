package ehr

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/kapbridge/kap"
)

// A Profile says what one EHR vendor's FHIR R4 endpoint accepts as writes and
// what the gateway does with the rest. Profiles are data: one JSON file per
// vendor under profiles/, embedded in the binary. Every fact carries the URL
// of the public documentation it comes from, or is marked assumed.
type Profile struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Note says how the profile was built (what is documented, what is
	// assumed).
	Note string `json:"note,omitempty"`
	// Writes are the write mechanisms the gateway may use with this
	// vendor, whatever the CapabilityStatement claims.
	Writes Writes `json:"writes"`
	// Provenance: whether the target accepts Provenance resources.
	Provenance Fact `json:"provenance"`
	// Fallback is the resource written in place of refused content.
	Fallback FallbackSpec `json:"fallback"`
	// Default applies to resource types no rule names.
	Default Rule `json:"default"`
	// Resources are the rules per resource type.
	Resources []Rule `json:"resources"`
}

// Writes lists the write mechanisms a vendor supports.
type Writes struct {
	Transaction       Fact `json:"transaction"`
	ConditionalUpdate Fact `json:"conditionalUpdate"`
	ConditionalCreate Fact `json:"conditionalCreate"`
}

// Fact is a yes/no fact about a vendor with its source.
type Fact struct {
	Allowed bool   `json:"allowed"`
	Source  string `json:"source,omitempty"`
	Assumed bool   `json:"assumed,omitempty"`
	Note    string `json:"note,omitempty"`
}

// FallbackSpec describes the DocumentReference note written for content a
// target refuses.
type FallbackSpec struct {
	// Enabled: write the note; otherwise refused content is only listed
	// in SendResult.NotSent.
	Enabled bool `json:"enabled"`
	// ContentType of the note: text/plain (default) or
	// application/xhtml+xml.
	ContentType string `json:"contentType,omitempty"`
	Source      string `json:"source,omitempty"`
	Assumed     bool   `json:"assumed,omitempty"`
	Note        string `json:"note,omitempty"`
}

// Actions a rule takes for a resource the target does not accept.
const (
	ActionSend     = "send"
	ActionFallback = "fallback" // summarised in the fallback DocumentReference
	ActionNotSent  = "not-sent"
)

// Rule is what a target accepts of one resource type.
type Rule struct {
	Type string `json:"type,omitempty"`
	// Interactions the target accepts: "create", "update". Empty means
	// read-only.
	Interactions []string `json:"interactions"`
	// Categories, when set, restrict the accepted resources to those with
	// one of these category codes (Observation.category, Condition.category).
	Categories []string `json:"categories,omitempty"`
	// RequireEncounter: the resource must reference an encounter the
	// target knows (one sent in the same record, or already there).
	RequireEncounter bool `json:"requireEncounter,omitempty"`
	// Set replaces top-level elements before sending (for example
	// Condition.verificationStatus = provisional).
	Set map[string]json.RawMessage `json:"set,omitempty"`
	// Otherwise is the action for a resource this rule refuses:
	// "fallback" or "not-sent".
	Otherwise string `json:"otherwise"`
	Source    string `json:"source,omitempty"`
	Assumed   bool   `json:"assumed,omitempty"`
	Note      string `json:"note,omitempty"`
}

// Accepts reports whether the rule allows an interaction.
func (r Rule) Accepts(interaction string) bool { return slices.Contains(r.Interactions, interaction) }

//go:embed profiles/*.json
var profileFS embed.FS

// Profiles returns the names of the embedded profiles.
func Profiles() []string {
	ents, _ := fs.ReadDir(profileFS, "profiles")
	var names []string
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	sort.Strings(names)
	return names
}

// LoadProfile returns an embedded profile by name ("generic", "epic",
// "oracle-health"). Returns ENOTFOUND for an unknown name.
func LoadProfile(name string) (*Profile, error) {
	if name == "" {
		name = "generic"
	}
	if strings.ContainsAny(name, "/\\.") {
		return nil, kap.Errorf(kap.ENOTFOUND, "no write profile %q (have %s)", name, strings.Join(Profiles(), ", "))
	}
	b, err := profileFS.ReadFile(path.Join("profiles", name+".json"))
	if err != nil {
		return nil, kap.Errorf(kap.ENOTFOUND, "no write profile %q (have %s)", name, strings.Join(Profiles(), ", "))
	}
	return ParseProfile(b)
}

// ParseProfile reads and checks a profile file. Returns EINVALID naming
// every problem.
func ParseProfile(b []byte) (*Profile, error) {
	var p Profile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, kap.Errorf(kap.EINVALID, "write profile: %v", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate reports every problem of the profile at once (EINVALID).
func (p *Profile) Validate() error {
	var errs []string
	if p.Name == "" {
		errs = append(errs, "name is required")
	}
	check := func(where string, r Rule) {
		for _, i := range r.Interactions {
			if i != "create" && i != "update" {
				errs = append(errs, fmt.Sprintf("%s: interaction %q is not create or update", where, i))
			}
		}
		if r.Otherwise != ActionFallback && r.Otherwise != ActionNotSent {
			errs = append(errs, fmt.Sprintf("%s: otherwise must be %q or %q", where, ActionFallback, ActionNotSent))
		}
		if r.Source == "" && !r.Assumed {
			errs = append(errs, fmt.Sprintf("%s: a source URL is required unless assumed", where))
		}
	}
	check("default", p.Default)
	seen := map[string]bool{}
	for i, r := range p.Resources {
		where := fmt.Sprintf("resources[%d]", i)
		if r.Type == "" {
			errs = append(errs, where+": type is required")
		} else if seen[r.Type] {
			errs = append(errs, where+": duplicate rule for "+r.Type)
		}
		seen[r.Type] = true
		check(where, r)
	}
	if ct := p.Fallback.ContentType; ct != "" && ct != "text/plain" && ct != "application/xhtml+xml" {
		errs = append(errs, "fallback.contentType must be text/plain or application/xhtml+xml")
	}
	if len(errs) > 0 {
		return kap.Errorf(kap.EINVALID, "write profile %s: %s", p.Name, strings.Join(errs, "; "))
	}
	return nil
}

// Rule returns the rule of a resource type (the default when none names it).
func (p *Profile) Rule(resourceType string) Rule {
	for _, r := range p.Resources {
		if r.Type == resourceType {
			return r
		}
	}
	r := p.Default
	r.Type = resourceType
	return r
}

// decision is what the profile does with one resource of a Bundle.
type decision struct {
	Action string // ActionSend, ActionFallback, ActionNotSent
	Reason string // no PHI
	Rule   Rule
}

// decide applies the profile to one resource, without the Bundle context
// (RequireEncounter is checked by the caller).
func (p *Profile) decide(res map[string]any) decision {
	typ, _ := res["resourceType"].(string)
	if typ == "Provenance" && !p.Provenance.Allowed {
		return decision{Action: ActionNotSent, Reason: "the target does not accept Provenance", Rule: Rule{Type: typ, Source: p.Provenance.Source, Assumed: p.Provenance.Assumed}}
	}
	r := p.Rule(typ)
	if !r.Accepts("create") && !r.Accepts("update") {
		return decision{Action: r.Otherwise, Reason: fmt.Sprintf("the target accepts no writes of %s", typ), Rule: r}
	}
	if len(r.Categories) > 0 {
		cats := categoryCodes(res)
		ok := false
		for _, c := range cats {
			if slices.Contains(r.Categories, c) {
				ok = true
			}
		}
		if !ok {
			got := "none"
			if len(cats) > 0 {
				got = strings.Join(cats, ",")
			}
			return decision{Action: r.Otherwise, Reason: fmt.Sprintf("the target accepts %s writes only in categories %s (this one: %s)", typ, strings.Join(r.Categories, ","), got), Rule: r}
		}
	}
	return decision{Action: ActionSend, Rule: r}
}

func categoryCodes(res map[string]any) []string {
	var out []string
	cats, _ := res["category"].([]any)
	for _, c := range cats {
		cm, _ := c.(map[string]any)
		codings, _ := cm["coding"].([]any)
		for _, cd := range codings {
			if m, ok := cd.(map[string]any); ok {
				if s, ok := m["code"].(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// errNoProfile is returned by New when no profile is given and none loads.
var errNoProfile = errors.New("ehr: no write profile")
