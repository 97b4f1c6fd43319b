#!/usr/bin/env bash
# Validates the Kubernetes manifests under deploy/:
#  1. the chart's CRD copy is identical to deploy/crds/;
#  2. the Helm chart rendered without helm (tools/k8s/render_defaults.py) with
#     its default values and with watchNamespace set + leader election off;
#  3. yamllint on all YAML under deploy/ (templates excepted: not YAML until
#     rendered) and on the rendered manifests;
#  4. every manifest against the Kubernetes OpenAPI schemas (npm kubernetes-models)
#     and the example CohortClusters against the CRD's own schema (ajv), with
#     self-tests that known-bad objects are rejected (tools/k8s/validate.mjs).
# Exit 77 (skipped) only when the npm packages cannot be installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
chart=deploy/helm/cohort-operator
crd=deploy/crds/cohort.dev_cohortclusters.yaml
job_crd=deploy/crds/cohort.dev_cohortjobs.yaml
out="$(mktemp -d "${TMPDIR:-/tmp}/cohort-k8s.XXXXXX")"
trap 'rm -rf "$out"' EXIT

echo "== CRD copy in the chart"
cmp "$crd" "$chart/crds/$(basename "$crd")"
cmp "$job_crd" "$chart/crds/$(basename "$job_crd")"
echo "identical"

echo "== render $chart (defaults; watchNamespace=training, leaderElection off)"
python3 tools/k8s/render_defaults.py "$chart" "$out/default"
python3 tools/k8s/render_defaults.py "$chart" "$out/namespaced" \
  --set watchNamespace=training --set leaderElection.enabled=false --set serviceAccount.name=op
python3 tools/k8s/render_defaults.py "$chart" "$out/all" --set allNamespaces=true
ls "$out/default" "$out/namespaced" "$out/all"
grep -q -- '- --leader-elect' "$out/default/deployment.yaml"
# A namespaced Role by default (the release namespace), a ClusterRole only for every namespace.
grep -q 'kind: Role$' "$out/default/role.yaml"
grep -q -- '- --watch-namespace' "$out/default/deployment.yaml"
grep -q 'kind: Role$' "$out/namespaced/role.yaml"
grep -q 'namespace: training$' "$out/namespaced/role.yaml"
grep -q 'kind: ClusterRole$' "$out/all/role.yaml"
grep -q -- '- --all-namespaces' "$out/all/deployment.yaml"
! grep -q -- '--leader-elect' "$out/namespaced/deployment.yaml"
[[ ! -e "$out/namespaced/leader-election-role.yaml" ]]

echo "== yamllint"
if ! command -v yamllint >/dev/null; then
  echo "yamllint not found: run scripts/setup (Debian package yamllint)" >&2
  exit 1
fi
yamllint -c .yamllint --strict deploy/ "$chart/Chart.yaml" "$chart/values.yaml"
yamllint -c .yamllint --strict "$out/default" "$out/namespaced" "$out/all"
echo "clean"

echo "== Kubernetes OpenAPI schemas + the CRD's schema"
set +e
cache="$(tools/k8s/ensure.sh)"
rc=$?
set -e
if ((rc != 0)); then
  echo "SKIP: the npm packages (kubernetes-models, ajv) could not be installed (ensure.sh exit $rc): is node/npm installed and the npm registry reachable?" >&2
  exit 77
fi
node tools/k8s/validate.mjs --modules "$cache/node_modules" --crd "$crd" --crd "$job_crd" --rbac \
  "$crd" "$job_crd" deploy/examples/*.yaml "$out"/default/*.yaml
node tools/k8s/validate.mjs --modules "$cache/node_modules" --crd "$crd" --crd "$job_crd" "$out"/namespaced/*.yaml
node tools/k8s/validate.mjs --modules "$cache/node_modules" --crd "$crd" --crd "$job_crd" --rbac "$out"/all/*.yaml
