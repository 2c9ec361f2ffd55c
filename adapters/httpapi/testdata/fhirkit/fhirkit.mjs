// Runs fhir-kit-client (a third-party FHIR client) against a running KAP
// Bridge FHIR facade and prints what it saw as one JSON line. Called by
// adapters/httpapi/fhirkit_test.go:
//   node fhirkit.mjs <baseUrl> <apiKey> <patientId> <count>
import { Client } from 'fhir-kit-client';

const [baseUrl, apiKey, patientId, count] = process.argv.slice(2);
const client = new Client({ baseUrl, customHeaders: { 'X-API-Key': apiKey } });
const out = { ids: [], pages: 0 };

// The CapabilityStatement, as a client reads it first.
const cs = await client.capabilityStatement();
const server = (cs.rest ?? []).find((r) => r.mode === 'server') ?? {};
const obs = (server.resource ?? []).find((r) => r.type === 'Observation') ?? {};
out.capability = {
  resourceType: cs.resourceType,
  fhirVersion: cs.fhirVersion,
  observationInteractions: (obs.interaction ?? []).map((i) => i.code),
  observationSearchParams: (obs.searchParam ?? []).map((p) => p.name),
};

// A search with paging: follow the next links until there are none.
let bundle = await client.search({ resourceType: 'Observation', searchParams: { patient: patientId, _count: count } });
out.total = bundle.total;
while (bundle) {
  out.pages++;
  for (const e of bundle.entry ?? []) {
    if (e.search?.mode === 'match') out.ids.push(e.resource.id);
  }
  bundle = await client.nextPage({ bundle });
}

// A read of the first result.
const first = await client.read({ resourceType: 'Observation', id: out.ids[0] });
out.read = { id: first.id, versionId: first.meta?.versionId };

// A create from the "EHR" side, then a read of what was created.
const created = await client.create({
  resourceType: 'Condition',
  body: {
    resourceType: 'Condition',
    identifier: [{ system: 'http://ehr.example.org/fhir/sid/condition', value: 'fhirkit-1' }],
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
    verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
    code: { coding: [{ system: 'http://snomed.info/sct', code: '38341003', display: 'Hypertensive disorder' }] },
    subject: { reference: `Patient/${patientId}` },
  },
});
const again = await client.read({ resourceType: 'Condition', id: created.id });
out.created = { id: created.id, versionId: created.meta?.versionId, readBack: again.id, subject: again.subject?.reference };

// A refused search: the client sees the OperationOutcome.
try {
  await client.search({ resourceType: 'Observation', searchParams: { code: '8867-4' } });
  out.refused = 'no error';
} catch (err) {
  out.refused = { status: err.response?.status, code: err.response?.data?.issue?.[0]?.code };
}
console.log(JSON.stringify(out));
