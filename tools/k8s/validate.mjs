// Validates Kubernetes manifests against the Kubernetes OpenAPI schemas
// (kubernetes-models: ajv validators generated from the published OpenAPI
// spec) and CohortCluster objects against the CRD's own openAPIV3Schema.
//
//   node validate.mjs --modules DIR --crd CRD.yaml [--crd CRD2.yaml...] [--rbac] FILE.yaml...
//
// DIR is the node_modules directory tools/k8s/ensure.sh installed. Per object:
//  * the kubernetes-models validator of its apiVersion/kind (types, required,
//    enums, formats), plus a strict unknown-field check (like kubectl's
//    --validate=strict) from the models' type declarations;
//  * the CRD: extra structural checks (every schema node typed, printer
//    columns resolve, CEL rules known to this script);
//  * an object of a CRD's kind (CohortCluster, CohortJob): the CRD schema
//    with ajv after applying its defaults (x-kubernetes-* keywords ignored),
//    the CRD's CEL rules (each one has a JS equivalent below); every pod
//    template as a core/v1 PodTemplateSpec; a CohortJob's clusterSpec as a
//    CohortCluster's spec;
//  * with --rbac, the operator's (Cluster)Role rules must be exactly the
//    verbs the operator uses.
// Then self-tests: known-bad variants of the first CohortCluster and the
// first CohortJob must fail.
// Exit 0 when all is well, 1 otherwise.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
let modules = "", checkRbac = false;
const files = [], crdPaths = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--modules") modules = args[++i];
  else if (args[i] === "--crd") crdPaths.push(args[++i]);
  else if (args[i] === "--rbac") checkRbac = true;
  else files.push(args[i]);
}
if (!modules || !crdPaths.length) {
  console.error("usage: validate.mjs --modules NODE_MODULES --crd CRD.yaml [--rbac] FILE...");
  process.exit(2);
}
const require = createRequire(path.join(modules, "x.js"));
const YAML = require("yaml");
const Ajv = require("ajv").default;
const addFormats = require("ajv-formats").default;
const kmRoot = path.join(modules, "kubernetes-models");
const amRoot = path.join(modules, "@kubernetes-models", "apimachinery");

let failures = 0;
const fail = (where, msg) => { failures++; console.log(`FAIL ${where}: ${msg}`); };
const ok = (where, msg) => console.log(`ok   ${where}: ${msg}`);

// ---- Field index from the models' .d.ts files (for the unknown-field check).
const iface = new Map(); // alias (IIoK8s...) -> Map(field -> {ref, list, map}) | null (any)
function indexDir(dir) {
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) { if (ent.name !== "_schemas" && ent.name !== "node_modules") indexDir(p); continue; }
    if (!ent.name.endsWith(".d.ts")) continue;
    const src = fs.readFileSync(p, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
    const aliases = new Map();
    for (const m of src.matchAll(/export type \{([^}]*)\}/g))
      for (const part of m[1].split(",")) {
        const mm = part.trim().match(/^(\w+) as (\w+)$/);
        if (mm) aliases.set(mm[1], mm[2]);
      }
    for (const m of src.matchAll(/export interface (\w+) \{([\s\S]*?)\n\}/g)) {
      const alias = aliases.get(m[1]);
      if (!alias) continue;
      const body = m[2];
      const props = new Map();
      const re = /\n {4}"([^"]+)"\??: /g;
      const hits = [...body.matchAll(re)];
      hits.forEach((h, k) => {
        const type = body.slice(h.index + h[0].length, k + 1 < hits.length ? hits[k + 1].index : body.length);
        const ref = (type.match(/IIoK8s\w+/) || [null])[0];
        props.set(h[1], { ref, list: /^Array</.test(type.trim()), map: /\[key: string\]/.test(type) });
      });
      iface.set(alias, hits.length ? props : null);
    }
  }
}
indexDir(kmRoot);
indexDir(amRoot);

function strictFields(obj, alias, where, errs) {
  const props = iface.get(alias);
  if (!props || obj === null || typeof obj !== "object" || Array.isArray(obj)) return;
  for (const [k, v] of Object.entries(obj)) {
    const p = props.get(k);
    if (!p) { errs.push(`${where}: unknown field "${k}"`); continue; }
    if (!p.ref || v === null) continue;
    if (p.list && Array.isArray(v)) v.forEach((e, i) => strictFields(e, p.ref, `${where}/${k}/${i}`, errs));
    else if (p.map && typeof v === "object") for (const [mk, mv] of Object.entries(v)) strictFields(mv, p.ref, `${where}/${k}/${mk}`, errs);
    else strictFields(v, p.ref, `${where}/${k}`, errs);
  }
}

