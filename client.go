package kap

import (
	"fmt"
	"regexp"
	"time"
)

// Client is a patient of the clinic.
type Client struct {
	Kind      Kind      `json:"kind"`
	ID        string    `json:"id"` // the clinic's identifier (medical record number)
	Name      HumanName `json:"name"`
	BirthDate Date      `json:"birthDate"`
	Gender    string    `json:"gender"` // Genders
	Phone     string    `json:"phone,omitempty"`
	Email     string    `json:"email,omitempty"`
	Address   *Address  `json:"address,omitempty"`
	// Contacts holds the escort who takes the client home after dosing
	// and the emergency contact (one person may be both).
	Contacts []Contact `json:"contacts,omitempty"`
}

// Genders are FHIR administrative genders.
var Genders = []string{"male", "female", "other", "unknown"}

func (c *Client) RecordKind() Kind       { return KindClient }
func (c *Client) RecordID() string       { return c.ID }
func (c *Client) RecordClientID() string { return c.ID }
func (c *Client) RecordDate() time.Time  { return time.Time{} }

var emailPattern = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s]+$`)

// Validate checks the client.
func (c *Client) Validate() error {
	var v validator
	v.kind(c.Kind, KindClient)
	v.id("id", c.ID, true)
	v.name("name", c.Name)
	v.date("birthDate", c.BirthDate, true)
	if c.BirthDate.Valid() && c.BirthDate.Time().After(time.Now()) {
		v.add("birthDate", "must not be in the future")
	}
	v.oneOf("gender", c.Gender, Genders, true)
	if c.Email != "" && !emailPattern.MatchString(c.Email) {
		v.add("email", "must be an e-mail address")
	}
	validateContacts(&v, c.Contacts)
	return v.err()
}

func validateContacts(v *validator, cs []Contact) {
	for i, ct := range cs {
		p := fmt.Sprintf("contacts[%d]", i)
		v.name(p+".name", ct.Name)
		if len(ct.Roles) == 0 {
			v.add(p+".roles", "is required: escort, emergency or both")
		}
		for j, r := range ct.Roles {
			v.oneOf(fmt.Sprintf("%s.roles[%d]", p, j), r, ContactRoles, true)
		}
		if ct.Phone == "" {
			v.add(p+".phone", "is required for an escort or emergency contact")
		}
	}
}

// Escort returns the first contact with the escort role, or nil.
func (c *Client) Escort() *Contact {
	for i := range c.Contacts {
		if contains(c.Contacts[i].Roles, ContactEscort) {
			return &c.Contacts[i]
		}
	}
	return nil
}

// Provider is a clinician of the clinic.
type Provider struct {
	Kind        Kind      `json:"kind"`
	ID          string    `json:"id"`            // the clinic's identifier
	NPI         string    `json:"npi,omitempty"` // 10-digit National Provider Identifier
	Name        HumanName `json:"name"`
	Roles       []string  `json:"roles"`                 // ProviderRoles
	Credentials string    `json:"credentials,omitempty"` // "MD", "LCSW", "RN"
}

// Provider roles.
const (
	RolePsychotherapist = "psychotherapist"
	RolePrescriber      = "prescriber"
	RoleNurse           = "nurse"
)

// ProviderRoles are the allowed Provider.Roles.
var ProviderRoles = []string{RolePsychotherapist, RolePrescriber, RoleNurse}

func (p *Provider) RecordKind() Kind       { return KindProvider }
func (p *Provider) RecordID() string       { return p.ID }
func (p *Provider) RecordClientID() string { return "" }
func (p *Provider) RecordDate() time.Time  { return time.Time{} }

var npiPattern = regexp.MustCompile(`^[0-9]{10}$`)

// ValidNPI reports whether s is a 10-digit NPI with a valid Luhn check digit
// (computed with the 80840 prefix, as CMS specifies).
func ValidNPI(s string) bool {
	if !npiPattern.MatchString(s) {
		return false
	}
	sum := 24 // the 80840 prefix contributes 24
	for i := 8; i >= 0; i-- {
		d := int(s[i] - '0')
		if (8-i)%2 == 0 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return (10-sum%10)%10 == int(s[9]-'0')
}

// Validate checks the provider.
func (p *Provider) Validate() error {
	var v validator
	v.kind(p.Kind, KindProvider)
	v.id("id", p.ID, true)
	if p.NPI != "" && !ValidNPI(p.NPI) {
		v.add("npi", "must be a 10-digit NPI with a valid check digit")
	}
	v.name("name", p.Name)
	if len(p.Roles) == 0 {
		v.add("roles", "is required: one or more of psychotherapist, prescriber, nurse")
	}
	for i, r := range p.Roles {
		v.oneOf(fmt.Sprintf("roles[%d]", i), r, ProviderRoles, true)
	}
	if contains(p.Roles, RolePrescriber) && p.NPI == "" {
		v.add("npi", "is required for a prescriber")
	}
	return v.err()
}
