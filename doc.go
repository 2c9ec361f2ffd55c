// Package kap holds the KAP Bridge domain: the records a ketamine-assisted
// psychotherapy clinic produces (Client, Provider, Intake, Consent,
// TreatmentPlan, DosingSession, IntegrationSession, Assessment), their
// validation, the error type shared by every layer, and the interfaces the
// gateway core consumes (record store, outbox, ledger, cache). It imports the
// standard library only; FHIR, Redis, HTTP and storage live in sub-packages.
package kap