// ---- kubernetes-models: the validator for an apiVersion/kind.
async function modelFor(apiVersion, kind) {
  const file = path.join(kmRoot, apiVersion, // "v1", "apps/v1", ...
    `${kind}.js`);
  if (!fs.existsSync(file)) return null;
  const mod = await import(pathToFileURL(file).href);
  return mod[kind];
}
async function k8sErrors(obj, where) {
  const Model = await modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [`${where}: no Kubernetes schema for ${obj.apiVersion} ${obj.kind}`];
  const errs = [];
  try { new Model(obj).validate(); } catch (e) { errs.push(`${where}: ${e.message}`); }
  const dts = fs.readFileSync(path.join(kmRoot, obj.apiVersion, `${obj.kind}.d.ts`), "utf8");
  const alias = dts.match(new RegExp(`I${obj.kind} as (IIoK8s\\w+)`))[1];
  strictFields(obj, alias, where, errs);
  return errs;
}
async function podTemplateErrors(tpl, where) {
  const Model = await modelFor("v1", "PodTemplateSpec");
  const errs = [];
  try { new Model(tpl).validate(); } catch (e) { errs.push(`${where}: ${e.message}`); }
  strictFields(tpl, "IIoK8sApiCoreV1PodTemplateSpec", where, errs);
  if (!tpl?.spec?.containers?.length) errs.push(`${where}: needs spec.containers[0] (the cohort container)`);
  return errs;
}

// ---- The CRDs and their schemas, by kind.
const crds = {};
for (const crdPath of crdPaths) {
  const crd = YAML.parse(fs.readFileSync(crdPath, "utf8"));
  const version = crd.spec.versions.find((v) => v.storage);
  crds[crd.spec.names.kind] = { path: crdPath, crd, version, openapi: version.schema.openAPIV3Schema };
}

// Each CEL rule in the CRD, in JS (self = the object the rule sits on, after defaulting).
const CEL = {
  "!has(self.metadata.name) || size(self.metadata.name) <= 53":
    (s) => !(s.metadata && "name" in s.metadata) || s.metadata.name.length <= 53,
  "self.minReplicas <= self.maxReplicas": (s) => s.minReplicas <= s.maxReplicas,
  "self.minReplicas <= self.replicas && self.replicas <= self.maxReplicas":
    (s) => s.minReplicas <= s.replicas && s.replicas <= s.maxReplicas,
  "!has(self.metadata.name) || size(self.metadata.name) <= 45":
    (s) => !(s.metadata && "name" in s.metadata) || s.metadata.name.length <= 45,
  "has(self.clusterSpec) != has(self.clusterSelector)": (s) => ("clusterSpec" in s) !== ("clusterSelector" in s),
};

function crdStructuralErrors({ openapi, version }) {
  const errs = [];
  const walk = (node, at) => {
    if (!node || typeof node !== "object") return;
    if (!node.type && !node["x-kubernetes-preserve-unknown-fields"] && !node["x-kubernetes-int-or-string"])
      errs.push(`${at}: no type (not a structural schema)`);
    for (const r of node["x-kubernetes-validations"] || [])
      if (!(r.rule in CEL)) errs.push(`${at}: CEL rule without a JS equivalent in validate.mjs: ${r.rule}`);
    if (node.type === "array" && node["x-kubernetes-list-type"] === "map")
      for (const k of node["x-kubernetes-list-map-keys"] || [])
        if (!(node.items?.required || []).includes(k) && !("default" in (node.items?.properties?.[k] || {})))
          errs.push(`${at}: list-map key ${k} must be required or defaulted`);
    for (const [k, v] of Object.entries(node.properties || {})) walk(v, `${at}.${k}`);
    if (node.items) walk(node.items, `${at}[]`);
    if (typeof node.additionalProperties === "object") walk(node.additionalProperties, `${at}{}`);
  };
  walk(openapi, "openAPIV3Schema");
  for (const col of version.additionalPrinterColumns || []) {
    let node = openapi;
    for (const part of col.jsonPath.replace(/^\./, "").split(".")) {
      if (part === "metadata" && node === openapi) { node = { type: "object", properties: { creationTimestamp: { type: "string" } } }; continue; }
      node = node?.properties?.[part];
    }
    if (!node) errs.push(`printer column "${col.name}": ${col.jsonPath} is not in the schema`);
    else if (col.type === "integer" && node.type !== "integer") errs.push(`printer column "${col.name}": not an integer`);
  }
  const st = version.subresources?.status;
  if (!st) errs.push("the status subresource is not enabled");
  return errs;
}

