package config

import (
	"fmt"
	"strings"
)

// Perm is a set of SMART v2 permissions (c, r, u, d, s).
type Perm uint8

// The SMART v2 permissions.
const (
	PermCreate Perm = 1 << iota // c
	PermRead                    // r
	PermUpdate                  // u
	PermDelete                  // d
	PermSearch                  // s
)

// PermAll is cruds.
const PermAll = PermCreate | PermRead | PermUpdate | PermDelete | PermSearch

const permLetters = "cruds"

// String renders the permissions in SMART order ("cruds").
func (p Perm) String() string {
	var b strings.Builder
	for i := range len(permLetters) {
		if p&(1<<i) != 0 {
			b.WriteByte(permLetters[i])
		}
	}
	return b.String()
}

// Scope is one parsed SMART scope on resources: system/Observation.rs.
type Scope struct {
	Context string // system, user or patient
	Type    string // a FHIR resource type or "*"
	Perms   Perm
	// Query is the v2 granular restriction after '?' (e.g.
	// category=vital-signs); the gateway cannot enforce it, so a scope
	// with a query grants nothing (Allows ignores it).
	Query string
}

// String renders the scope in SMART v2 form.
func (s Scope) String() string {
	out := s.Context + "/" + s.Type + "." + s.Perms.String()
	if s.Query != "" {
		out += "?" + s.Query
	}
	return out
}

// ParseScope parses a SMART v2 resource scope (system/Observation.rs,
// system/*.cruds, system/Condition.cu?category=...) or a v1 one
// (system/*.read = rs, system/*.write = cud, system/*.* = cruds). The
// permission letters must appear in the order c, r, u, d, s.
func ParseScope(v string) (Scope, error) {
	ctx, rest, ok := strings.Cut(v, "/")
	if !ok {
		return Scope{}, fmt.Errorf("%q is not a SMART resource scope such as system/Observation.rs", v)
	}
	switch ctx {
	case "system", "user", "patient":
	default:
		return Scope{}, fmt.Errorf("%q: the context must be system, user or patient", v)
	}
	rest, query, _ := strings.Cut(rest, "?")
	typ, perms, ok := strings.Cut(rest, ".")
	if !ok || typ == "" || perms == "" {
		return Scope{}, fmt.Errorf("%q is not a SMART resource scope such as system/Observation.rs", v)
	}
	if typ != "*" {
		if typ[0] < 'A' || typ[0] > 'Z' {
			return Scope{}, fmt.Errorf("%q: the resource type must be a FHIR resource type or *", v)
		}
		for _, r := range typ {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return Scope{}, fmt.Errorf("%q: the resource type must be a FHIR resource type or *", v)
			}
		}
	}
	s := Scope{Context: ctx, Type: typ, Query: query}
	switch perms {
	case "read": // SMART v1
		s.Perms = PermRead | PermSearch
	case "write":
		s.Perms = PermCreate | PermUpdate | PermDelete
	case "*":
		s.Perms = PermAll
	default:
		next := 0
		for _, r := range perms {
			i := strings.IndexRune(permLetters[next:], r)
			if i < 0 {
				return Scope{}, fmt.Errorf("%q: the permissions must be letters of cruds in that order, or read, write or *", v)
			}
			next += i + 1
			s.Perms |= 1 << (next - 1)
		}
	}
	return s, nil
}

// Scopes is a credential's set of scopes.
type Scopes []Scope

// ParseScopes parses a space-separated scope string (an OAuth 2.0 scope
// claim) or a list. Scopes that are not SMART resource scopes (openid,
// launch, offline_access, ...) are skipped: they grant nothing here.
func ParseScopes(list ...string) Scopes {
	var out Scopes
	for _, item := range list {
		for _, f := range strings.Fields(item) {
			if s, err := ParseScope(f); err == nil {
				out = append(out, s)
			}
		}
	}
	return out
}

// Allows reports whether a system scope without a query grants every
// permission of need on resourceType. Patient and user scopes grant nothing:
// the gateway's API has no patient or user context.
func (ss Scopes) Allows(resourceType string, need Perm) bool {
	var have Perm
	for _, s := range ss {
		if s.Context != "system" || s.Query != "" {
			continue
		}
		if s.Type == "*" || s.Type == resourceType {
			have |= s.Perms
		}
	}
	return have&need == need
}

// String renders the scopes space-separated.
func (ss Scopes) String() string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}
