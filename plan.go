package kap

import (
	"fmt"
	"time"
)

// TreatmentPlan is a client's course of KAP: preparation, dosing and
// integration sessions, follow-ups, goals and the ketamine order.
type TreatmentPlan struct {
	Kind         Kind            `json:"kind"`
	ID           string          `json:"id"`
	ClientID     string          `json:"clientId"`
	Created      Time            `json:"created"`
	Status       string          `json:"status"` // PlanStatuses
	PrescriberID string          `json:"prescriberId"`
	Start        Date            `json:"start"`
	End          Date            `json:"end,omitempty"`
	Preparation  SessionSchedule `json:"preparation"`
	Dosing       SessionSchedule `json:"dosing"`
	Integration  SessionSchedule `json:"integration"`
	FollowUp     SessionSchedule `json:"followUp"`
	Goals        []Goal          `json:"goals,omitempty"`
	Order        MedicationOrder `json:"order"`
}

// PlanStatuses are the allowed TreatmentPlan.Status values (FHIR
// request-status codes).
var PlanStatuses = []string{"draft", "active", "on-hold", "revoked", "completed"}

// SessionSchedule is how many sessions of one kind are planned and how often.
type SessionSchedule struct {
	Count        int `json:"count"`
	IntervalDays int `json:"intervalDays,omitempty"` // days between sessions
}

// Goal is a measurable treatment goal, e.g. PHQ-9 total ≤ 9 (half of a
// baseline of 18) by a due date.
type Goal struct {
	ID          string  `json:"id"`
	Description string  `json:"description"`
	Instrument  string  `json:"instrument,omitempty"` // Instruments
	Comparator  string  `json:"comparator,omitempty"` // <, <=, >=, >
	Target      float64 `json:"target,omitempty"`
	Due         Date    `json:"due,omitempty"`
}

// Products are the ketamine and esketamine products an order may name.
const (
	ProductKetamine100    = "ketamine-100mg-ml-injection"
	ProductKetamine10     = "ketamine-10mg-ml-injection"
	ProductKetamine50     = "ketamine-50mg-ml-injection"
	ProductKetamineTroche = "ketamine-troche-compounded"
	ProductKetamineOral   = "ketamine-oral-compounded"
	ProductEsketamine     = "esketamine-nasal-spray"
)

// Products are the allowed product values.
var Products = []string{ProductKetamine100, ProductKetamine10, ProductKetamine50, ProductKetamineTroche,
	ProductKetamineOral, ProductEsketamine}

// Routes of administration.
const (
	RouteIV = "IV"
	RouteIM = "IM"
	RouteSL = "SL"
	RoutePO = "PO"
	RouteIN = "IN"
)

// Routes are the allowed routes.
var Routes = []string{RouteIV, RouteIM, RouteSL, RoutePO, RouteIN}

// routeProducts lists the products that make sense for each route.
var routeProducts = map[string][]string{
	RouteIV: {ProductKetamine100, ProductKetamine10, ProductKetamine50},
	RouteIM: {ProductKetamine100, ProductKetamine10, ProductKetamine50},
	RouteSL: {ProductKetamineTroche},
	RoutePO: {ProductKetamineOral},
	RouteIN: {ProductEsketamine},
}

// MedicationOrder is the prescriber's ketamine order.
type MedicationOrder struct {
	Product   string   `json:"product"` // Products
	Route     string   `json:"route"`   // Routes
	Dose      Quantity `json:"dose"`    // unit mg or mg/kg
	MaxDoseMg float64  `json:"maxDoseMg"`
	Frequency string   `json:"frequency,omitempty"` // free text, e.g. "twice weekly for 3 weeks"
}

func (p *TreatmentPlan) RecordKind() Kind       { return KindTreatmentPlan }
func (p *TreatmentPlan) RecordID() string       { return p.ID }
func (p *TreatmentPlan) RecordClientID() string { return p.ClientID }
func (p *TreatmentPlan) RecordDate() time.Time  { return p.Created.Time }