function stripX(node) {
  if (Array.isArray(node)) return node.map(stripX);
  if (!node || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k.startsWith("x-kubernetes-")) continue;
    if (k === "properties" || (k === "additionalProperties" && typeof v === "object")) {
      out[k] = k === "properties" ? Object.fromEntries(Object.entries(v).map(([pk, pv]) => [pk, stripX(pv)])) : stripX(v);
    } else if (k === "items") out[k] = stripX(v);
    else out[k] = v;
  }
  if (node["x-kubernetes-preserve-unknown-fields"] && !out.type) out.type = "object";
  // Unknown fields are errors (kubectl's default strict field validation).
  if (out.type === "object" && out.properties && !("additionalProperties" in out)) out.additionalProperties = false;
  return out;
}
const ajv = new Ajv({ allErrors: true, strict: false, useDefaults: true });
addFormats(ajv);
for (const c of Object.values(crds)) c.validate = ajv.compile(stripX(c.openapi));

function celErrors(obj, schema, at, errs) {
  if (obj === null || typeof obj !== "object" || !schema) return;
  for (const r of schema["x-kubernetes-validations"] || []) {
    const f = CEL[r.rule];
    if (f && !f(obj)) errs.push(`${at}: ${r.message || r.rule}`);
  }
  if (Array.isArray(obj)) obj.forEach((e, i) => celErrors(e, schema.items, `${at}/${i}`, errs));
  else for (const [k, v] of Object.entries(obj)) if (schema.properties?.[k]) celErrors(v, schema.properties[k], `${at}/${k}`, errs);
}

async function customObjectErrors(cr0, where) {
  const { crd, version, openapi, validate } = crds[cr0.kind];
  const cr = structuredClone(cr0); // ajv applies the CRD's defaults in place, like the API server
  const errs = [];
  if (cr.apiVersion !== `${crd.spec.group}/${version.name}`) errs.push(`${where}: apiVersion must be ${crd.spec.group}/${version.name}`);
  if (!validate(cr)) for (const e of validate.errors) errs.push(`${where}${e.instancePath}: ${e.message}`);
  else celErrors(cr, openapi, where, errs);
  if (cr.kind === "CohortJob" && cr.spec?.clusterSpec) {
    if (!crds.CohortCluster) errs.push(`${where}: a clusterSpec needs the CohortCluster CRD (--crd) to be checked`);
    else errs.push(...(await customObjectErrors({ apiVersion: cr.apiVersion, kind: "CohortCluster",
      metadata: { name: `${cr.metadata?.name}-cluster` }, spec: cr.spec.clusterSpec }, `${where}/spec/clusterSpec`)));
  }
  if (cr.spec?.headGroupSpec?.template) errs.push(...(await podTemplateErrors(cr.spec.headGroupSpec.template, `${where}/spec/headGroupSpec/template`)));
  for (const [i, g] of (cr.spec?.workerGroupSpecs || []).entries())
    if (g.template) errs.push(...(await podTemplateErrors(g.template, `${where}/spec/workerGroupSpecs/${i}/template`)));
  return errs;
}

const RBAC = {
  "|pods": "create,delete,get,list,patch,update,watch",
  "|services": "create,delete,get,list,patch,update,watch",
  "|secrets": "create,delete,get,list,patch,update,watch",
  "|persistentvolumeclaims": "create,list",
  "|configmaps": "get",  // headGroupSpec.stateVolumeClaim
  "|events": "create,patch",
  "cohort.dev|cohortclusters": "create,delete,get,list,patch,update,watch",
  "cohort.dev|cohortclusters/status": "get,patch,update",
  "cohort.dev|cohortjobs": "delete,get,list,watch",
  "cohort.dev|cohortjobs/status": "get,patch,update",
  "coordination.k8s.io|leases": "create,get,update",
};
const rbacSeen = {};
function collectRbac(obj, where) {
  if (!/^(Cluster)?Role$/.test(obj.kind) || !obj.metadata?.name?.startsWith("cohort-operator")) return [];
  const errs = [];
  for (const rule of obj.rules || [])
    for (const g of rule.apiGroups) for (const r of rule.resources) {
      const key = `${g}|${r}`;
      if (!(key in RBAC)) { errs.push(`${where}: grants ${key} which the operator does not use`); continue; }
      rbacSeen[key] = [...new Set([...(rbacSeen[key] || []), ...rule.verbs])].sort().join(",");
    }
  return errs;
}

