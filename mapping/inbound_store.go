package mapping

// What the FHIR facade needs to serve and to store resources: the logical
// ids of the resources this mapper produces, and the stored form of a
// resource that arrived from an EHR.

import (
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	ptpb "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/patient_go_proto"

	"github.com/kapbridge/kap"
)

// ResourceID returns the logical id of the resource with the business
// identifier system|value: the UUID (version 5, in the mapper's namespace,
// which is derived from the tenant's identifier base) that is also the
// urn:uuid fullUrl of its Bundle entry. It is stable across record versions,
// differs between tenants and matches [A-Za-z0-9\-\.]{1,64}.
func (m *Mapper) ResourceID(system, value string) string {
	return uuid.NewSHA1(m.ns, []byte(system+"|"+value)).String()
}

// OwnsSystem reports whether system is one of this mapper's identifier
// systems ("<IdentifierBase>/<ResourceType>") and returns the type.
func (m *Mapper) OwnsSystem(system string) (resourceType string, ok bool) {
	base := m.opts.IdentifierBase + "/"
	if len(system) <= len(base) || system[:len(base)] != base {
		return "", false
	}
	return system[len(base):], true
}

// InboundResourceID returns the logical id given to a resource an EHR
// created without choosing one: derived from its first business identifier
// when it has one (so a resent create updates the same resource), else
// random.
func (m *Mapper) InboundResourceID(resourceType, system, value string) string {
	if value == "" {
		return uuid.NewString()
	}
	return uuid.NewSHA1(m.ns, []byte("ehr|"+resourceType+"|"+system+"|"+value)).String()
}

// InboundRecord is the stored form (StoredRecord.Record) of one FHIR
// resource received from an EHR (record kind kap.KindEHRResource). The
// resource itself is kept, as sent (references resolved), in the stored
// Bundle; this is what the gateway read from it.
type InboundRecord struct {
	Kind         kap.Kind  `json:"kind"`
	ID           string    `json:"id"` // "<ResourceType>/<ResourceID>"
	ClientID     string    `json:"clientId"`
	ResourceType string    `json:"resourceType"`
	ResourceID   string    `json:"resourceId"`
	Received     time.Time `json:"received"`
	// Client is what a Patient says (Patient resources only).
	Client *kap.Client `json:"client,omitempty"`
	// Facts are the screening facts the resource holds (medications,
	// conditions, allergies, vital signs), nil when it holds none.
	Facts *ScreeningFacts `json:"facts,omitempty"`
}

// NewInboundRecord reads one inbound resource: for a Patient the client
// details (keyed by idSystem), for the others the screening facts.
func NewInboundRecord(res proto.Message, resourceType, resourceID, clientID, idSystem string, received time.Time) InboundRecord {
	r := InboundRecord{Kind: kap.KindEHRResource, ID: resourceType + "/" + resourceID, ClientID: clientID,
		ResourceType: resourceType, ResourceID: resourceID, Received: received.UTC()}
	if p, ok := res.(*ptpb.Patient); ok {
		c := InboundClient(p, idSystem)
		if c.ID == "" {
			c.ID = clientID
		}
		r.Client = c
		return r
	}
	f := ScreeningFromResources([]proto.Message{res})
	if len(f.Medications)+len(f.Conditions)+len(f.Allergies)+len(f.BloodPressures)+len(f.HeartRates) > 0 {
		r.Facts = &f
	}
	return r
}
