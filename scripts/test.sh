#!/usr/bin/env bash
# The test command: installs the real servers the tests need when missing (Debian's
# `prometheus` and `chromium`, npm's `playwright-core`; moto's SQS server, Helm and schema
# validators in the venv .venv-test),
# then runs every check: formatting, clippy, the API docs' links, a build of every target
# (benches too), unit and integration tests, the deploy checks (chart, dashboard, alerts,
# examples, live scrape) and the cluster tier (the chart and examples on real Kubernetes,
# KEDA and Argo Rollouts).
#
#   bash scripts/test.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi

# Free disk first: a build that fills the disk fails mid-way with linker errors.
df -h "$root" | tail -n 1 | awk '{print "disk: " $4 " free of " $2}'

step "real servers"
if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
  echo "installing Debian's prometheus package"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq prometheus >/dev/null
fi
/usr/bin/prometheus --version 2>&1 | head -n 1
# The status page's browser test: Debian's chromium, driven by playwright-core from npm
# (installed into target/page-node, launched with /usr/bin/chromium).
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium package"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Debian's nodejs and npm packages"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nodejs npm >/dev/null
fi
# Go for the real-pipeline and cluster tiers' builds, here so that the two builds (one in the
# background) do not both run apt.
if ! command -v go >/dev/null; then
  echo "installing Debian's golang-go package"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq golang-go >/dev/null
fi
playwright_version=1.65.1
if [ "$(node -p "require('./target/page-node/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$playwright_version" ]; then
  echo "installing playwright-core $playwright_version into target/page-node"
  mkdir -p target/page-node
  npm install --prefix target/page-node --no-audit --no-fund --silent "playwright-core@$playwright_version"
fi
/usr/bin/chromium --version 2>/dev/null | head -n 1
MOTO_SERVER=$(bash scripts/install-moto.sh)
export MOTO_SERVER
echo "moto server: $MOTO_SERVER"
# The deploy checks' tools in the same venv; the canary analysis test runs the
# AnalysisTemplate's conditions with its jsonpath-ng.
bash scripts/check-deploy.sh --install-only
# The cluster tier's parts (scripts/real/versions.env: a control plane, kwok, KEDA and Argo
# Rollouts from their Go modules; cached in target/real/) build in the background, at a lower
# priority, while the steps below run; the tier waits for them. It runs the debug binary the
# other suites run (built below), so no release build waits at the end of a cold run.
mkdir -p target
cluster_bin="$root/target/debug/slo-scaler"
SLO_SCALER_BIN="$cluster_bin" nice -n 10 bash scripts/test-cluster.sh --build-only \
  >target/cluster-build.log 2>&1 &
cluster_build=$!
# The real-pipeline tier's parts (scripts/real/versions.env): a Collector and Prometheus
# 3.x built from their Go modules, the seed services' SDKs and agent; cached in target/real/.
bash scripts/test-real.sh --build-only

step "format and lint"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# The API docs: no broken links (private items included, as developers read them).
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --quiet

step "build (every target, benches included)"
cargo build --all-targets

step "unit and integration tests"
cargo test --all-features --no-fail-fast -- --test-threads 4

step "real-pipeline tier: the Prometheus suites against Prometheus 3.x"
bash scripts/test-real.sh --prometheus3

step "deploy checks (chart, schemas, examples, promtool, live scrape)"
# The demo sends spans: only where the install runs the receiver (the README's does not).
SLO_SCALER_BIN="$root/target/debug/slo-scaler" \
DEPLOY_CHECK_WORKLOAD="[ -z \"\$SLO_SCALER_TEST_OTLP_GRPC_ADDR\" ] || \
  $root/target/debug/slo-scaler demo --attach --duration 6s --refresh 2s \
  --grpc-addr \$SLO_SCALER_TEST_GRPC_ADDR --otlp-grpc-addr \$SLO_SCALER_TEST_OTLP_GRPC_ADDR \
  --admin-addr \$SLO_SCALER_TEST_ADMIN_ADDR" \
  bash scripts/check-deploy.sh

step "cluster tier: real Kubernetes, KEDA and Argo Rollouts (tests/cluster)"
if ! wait "$cluster_build"; then
  cat target/cluster-build.log
  echo "the cluster tier's build failed (target/cluster-build.log)" >&2
  exit 1
fi
SLO_SCALER_BIN="$cluster_bin" bash scripts/test-cluster.sh
