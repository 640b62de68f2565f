#!/usr/bin/env bash
# Build the remotedialer anchor (benchmarks/anchors/remotedialer: Rancher's tunnel library as a server and a
# client program) from the Go module proxy into a cache outside the repo, and print the program's path as the
# last line of stdout (progress: stderr). With the program built for these sources it returns at once.
#
#   bash benchmarks/anchors/build_remotedialer.sh
#
# Called by benchmarks/k8s_path.py (and its smoke test) when the program is missing, so a fresh machine builds
# it. The program goes to $KAAS_CACHE_DIR/anchors/remotedialer/<hash of go.mod, go.sum, main.go>/, built into a
# .partial folder and renamed when complete. GOMODCACHE and GOCACHE are scripts/kube-bin.sh's.
#
# remotedialer v0.6.2's go.mod asks for Go 1.27.3: GOTOOLCHAIN=auto lets an older installed go fetch that
# toolchain from the module proxy (golang.org/toolchain, once per cache); a new enough go builds it itself.
# Environment: KAAS_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/kaas); GO (default: go on PATH, else
# /usr/local/go/bin/go).
set -euo pipefail
SOURCE=$(cd "$(dirname "$0")/remotedialer" && pwd)
CACHE=${KAAS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaas}
log() { printf '[build-remotedialer %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[ -x "$GO" ] || { log "error: no Go toolchain (looked for go on PATH and /usr/local/go/bin/go)"; exit 1; }
export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOTOOLCHAIN=auto GOFLAGS=-mod=readonly CGO_ENABLED=0

stamp=$(cat "$SOURCE/go.mod" "$SOURCE/go.sum" "$SOURCE/main.go" | sha256sum | cut -c1-16)
target=$CACHE/anchors/remotedialer/$stamp
program=$target/remotedialer-anchor
if [ -x "$program" ]; then
  echo "$program"
  exit 0
fi
mkdir -p "$CACHE/anchors"
# one build at a time per cache: a second caller waits, then finds it built
exec 9> "$CACHE/anchors/.lock"
flock 9
if [ ! -x "$program" ]; then
  log "building $program (Go modules from the proxy; a first build may fetch Go 1.27.3)"
  rm -rf "$target.partial"
  mkdir -p "$target.partial"
  (cd "$SOURCE" && "$GO" build -trimpath -buildvcs=false -o "$target.partial/remotedialer-anchor" .) >&2
  rm -rf "$target"
  mv "$target.partial" "$target"
fi
echo "$program"
