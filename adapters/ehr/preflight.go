package ehr

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/kapbridge/kap"
)

// Finding is one thing preflight (or a delivery) learned about a Bundle
// against a write profile. It carries no PHI: resource types, business
// identifiers and rule text only.
type Finding struct {
	Severity     string `json:"severity"` // "error", "warning" or "info"
	ResourceType string `json:"resourceType,omitempty"`
	Identifier   string `json:"identifier,omitempty"` // "system|value"
	// Action is what delivery does: send, fallback, not-sent, modified.
	Action  string `json:"action,omitempty"`
	Reason  string `json:"reason"`
	Source  string `json:"source,omitempty"`
	Assumed bool   `json:"assumed,omitempty"`
}

func (f Finding) String() string {
	s := fmt.Sprintf("%-7s %-9s", f.Severity, f.Action)
	if f.ResourceType != "" {
		s += " " + f.ResourceType
	}
	if f.Identifier != "" {
		s += " [" + f.Identifier + "]"
	}
	s += ": " + f.Reason
	if f.Source != "" {
		src := f.Source
		if f.Assumed {
			src += ", assumed"
		}
		s += " (" + src + ")"
	}
	return s
}

// Preflight checks a mapped transaction Bundle against a write profile
// without a round trip: what the target would refuse, what falls back to
// the summary note, what is changed on the way. An unreadable Bundle gives
// one error finding.
func Preflight(p *Profile, bundle []byte) []Finding {
	es, err := parseBundle(bundle)
	if err != nil {
		return []Finding{{Severity: "error", Reason: kap.ErrorMessage(err)}}
	}
	pl := makePlan(p, es, nil)
	return pl.Findings
}

