#!/usr/bin/env bash
# The real-pipeline tier: real upstream parts built from their registries at the
# versions pinned in scripts/real/versions.env (scripts/real/build.sh; outputs cached
# under target/real/), then the suites that run them:
#   - tests/collector: spans through a real OpenTelemetry Collector (default exporter
#     settings, fan-out to several replicas) into the embedded store;
#   - tests/seeds: the seed services' own instrumentation (Go SDK, Python
#     opentelemetry-instrument, Node.js auto-instrumentations, the Java agent) into it;
#   - tests/spanmetrics, tests/prometheus and tests/mesh against Debian's Prometheus 2.x and the
#     Prometheus 3.x built from its module (PROMETHEUS_BIN); tests/spanmetrics with
#     native-histogram ingestion off and on, classic and native (exponential) histograms.
#
#   bash scripts/test-real.sh                 # the whole tier
#   bash scripts/test-real.sh --build-only    # build (or find cached) parts, print their paths
#   bash scripts/test-real.sh --prometheus3   # the Prometheus suites against 3.x only
#                                             # (scripts/test.sh: its main run covers the rest)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { printf '\n==> %s\n' "$*"; }
mode=${1:-all}

step "real upstream parts (scripts/real/versions.env)"
parts=$(bash scripts/real/build.sh)
echo "$parts"
eval "$parts"
export OTELCOL_BIN PROMETHEUS3_BIN
"$OTELCOL_BIN" --version
"$PROMETHEUS3_BIN" --version 2>&1 | head -n 1
[ "$mode" = --build-only ] && exit 0

# Every step runs even after one fails (like the main run's --no-fail-fast); the tier
# fails at the end if any did.
failed=()
run() { "$@" || failed+=("$*"); }
prometheus_suites=(--no-fail-fast --test prometheus --test spanmetrics --test mesh)
if [ "$mode" = all ]; then
  step "the embedded store through a real Collector and the seeds' instrumentation"
  run cargo test --no-fail-fast --test collector --test seeds
  step "Prometheus suites against Debian's $(/usr/bin/prometheus --version 2>&1 | head -n 1)"
  run env PROMETHEUS_BIN=/usr/bin/prometheus cargo test "${prometheus_suites[@]}"
fi
step "Prometheus suites against Prometheus 3.x (module $(grep '^PROMETHEUS_MODULE_VERSION=' scripts/real/versions.env | cut -d= -f2))"
run env PROMETHEUS_BIN="$PROMETHEUS3_BIN" cargo test "${prometheus_suites[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "real-pipeline tier: failed: ${failed[*]}" >&2
  exit 1
fi
