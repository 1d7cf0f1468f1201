#!/usr/bin/env bash
# Builds the peers `make bench-peers` compares the operator with, from pinned Go modules,
# into a cache directory outside the repository, keyed by version (like control-plane.sh).
#
#   hack/peers.sh build    build Kyverno's admission and background controllers if missing,
#                          print the bin dir
#   hack/peers.sh bindir   print the bin dir (builds nothing)
#   hack/peers.sh crds     print the directory of Kyverno's CRDs (in the Go module cache)
#
# Kyverno is pinned in hack/kyverno/go.mod (its one replace directive copied from
# kyverno's own go.mod). Environment: SIDECAR_CACHE_DIR, as for control-plane.sh.
set -euo pipefail

KYVERNO_VERSION=v1.19.1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${SIDECAR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-operator}
BIN=$CACHE_ROOT/kyverno-$KYVERNO_VERSION/bin
CMDS=(kyverno background-controller)

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOMAXPROCS=${GOMAXPROCS:-2}

say() { printf '[peers] %s\n' "$*" >&2; }
die() { printf '[peers] error: %s\n' "$*" >&2; exit 1; }

build() {
  command -v go >/dev/null 2>&1 || die "Go is not installed or not on PATH (Kyverno $KYVERNO_VERSION needs Go >= 1.26.6)."
  mkdir -p "$BIN"
  cd "$ROOT/hack/kyverno"
  for c in "${CMDS[@]}"; do
    [ -x "$BIN/$c" ] && continue
    say "building $c (Kyverno $KYVERNO_VERSION; ~12 min on 2 cores the first time, the Go build cache makes the second one short)"
    local start=$SECONDS
    go build -p 1 -trimpath \
      -ldflags "-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$KYVERNO_VERSION" \
      -o "$BIN/$c.tmp" "github.com/kyverno/kyverno/cmd/$c" \
      || die "building $c failed (module proxy unreachable?)"
    mv "$BIN/$c.tmp" "$BIN/$c"
    say "  built $c in $((SECONDS - start)) s"
  done
  echo "$BIN"
}

crds() {
  cd "$ROOT/hack/kyverno"
  local dir
  dir=$(go list -m -f '{{.Dir}}' "github.com/kyverno/kyverno") || die "Kyverno's module is not in the module cache (run: hack/peers.sh build)"
  [ -d "$dir/config/crds" ] || die "no config/crds in $dir"
  echo "$dir/config/crds"
}

case "${1:-}" in
  build) build ;;
  bindir) echo "$BIN" ;;
  crds) crds ;;
  *) die "usage: $0 build|bindir|crds" ;;
esac
