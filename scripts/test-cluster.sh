#!/usr/bin/env bash
# The cluster tier: a real control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) with kwok's simulated nodes, KEDA's operator and metrics adapter, Argo
# Rollouts' controller and the release slo-scaler, all built from their modules
# (scripts/real/build-cluster.sh, versions in scripts/real/versions.env), and the tests in
# tests/cluster/ that apply the repository's chart and examples to it.
#
# The parts run inside a network namespace made for this run, with one address of its own
# (kube-apiserver's aggregator does not proxy to a 127.0.0.0/8 endpoint) and its own /etc/hosts naming the
# Services the manifests dial. Needs root (or sudo) for `ip netns`.
#
#   bash scripts/test-cluster.sh               # build what is missing, run the tier
#   bash scripts/test-cluster.sh --build-only  # build only
#   bash scripts/test-cluster.sh -k admission  # extra arguments go to pytest
#
# SLO_SCALER_BIN names the slo-scaler binary to run (scripts/test.sh: the debug build its
# other suites ran); unset, the release build, built here when missing or stale.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { printf '\n==> %s\n' "$*"; }
if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi

step "cluster parts (scripts/real/versions.env)"
bash scripts/real/build-cluster.sh
if [ -z "${SLO_SCALER_BIN:-}" ]; then
  SLO_SCALER_BIN="$root/target/release/slo-scaler"
  if [ ! -x "$SLO_SCALER_BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock build.rs proto -newer "$SLO_SCALER_BIN" -print -quit)" ]; then
    cargo build --release --locked
  fi
fi
bash scripts/check-deploy.sh --install-only >/dev/null
bash scripts/install-moto.sh >/dev/null
[ "${1:-}" = --build-only ] && exit 0
[ -x "$SLO_SCALER_BIN" ] || { echo "SLO_SCALER_BIN=$SLO_SCALER_BIN is not an executable file" >&2; exit 1; }

if ! command -v ip >/dev/null || ! command -v openssl >/dev/null; then
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq iproute2 openssl >/dev/null
fi

# One network namespace per run; `ip netns exec` mounts /etc/netns/$ns/hosts over /etc/hosts.
ns="slo-scaler-tier-$$"
host_ip=172.30.0.1
services=(
  slo-scaler.keda.svc.cluster.local slo-scaler.keda.svc slo-scaler.keda
  keda-operator.keda.svc.cluster.local keda-operator.keda.svc keda-operator.keda
  keda-metrics-apiserver.keda.svc.cluster.local keda-metrics-apiserver.keda.svc
  kubernetes.default.svc.cluster.local kubernetes.default.svc
  moto.aws.svc.cluster.local
)
cleanup() {
  "${sudo[@]}" ip netns pids "$ns" 2>/dev/null | xargs -r "${sudo[@]}" kill -9 2>/dev/null || true
  "${sudo[@]}" ip netns delete "$ns" 2>/dev/null || true
  "${sudo[@]}" rm -rf "/etc/netns/$ns"
}
trap cleanup EXIT
"${sudo[@]}" ip netns add "$ns"
"${sudo[@]}" ip -n "$ns" link set lo up
# The address on the namespace's own loopback device (no dummy or veth driver needed): it is
# not in 127.0.0.0/8, which is what the aggregator refuses.
"${sudo[@]}" ip -n "$ns" addr add "$host_ip/32" dev lo
"${sudo[@]}" mkdir -p "/etc/netns/$ns"
{
  echo "127.0.0.1 localhost"
  echo "$host_ip ${services[*]}"
} | "${sudo[@]}" tee "/etc/netns/$ns/hosts" >/dev/null

step "the cluster tier (tests/cluster)"
status=0
"${sudo[@]}" ip netns exec "$ns" env CLUSTER_HOST_IP="$host_ip" SLO_SCALER_BIN="$SLO_SCALER_BIN" PYTHONDONTWRITEBYTECODE=1 \
  "$root/.venv-test/bin/python" -m pytest -p no:cacheprovider -v -s tests/cluster "$@" || status=$?
if [ "$status" -ne 0 ]; then
  # Every process's log stays in target/cluster-tier/logs/ until the next run.
  for log in target/cluster-tier/logs/*.log; do
    printf '\n--- %s (last 20 lines) ---\n' "$log"
    tail -n 20 "$log"
  done
fi
exit "$status"