// Preflight checks a Bundle against the Sender's profile and the target's
// current capabilities (read from the cache or GET [base]/metadata; no write
// is sent), and names the strategy a delivery would use.
func (s *Sender) Preflight(ctx context.Context, bundle []byte) ([]Finding, error) {
	es, err := parseBundle(bundle)
	if err != nil {
		return []Finding{{Severity: "error", Reason: kap.ErrorMessage(err)}}, nil
	}
	c, err := s.capability(ctx)
	if err != nil {
		return nil, err
	}
	pl := makePlan(s.profile, es, c.filter())
	strategy := "per resource: "
	if s.useTransaction(c, pl.Send) {
		strategy = StrategyTransaction
	} else {
		seen := map[string]bool{}
		var names []string
		for _, e := range pl.Send {
			if n := s.perResource(c, e.Type); !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		strategy += strings.Join(names, ", ")
	}
	if !c.Known {
		strategy += " (the target publishes no CapabilityStatement)"
	}
	return append(pl.Findings, Finding{Severity: "info", Action: ActionSend, Reason: "strategy: " + strategy}), nil
}

// plan is what a delivery sends for one Bundle under a profile.
type plan struct {
	Send     []*entry // in dependency order, references rewritten
	Fallback *entry   // the summary note, also in Send; nil if none
	NotSent  []kap.NotSent
	Findings []Finding
}

// capFilter reports whether the target's CapabilityStatement accepts writes
// of a resource type, and why not.
type capFilter func(resourceType string) (bool, string)

// makePlan applies the profile (and the target's capabilities, when known)
// to the entries. It changes the entries' resources in place.
func makePlan(p *Profile, es []*entry, capOK capFilter) plan {
	var pl plan
	byURL := map[string]*entry{}
	for _, e := range es {
		byURL[e.FullURL] = e
		e.Decision = p.decide(e.Resource)
		if e.Decision.Action == ActionSend && capOK != nil {
			if ok, why := capOK(e.Type); !ok {
				r := p.Rule(e.Type)
				e.Decision = decision{Action: r.Otherwise, Reason: why, Rule: r}
			}
		}
	}
	// An encounter-bound resource needs its encounter at the target.
	for _, e := range es {
		if e.Decision.Action != ActionSend || !e.Decision.Rule.RequireEncounter {
			continue
		}
		ref := encounterRef(e.Resource)
		switch {
		case ref == "":
			e.Decision = decision{Action: e.Decision.Rule.Otherwise, Reason: fmt.Sprintf("the target files %s only against an encounter and none is referenced", e.Type), Rule: e.Decision.Rule}
		case byURL[ref] != nil && byURL[ref].Decision.Action != ActionSend:
			e.Decision = decision{Action: e.Decision.Rule.Otherwise, Reason: fmt.Sprintf("the target files %s only against an encounter and this record's Encounter is not accepted", e.Type), Rule: e.Decision.Rule}
		}
	}

	var refused []*entry
	var subject map[string]any
	var encRef map[string]any
	var date string
	for _, e := range es {
		if subject == nil {
			for _, k := range []string{"subject", "patient"} {
				if m, ok := e.Resource[k].(map[string]any); ok {
					subject = m
					break
				}
			}
		}
		if e.Type == "Encounter" && e.Decision.Action == ActionSend && encRef == nil {
			encRef = map[string]any{"reference": e.FullURL}
		}
		if e.Type == "Provenance" {
			date, _ = e.Resource["recorded"].(string)
		}
		if e.Decision.Action == ActionFallback {
			refused = append(refused, e)
		}
	}
	noteOK := p.Fallback.Enabled && p.decide(map[string]any{"resourceType": "DocumentReference"}).Action == ActionSend
	if capOK != nil && noteOK {
		if ok, _ := capOK("DocumentReference"); !ok {
			noteOK = false
		}
	}
	if len(refused) > 0 && noteOK {
		pl.Fallback = fallbackNote(p.Fallback, refused, subject, encRef, date)
		pl.Fallback.Decision = decision{Action: ActionSend, Rule: p.Rule("DocumentReference")}
		byURL[pl.Fallback.FullURL] = pl.Fallback
	}

	for _, e := range es {
		d := e.Decision
		f := Finding{ResourceType: e.Type, Identifier: e.Key(), Source: d.Rule.Source, Assumed: d.Rule.Assumed}
		switch d.Action {
		case ActionSend:
			if len(d.Rule.Set) > 0 {
				keys := make([]string, 0, len(d.Rule.Set))
				for k := range d.Rule.Set {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				pl.Findings = append(pl.Findings, withAction(f, "info", "modified", fmt.Sprintf("%s set by the profile: %s", strings.Join(keys, ", "), d.Rule.Note)))
			}
			if !d.Rule.Accepts("update") {
				pl.Findings = append(pl.Findings, withAction(f, "info", ActionSend, "create only: a later version of this record will not update it at the target"))
			}
			continue
		case ActionFallback:
			if pl.Fallback != nil {
				pl.NotSent = append(pl.NotSent, kap.NotSent{ResourceType: e.Type, Identifier: e.Key(), Reason: d.Reason, Fallback: "DocumentReference"})
				pl.Findings = append(pl.Findings, withAction(f, "warning", ActionFallback, d.Reason+"; summarised in the fallback DocumentReference"))
				continue
			}
			d.Reason += "; no fallback note is accepted"
		}
		pl.NotSent = append(pl.NotSent, kap.NotSent{ResourceType: e.Type, Identifier: e.Key(), Reason: d.Reason})
		pl.Findings = append(pl.Findings, withAction(f, "warning", ActionNotSent, d.Reason))
	}
	if !p.Writes.Transaction.Allowed {
		pl.Findings = append(pl.Findings, Finding{Severity: "info", Action: ActionSend, Reason: "no transaction: resources are written one by one (a failure part-way leaves the earlier ones written)", Source: p.Writes.Transaction.Source, Assumed: p.Writes.Transaction.Assumed})
	}

	// Rewrite references to what is not sent into logical references, and
	// apply the profile's overrides.
	var send []*entry
	for _, e := range es {
		if e.Decision.Action != ActionSend {
			continue
		}
		for k, v := range e.Decision.Rule.Set {
			var x any
			if json.Unmarshal(v, &x) == nil {
				e.Resource[k] = x
			}
		}
		walkRefs(e.Resource, func(ref map[string]any) {
			if d, ok := byURL[ref["reference"].(string)]; ok && d.Decision.Action != ActionSend {
				logicalRef(ref, d.Type, d.System, d.Value)
			}
		})
		send = append(send, e)
	}
	if pl.Fallback != nil {
		send = append(send, pl.Fallback)
		pl.Findings = append(pl.Findings, Finding{Severity: "info", ResourceType: "DocumentReference", Identifier: pl.Fallback.Key(), Action: ActionSend,
			Reason: fmt.Sprintf("fallback note (%s) summarising %d resource(s)", pl.Fallback.Resource["content"].([]any)[0].(map[string]any)["attachment"].(map[string]any)["contentType"], len(refused)),
			Source: p.Fallback.Source, Assumed: p.Fallback.Assumed})
	}
	pl.Send = orderEntries(send)
	return pl
}

func withAction(f Finding, sev, action, reason string) Finding {
	f.Severity, f.Action, f.Reason = sev, action, reason
	return f
}

// encounterRef returns the encounter reference of a resource
// (Observation.encounter, MedicationAdministration.context, ...).
func encounterRef(res map[string]any) string {
	for _, k := range []string{"encounter", "context"} {
		if m, ok := res[k].(map[string]any); ok {
			if s, ok := m["reference"].(string); ok {
				return s
			}
		}
	}
	return ""
}