// Validate checks the plan.
func (p *TreatmentPlan) Validate() error {
	var v validator
	v.kind(p.Kind, KindTreatmentPlan)
	v.id("id", p.ID, true)
	v.id("clientId", p.ClientID, true)
	v.time("created", p.Created, true)
	v.oneOf("status", p.Status, PlanStatuses, true)
	v.id("prescriberId", p.PrescriberID, true)
	v.date("start", p.Start, true)
	v.date("end", p.End, false)
	if p.Start.Valid() && p.End.Valid() && p.End.Time().Before(p.Start.Time()) {
		v.add("end", "must not be before start")
	}
	sched := func(path string, s SessionSchedule, lo, hi int) {
		if s.Count < lo || s.Count > hi {
			v.add(path+".count", "must be between %d and %d", lo, hi)
		}
		if s.IntervalDays < 0 || s.IntervalDays > 90 {
			v.add(path+".intervalDays", "must be between 0 and 90")
		}
		if s.Count > 1 && s.IntervalDays == 0 {
			v.add(path+".intervalDays", "is required when more than one session is planned")
		}
	}
	sched("preparation", p.Preparation, 0, 10)
	sched("dosing", p.Dosing, 1, 52)
	sched("integration", p.Integration, 0, 52)
	sched("followUp", p.FollowUp, 0, 52)
	seen := map[string]bool{}
	for i, g := range p.Goals {
		gp := fmt.Sprintf("goals[%d]", i)
		v.id(gp+".id", g.ID, true)
		if seen[g.ID] {
			v.add(gp+".id", "appears twice")
		}
		seen[g.ID] = true
		v.required(gp+".description", g.Description)
		v.oneOf(gp+".instrument", g.Instrument, Instruments, false)
		if g.Instrument != "" {
			v.oneOf(gp+".comparator", g.Comparator, []string{"<", "<=", ">=", ">"}, true)
			if lo, hi, ok := TotalRange(g.Instrument); ok && (g.Target < float64(lo) || g.Target > float64(hi)) {
				v.add(gp+".target", "must be between %d and %d for %s", lo, hi, g.Instrument)
			}
		} else if g.Comparator != "" || g.Target != 0 {
			v.add(gp+".instrument", "is required when a comparator or target is given")
		}
		v.date(gp+".due", g.Due, false)
	}
	validateOrder(&v, "order", p.Order)
	return v.err()
}

func validateOrder(v *validator, path string, o MedicationOrder) {
	v.oneOf(path+".product", o.Product, Products, true)
	v.oneOf(path+".route", o.Route, Routes, true)
	if ps, ok := routeProducts[o.Route]; ok && o.Product != "" && !contains(ps, o.Product) {
		v.add(path+".product", "cannot be given by route %s (allowed: %v)", o.Route, ps)
	}
	v.oneOf(path+".dose.unit", o.Dose.Unit, []string{"mg", "mg/kg"}, true)
	switch o.Dose.Unit {
	case "mg":
		v.rangeF(path+".dose.value", o.Dose.Value, 1, 800)
	case "mg/kg":
		v.rangeF(path+".dose.value", o.Dose.Value, 0.05, 10)
	}
	v.rangeF(path+".maxDoseMg", o.MaxDoseMg, 1, 800)
	if o.Dose.Unit == "mg" && o.MaxDoseMg > 0 && o.Dose.Value > o.MaxDoseMg {
		v.add(path+".dose.value", "is above maxDoseMg")
	}
	if o.Route == RouteIN && o.Dose.Unit == "mg" && o.Dose.Value != 56 && o.Dose.Value != 84 && o.Dose.Value != 28 {
		v.add(path+".dose.value", "must be 28, 56 or 84 mg for intranasal esketamine (28 mg per device)")
	}
}
