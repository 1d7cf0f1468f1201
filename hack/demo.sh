#!/usr/bin/env bash
# make demo: local control plane + CRD + operator + the example workloads, then show
# the sidecars appearing. Ctrl-C stops everything. DEMO_EXIT=1 (or no terminal)
# exits after showing the result instead of waiting.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=target/demo
NS=demo
mkdir -p "$OUT"
rm -f "$OUT/kubeconfig"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# GET /readyz of the operator with bash alone.
operator_ready() {
  (exec 3<>/dev/tcp/127.0.0.1/18080 && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 && head -1 <&3 | grep -q ' 200') 2>/dev/null
}

say "building the control plane binaries (cached after the first run)"
bash hack/control-plane.sh build >/dev/null
BIN=$(bash hack/control-plane.sh bindir)
KUBECTL="$BIN/kubectl --kubeconfig $OUT/kubeconfig"

say "building sidecar-operator"
cargo build -q --bin sidecar-testenv --bin sidecar-operator

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
target/debug/sidecar-testenv --kubeconfig-out "$OUT/kubeconfig" >"$OUT/cluster.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 240); do
  [ -s "$OUT/kubeconfig" ] && grep -q "Control plane ready" "$OUT/cluster.log" && break
  if ! kill -0 "${PIDS[0]}" 2>/dev/null; then cat "$OUT/cluster.log"; echo "the control plane did not start" >&2; exit 1; fi
  sleep 0.5
done
grep "testenv" "$OUT/cluster.log" | sed 's/^/  /'

say "installing the CRD: kubectl apply -f crds/"
$KUBECTL apply -f crds/
for _ in $(seq 1 100); do
  $KUBECTL get crd sidecarpolicies.sidecars.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null | grep -q True && break
  sleep 0.2
done

say "starting the operator (log: $OUT/operator.log, metrics: http://127.0.0.1:18080/metrics)"
echo "  with Container mode's admission webhook on https://127.0.0.1:18443 (its own CA, in Secret sidecar-system/sidecar-operator-webhook-tls)"
$KUBECTL create namespace sidecar-system
target/debug/sidecar-operator run --kubeconfig "$OUT/kubeconfig" --metrics-addr 127.0.0.1:18080 \
  --webhook-addr 127.0.0.1:18443 --webhook-url https://127.0.0.1:18443 >"$OUT/operator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do
  operator_ready && \
    $KUBECTL get mutatingwebhookconfiguration sidecar-operator -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null | grep -q . && break
  if ! kill -0 "${PIDS[1]}" 2>/dev/null; then cat "$OUT/operator.log"; echo "the operator did not start" >&2; exit 1; fi
  sleep 0.5
done

say "applying the examples into namespace $NS"
$KUBECTL create namespace "$NS"
for _ in $(seq 1 100); do $KUBECTL -n "$NS" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
for f in examples/*.yaml; do $KUBECTL -n "$NS" apply -f "$f"; done

say "waiting for the sidecars (of the Pod-mode policies: Container mode injects at Pod creation)"
for _ in $(seq 1 60); do
  ready=$($KUBECTL -n "$NS" get sidecarpolicies -o jsonpath='{range .items[?(@.spec.mode=="Pod")]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}')
  case "$ready" in *False*|"") sleep 1 ;; *) break ;; esac
done

say "kubectl get pods -L sidecars.dev/policy   (sidecars are named <pod>-<policy>)"
$KUBECTL -n "$NS" get pods -o wide -L sidecars.dev/policy
say "kubectl get sidecarpolicies"
$KUBECTL -n "$NS" get sidecarpolicies
say "kubectl describe sidecarpolicy log-shipper (status)"
$KUBECTL -n "$NS" describe sidecarpolicy log-shipper | sed -n '/^Status:/,$p'
say "Container mode: the orders Pods carry otel-agent as a native sidecar (an init container with restartPolicy Always)"
$KUBECTL -n "$NS" get pods -l app=orders -o custom-columns='POD:.metadata.name,INIT CONTAINERS:.spec.initContainers[*].name,RESTART POLICY:.spec.initContainers[*].restartPolicy,CONTAINERS:.spec.containers[*].name,INJECTED:.metadata.annotations.sidecars\.dev/injected'

say "try it: delete a sidecar and watch it come back"
echo "  $KUBECTL -n $NS delete pod -l sidecars.dev/policy=log-shipper --wait=false"
echo "  $KUBECTL -n $NS get pods -w"
if [ "${DEMO_EXIT:-}" = 1 ] || [ "${CI:-}" = true ] || [ ! -t 0 ]; then
  exit 0
fi
say "running; press Ctrl-C to stop everything"
wait "${PIDS[0]}"
