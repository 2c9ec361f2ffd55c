package kap

// KindEHRResource is the record kind of a FHIR resource received from an
// EHR through the FHIR facade (POST/PUT /fhir/r4): a Patient, or a
// MedicationStatement, MedicationRequest, Condition, AllergyIntolerance or
// Observation about a client. Such records are stored with the client's
// records (StoredRecord.ClientID) for the prescriber's intake screen and for
// the facade's reads and searches; they are never queued for delivery (they
// came from the EHR). Their Record is a mapping.InboundRecord and their
// Bundle holds the resource. They are not a kap/v1 collection: the kap/v1
// API does not accept them.
const KindEHRResource Kind = "EHRResource"

// InboundResourceTypes are the FHIR resource types the facade accepts from
// EHRs.
var InboundResourceTypes = []string{"Patient", "MedicationStatement", "MedicationRequest",
	"Condition", "AllergyIntolerance", "Observation"}
