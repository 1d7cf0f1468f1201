#!/usr/bin/env bash
# Builds the local Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok) from pinned Go modules into a cache directory
# outside the repository, keyed by the pins.
#
#   hack/control-plane.sh build     build whatever is missing (idempotent), print the bin dir
#   hack/control-plane.sh bindir    print the bin dir (builds nothing)
#   hack/control-plane.sh generate  regenerate hack/k8s/go.mod and hack/etcd/go.mod from the pins
#   hack/control-plane.sh kstatus   build the kstatus helper if missing (hack/kstatus, the
#                                   cli-utils library GitOps tools use), print its path
#   hack/control-plane.sh helm      build helm if missing (pinned in hack/helm/go.mod), print
#                                   its path
#
# Environment: SIDECAR_CACHE_DIR overrides ${XDG_CACHE_HOME:-~/.cache}/sidecar-operator.
set -euo pipefail

K8S_VERSION=v1.36.3
K8S_STAGING=v0.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
# sigs.k8s.io/cli-utils, for hack/kstatus (pinned in hack/kstatus/go.mod).
CLI_UTILS_VERSION=v0.37.2
# helm.sh/helm/v4, for the chart's tests (pinned in hack/helm/go.mod).
HELM_VERSION=v4.3.1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT=${SIDECAR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sidecar-operator}
BIN=$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
KSTATUS=$CACHE_ROOT/kstatus-cli-utils-$CLI_UTILS_VERSION/bin/kstatus
HELM=$CACHE_ROOT/helm-$HELM_VERSION/bin/helm

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# One package at a time keeps peak memory near one link (2-4 GiB) on a 2-core machine.
export GOMAXPROCS=${GOMAXPROCS:-2}

say() { printf '[control-plane] %s\n' "$*" >&2; }
die() { printf '[control-plane] error: %s\n' "$*" >&2; exit 1; }

need_go() {
  command -v go >/dev/null 2>&1 || die "Go is not installed or not on PATH. Install Go >= 1.26 (https://go.dev/doc/install) and re-run."
  local v
  v=$(go env GOVERSION)
  case "$v" in
    go1.2[6-9]*|go1.[3-9][0-9]*) ;;
    *) die "Go $v is too old: Kubernetes $K8S_VERSION needs Go >= 1.26." ;;
  esac
}

generate() {
  need_go
  say "generating hack/k8s/go.mod for k8s.io/kubernetes $K8S_VERSION"
  cd "$ROOT/hack/k8s"
  local gomod
  gomod=$(go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@$K8S_VERSION") \
    || die "cannot fetch k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  cat >go.mod <<EOF
module sidecar-operator/hack/k8s

go 1.26.0

godebug default=go1.26
EOF
  # Every staging replace in upstream's go.mod becomes a replace to the published module.
  local n=0
  while read -r mod; do
    go mod edit -replace="$mod=$mod@$K8S_STAGING"
    n=$((n + 1))
  done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
  [ "$n" -gt 0 ] || die "no staging replaces found in $gomod"
  say "  $n staging modules replaced with $K8S_STAGING"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  for c in "${K8S_CMDS[@]}"; do go mod edit -tool="k8s.io/kubernetes/cmd/$c"; done
  go mod tidy || die "go mod tidy failed for hack/k8s (module proxy unreachable?)"

  say "generating hack/etcd/go.mod for go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  cd "$ROOT/hack/etcd"
  cat >go.mod <<EOF
module sidecar-operator/hack/etcd

go 1.26.0
EOF
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod edit -tool="go.etcd.io/etcd/server/v3"
  go mod tidy || die "go mod tidy failed for hack/etcd (module proxy unreachable?)"
  say "done; commit hack/k8s/go.{mod,sum} and hack/etcd/go.{mod,sum}"
}

build_one() { # name, module dir, package, ldflags
  local name=$1 dir=$2 pkg=$3 ldf=$4 start
  if [ -x "$BIN/$name" ]; then say "$name: cached"; return; fi
  say "$name: building $pkg (first build of Kubernetes takes 10-30 minutes) ..."
  start=$(date +%s)
  (cd "$ROOT/hack/$dir" && go build -trimpath -ldflags "$ldf" -o "$BIN/$name.tmp" "$pkg") \
    || die "building $name failed (see the Go output above; a module that cannot be fetched means the Go module proxy is unreachable)"
  mv "$BIN/$name.tmp" "$BIN/$name"
  say "$name: built in $(($(date +%s) - start))s"
}

kstatus() {
  if [ ! -x "$KSTATUS" ]; then
    need_go
    say "kstatus: building hack/kstatus (sigs.k8s.io/cli-utils $CLI_UTILS_VERSION) ..."
    mkdir -p "$(dirname "$KSTATUS")"
    (cd "$ROOT/hack/kstatus" && go build -trimpath -ldflags "-s -w" -o "$KSTATUS.tmp" .) \
      || die "building hack/kstatus failed (module proxy unreachable?)"
    mv "$KSTATUS.tmp" "$KSTATUS"
  fi
  echo "$KSTATUS"
}

helm() {
  if [ ! -x "$HELM" ]; then
    need_go
    say "helm: building helm.sh/helm/v4 $HELM_VERSION (about 4 minutes) ..."
    mkdir -p "$(dirname "$HELM")"
    (cd "$ROOT/hack/helm" && go build -trimpath -ldflags "-s -w" -o "$HELM.tmp" helm.sh/helm/v4/cmd/helm) \
      || die "building helm failed (module proxy unreachable?)"
    mv "$HELM.tmp" "$HELM"
  fi
  echo "$HELM"
}

build() {
  mkdir -p "$BIN"
  kstatus >/dev/null
  helm >/dev/null
  local missing=0
  for b in "${K8S_CMDS[@]}" etcd kwok; do [ -x "$BIN/$b" ] || missing=1; done
  if [ "$missing" = 0 ]; then say "all binaries cached in $BIN"; echo "$BIN"; return; fi
  need_go
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local vpkg=k8s.io/component-base/version
  local ldf="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
  ldf+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z -X $vpkg.gitCommit=$K8S_VERSION"
  local i=0
  for c in "${K8S_CMDS[@]}"; do
    i=$((i + 1)); say "step $i/6"
    build_one "$c" k8s "k8s.io/kubernetes/cmd/$c" "$ldf"
  done
  say "step 5/6"
  build_one etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
  say "step 6/6"
  if [ -x "$BIN/kwok" ]; then say "kwok: cached"; else
    say "kwok: go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION ..."
    (cd "$ROOT" && GOFLAGS= GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") \
      || die "installing kwok $KWOK_VERSION failed (module proxy unreachable?)"
  fi
  say "all binaries in $BIN"
  echo "$BIN"
}

case "${1:-build}" in
  build) build ;;
  bindir) echo "$BIN" ;;
  generate) generate ;;
  kstatus) kstatus ;;
  helm) helm ;;
  *) die "usage: $0 build|bindir|generate|kstatus|helm" ;;
esac