// ---- Run.
const firstCR = {};  // by kind
for (const c of Object.values(crds)) {
  const errs = crdStructuralErrors(c);
  errs.forEach((e) => fail(c.path, e));
  if (!errs.length) ok(c.path, "structural schema, printer columns, CEL rules, status subresource");
}
for (const file of files) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { uniqueKeys: true });
  let n = 0;
  for (const [i, doc] of docs.entries()) {
    if (doc.errors.length) { fail(file, doc.errors.map(String).join("; ")); continue; }
    const obj = doc.toJS();
    if (obj === null) continue;
    n++;
    const where = `${path.basename(file)}#${i} ${obj.kind}/${obj.metadata?.name}`;
    let errs;
    if (obj.kind in crds) {
      errs = await customObjectErrors(obj, where);
      firstCR[obj.kind] ||= obj;
    } else {
      errs = await k8sErrors(obj, where);
      if (checkRbac) errs.push(...collectRbac(obj, where));
    }
    errs.forEach((e) => fail(file, e));
    if (!errs.length) ok(where, obj.kind in crds ? "valid against the CRD schema + CEL + PodTemplateSpec" : `valid ${obj.apiVersion} ${obj.kind}`);
  }
  if (!n) fail(file, "no objects");
}
if (checkRbac) {
  for (const [key, want] of Object.entries(RBAC)) {
    if (rbacSeen[key] !== want) fail("rbac", `${key}: verbs ${rbacSeen[key] || "(none)"}, want exactly ${want}`);
  }
  if (Object.entries(RBAC).every(([k, w]) => rbacSeen[k] === w)) ok("rbac", "the operator's roles grant exactly the verbs it uses");
}

// Self-tests: the validators must reject these.
if (firstCR.CohortJob) {
  const bad = {
    "no entrypoint": (j) => { delete j.spec.entrypoint; },
    "both clusterSpec and clusterSelector": (j) => { j.spec.clusterSpec ||= {}; j.spec.clusterSelector = { clusterName: "x" }; },
    "neither clusterSpec nor clusterSelector": (j) => { delete j.spec.clusterSpec; delete j.spec.clusterSelector; },
    "backoffLimit negative": (j) => { j.spec.backoffLimit = -1; },
    "name longer than 45": (j) => { j.metadata.name = "x".repeat(46); },
    "unknown spec field": (j) => { j.spec.shutdownAfterFinish = true; },
    "clusterSpec without a head": (j) => { j.spec.clusterSpec = { workerGroupSpecs: [] }; delete j.spec.clusterSelector; },
  };
  for (const [name, mutate] of Object.entries(bad)) {
    const j = structuredClone(firstCR.CohortJob);
    mutate(j);
    const errs = await customObjectErrors(j, "selftest");
    if (errs.length) ok(`self-test CohortJob "${name}"`, `rejected (${errs[0].replace(/^selftest/, "")})`);
    else fail(`self-test CohortJob "${name}"`, "was accepted");
  }
}
if (firstCR.CohortCluster) {
  const bad = {
    "minReplicas > maxReplicas": (c) => { c.spec.workerGroupSpecs[0].minReplicas = 5; c.spec.workerGroupSpecs[0].maxReplicas = 2; c.spec.workerGroupSpecs[0].replicas = 2; },
    "replicas > maxReplicas": (c) => { c.spec.workerGroupSpecs[0].replicas = c.spec.workerGroupSpecs[0].maxReplicas + 1; },
    "negative replicas": (c) => { c.spec.workerGroupSpecs[0].replicas = -1; },
    "missing groupName": (c) => { delete c.spec.workerGroupSpecs[0].groupName; },
    "groupName not a DNS label": (c) => { c.spec.workerGroupSpecs[0].groupName = "GPU_1"; },
    "missing head template": (c) => { delete c.spec.headGroupSpec.template; },
    "serviceType not in the enum": (c) => { c.spec.headGroupSpec.serviceType = "Headless"; },
    "startParams value not a string": (c) => { c.spec.headGroupSpec.startParams = { "num-cpus": 4 }; },
    "unknown spec field": (c) => { c.spec.enableInTreeAutoscaling = true; },
    "name longer than 53": (c) => { c.metadata.name = "x".repeat(54); },
    "unknown field in a container": (c) => { c.spec.headGroupSpec.template.spec.containers[0].resourcez = {}; },
    "containerPort not an integer": (c) => { c.spec.headGroupSpec.template.spec.containers[0].ports = [{ containerPort: "http" }]; },
  };
  for (const [name, mutate] of Object.entries(bad)) {
    const c = structuredClone(firstCR.CohortCluster);
    mutate(c);
    const errs = await customObjectErrors(c, "selftest");
    if (errs.length) ok(`self-test "${name}"`, `rejected (${errs[0].replace(/^selftest/, "")})`);
    else fail(`self-test "${name}"`, "was accepted");
  }
  const dep = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" },
    spec: { replicas: "1", selector: {}, template: { spec: { containers: [{ name: "a" }] } } } };
  const derrs = await k8sErrors(dep, "selftest");
  if (derrs.length) ok('self-test "Deployment with replicas: \\"1\\""', `rejected (${derrs[0].replace(/^selftest/, "")})`);
  else fail('self-test "Deployment with replicas: \\"1\\""', "was accepted");
}
console.log(failures ? `${failures} failure(s)` : "all manifests valid");
process.exit(failures ? 1 : 0);
