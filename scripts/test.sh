#!/usr/bin/env bash
# The test command: installs the real servers the tests need when missing (Debian's
# `prometheus`; moto's SQS server, Helm and schema validators in the venv .venv-test),
# then runs every check: formatting, clippy, a build of every target (benches too), unit
# and integration tests, and the deploy checks (chart, dashboard, alerts, examples, live scrape).
#
#   bash scripts/test.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi

step "real servers"
if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
  echo "installing Debian's prometheus package"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq prometheus >/dev/null
fi
/usr/bin/prometheus --version 2>&1 | head -n 1
MOTO_SERVER=$(bash scripts/install-moto.sh)
export MOTO_SERVER
echo "moto server: $MOTO_SERVER"

step "format and lint"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

step "build (every target, benches included)"
cargo build --all-targets

step "unit and integration tests"
cargo test --all-features -- --test-threads 4

step "deploy checks (chart, schemas, examples, promtool, live scrape)"
SLO_SCALER_BIN="$root/target/debug/slo-scaler" \
DEPLOY_CHECK_WORKLOAD="$root/target/debug/slo-scaler demo --attach --duration 6s --refresh 2s \
  --grpc-addr \$SLO_SCALER_TEST_GRPC_ADDR --otlp-grpc-addr \$SLO_SCALER_TEST_OTLP_GRPC_ADDR" \
  bash scripts/check-deploy.sh
