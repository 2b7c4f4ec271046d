#!/usr/bin/env bash
# Checks deploy/: lints and renders the Helm chart, validates every manifest and example,
# runs promtool on the alert rules and dashboard queries, then (with SLO_SCALER_BIN) starts the
# real binary with the chart's default args and checks its scrape. Idempotent: the tools live
# in the venv .venv-test, created and filled on first use.
#
#   scripts/check-deploy.sh                # everything; fails without SLO_SCALER_BIN
#   scripts/check-deploy.sh --static-only  # skip the live part on purpose
#   scripts/check-deploy.sh --install-only # only fill the venv (the Rust tests use jsonpath-ng, botocore)
#   SLO_SCALER_BIN=target/debug/slo-scaler scripts/check-deploy.sh
#
# Environment: SHARED_DIR (default ../shared), SLO_SCALER_BIN, DEPLOY_CHECK_WORKLOAD, PROMTOOL.
# The live part also starts Debian's /usr/bin/prometheus (same package as promtool). Go (Debian's
# golang-go when missing) builds scripts/deploy_checks/celpolicy, which evaluates the chart's
# admission policy with cel-go.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=.venv-test
# The OTLP exporters (tests/tls sends spans over TLS with them), at the seeds' version.
otel_python=$(grep '^OTEL_PYTHON_VERSION=' scripts/real/versions.env | cut -d= -f2)
packages=(helm-python-sdk kubernetes-validate pyyaml jsonschema grpcio grpcio-tools jsonpath-ng botocore pytest
  "opentelemetry-sdk==$otel_python" "opentelemetry-exporter-otlp==$otel_python")

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import helm_python, kubernetes_validate, yaml, pytest, jsonschema, grpc, grpc_tools, jsonpath_ng, botocore, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
  echo "installing ${packages[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}"
fi

[ "${1:-}" = "--install-only" ] && exit 0

promtool=${PROMTOOL:-/usr/bin/promtool}
if [ ! -x "$promtool" ]; then
  echo "promtool missing: installing Debian's prometheus package"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq prometheus >/dev/null
fi
[ -x "$promtool" ] || { echo "error: $promtool not found after installing prometheus" >&2; exit 1; }
export PROMTOOL=$promtool
if ! command -v go >/dev/null; then
  echo "go missing: installing Debian's golang-go package"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq golang-go >/dev/null
fi
# No __pycache__ beside the scripts in the work tree.
export PYTHONDONTWRITEBYTECODE=1

exec "$venv/bin/python" scripts/deploy_checks/run.py "$@"
