#!/usr/bin/env bash
# Builds or installs the real upstream parts of the real-pipeline tier from their
# registries (Go modules, PyPI, npm, Maven Central) at the versions in
# scripts/real/versions.env, each under target/real/ in a directory named after its
# versions: a second run with the same versions builds nothing (REAL_OUT_DIR puts them
# elsewhere, to time a build apart from the cached one). Installs Go, Node.js or Java when
# missing; a Go older than a module needs fetches the newer toolchain through the module
# proxy (GOTOOLCHAIN=auto). Go's module and build caches, npm's, pip's and Maven's local
# repository are reused (their defaults, or the caller's GOMODCACHE, GOCACHE, …).
#
#   bash scripts/real/build.sh   # prints each part's path (OTELCOL_BIN=…, …), also kept in
#                                # target/real/parts.env for the tests
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/scripts/real"
# shellcheck source=versions.env
. "$here/versions.env"
log() { printf '%s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
if ! command -v go >/dev/null; then
  log "installing Debian's golang-go package"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq golang-go >/dev/null
fi
# Where the parts go: target/real/ (the tests read target/real/parts.env); another
# directory only to time a build apart from the cached one.
out=${REAL_OUT_DIR:-$root/target/real}
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export GOFLAGS="${GOFLAGS:-} -trimpath"

# The Collector: our components main, the upstream modules pinned here.
col_dir="$out/otelcol-$COLLECTOR_CORE_VERSION-$COLLECTOR_CONTRIB_VERSION-$COLLECTOR_STABLE_VERSION"
col_bin="$col_dir/otelcol-real"
if [ ! -x "$col_bin" ] || ! cmp -s "$here/collector/main.go" "$col_dir/src/main.go"; then
  log "building the OpenTelemetry Collector (core $COLLECTOR_CORE_VERSION, contrib $COLLECTOR_CONTRIB_VERSION)"
  rm -rf "$col_dir"
  mkdir -p "$col_dir/src"
  cp "$here/collector/main.go" "$col_dir/src/main.go"
  (
    cd "$col_dir/src"
    go mod init slo-scaler.test/otelcol-real >/dev/null 2>&1
    core=go.opentelemetry.io/collector
    contrib=github.com/open-telemetry/opentelemetry-collector-contrib
    go get \
      "$core/otelcol@$COLLECTOR_CORE_VERSION" \
      "$core/receiver/otlpreceiver@$COLLECTOR_CORE_VERSION" \
      "$core/service@$COLLECTOR_CORE_VERSION" \
      "$core/processor/batchprocessor@$COLLECTOR_CORE_VERSION" \
      "$core/exporter/otlpexporter@$COLLECTOR_CORE_VERSION" \
      "$core/exporter/otlphttpexporter@$COLLECTOR_CORE_VERSION" \
      "$core/confmap@$COLLECTOR_STABLE_VERSION" \
      "$core/confmap/provider/fileprovider@$COLLECTOR_STABLE_VERSION" \
      "$core/confmap/provider/envprovider@$COLLECTOR_STABLE_VERSION" \
      "$contrib/connector/spanmetricsconnector@$COLLECTOR_CONTRIB_VERSION" \
      "$contrib/exporter/prometheusexporter@$COLLECTOR_CONTRIB_VERSION" >&2
    go mod tidy >&2
    # Tidy must not have moved a pinned module.
    for m in otelcol service receiver/otlpreceiver processor/batchprocessor exporter/otlpexporter exporter/otlphttpexporter; do
      grep -q "^	$core/$m $COLLECTOR_CORE_VERSION\$" go.mod || { log "go.mod lost $core/$m $COLLECTOR_CORE_VERSION"; exit 1; }
    done
    go build -o "$col_bin.tmp" . >&2
  )
  mv "$col_bin.tmp" "$col_bin"
fi

# Prometheus 3.x from its module (its cmd/prometheus; the web UI's assets are not
# embedded without the builtinassets tag, the HTTP API the tests use is all there).
# The tests scrape static_configs only, so the build leaves out every service-discovery
# provider (upstream's remove_all_sd tag, from 3.10): 122 s against 331 s from an empty
# build cache on the 2-core machine, and half the binary.
prom_dir="$out/prometheus-$PROMETHEUS_MODULE_VERSION-nosd"
prom_bin="$prom_dir/prometheus"
if [ ! -x "$prom_bin" ]; then
  log "building Prometheus from its module $PROMETHEUS_MODULE_VERSION (no service discovery)"
  rm -rf "$prom_dir.tmp"
  mkdir -p "$prom_dir.tmp"
  (cd "$prom_dir.tmp" && GOBIN="$prom_dir.tmp" go install -tags remove_all_sd "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" >&2)
  rm -rf "$prom_dir"
  mv "$prom_dir.tmp" "$prom_dir"
fi

# The seed services (scripts/real/seeds/): each language's instrumentation, installed
# from its registry into target/real/seed-<language>-<versions>/.
# Go: the api-gateway's SDK setup, built like the Collector.
seed_go_dir="$out/seed-go-$OTEL_GO_VERSION-$OTEL_GO_CONTRIB_VERSION"
if [ ! -x "$seed_go_dir/seed-go" ] || ! cmp -s "$here/seeds/go/main.go" "$seed_go_dir/src/main.go"; then
  log "building the Go seed (otel $OTEL_GO_VERSION, contrib $OTEL_GO_CONTRIB_VERSION)"
  rm -rf "$seed_go_dir"
  mkdir -p "$seed_go_dir/src"
  cp "$here/seeds/go/main.go" "$seed_go_dir/src/main.go"
  (
    cd "$seed_go_dir/src"
    go mod init slo-scaler.test/seed-go >/dev/null 2>&1
    go get \
      "go.opentelemetry.io/otel@$OTEL_GO_VERSION" \
      "go.opentelemetry.io/otel/sdk@$OTEL_GO_VERSION" \
      "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc@$OTEL_GO_VERSION" \
      "go.opentelemetry.io/otel/exporters/stdout/stdouttrace@$OTEL_GO_VERSION" \
      "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp@$OTEL_GO_CONTRIB_VERSION" >&2
    go mod tidy >&2
    go build -o "$seed_go_dir/seed-go.tmp" . >&2
  )
  mv "$seed_go_dir/seed-go.tmp" "$seed_go_dir/seed-go"
fi

# Python: a venv with the distro, the OTLP exporters and Flask's instrumentation.
seed_py_dir="$out/seed-python-$OTEL_PYTHON_VERSION-$OTEL_PYTHON_CONTRIB_VERSION-$FLASK_VERSION"
if [ ! -f "$seed_py_dir/installed" ]; then
  log "installing the Python seed (opentelemetry $OTEL_PYTHON_VERSION / $OTEL_PYTHON_CONTRIB_VERSION)"
  rm -rf "$seed_py_dir"
  python3 -m venv "$seed_py_dir/venv"
  "$seed_py_dir/venv/bin/pip" install -q --disable-pip-version-check \
    "opentelemetry-sdk==$OTEL_PYTHON_VERSION" \
    "opentelemetry-exporter-otlp==$OTEL_PYTHON_VERSION" \
    "opentelemetry-distro==$OTEL_PYTHON_CONTRIB_VERSION" \
    "opentelemetry-instrumentation-flask==$OTEL_PYTHON_CONTRIB_VERSION" \
    "flask==$FLASK_VERSION" >&2
  touch "$seed_py_dir/installed"
fi

# Node.js: the Node SDK, auto-instrumentations-node, the OTLP/HTTP JSON exporter, Express.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing Debian's nodejs and npm packages"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nodejs npm >/dev/null
fi
seed_node_dir="$out/seed-node-$OTEL_NODE_AUTO_VERSION-$OTEL_NODE_SDK_VERSION-$EXPRESS_VERSION"
if [ ! -f "$seed_node_dir/installed" ]; then
  log "installing the Node.js seed (auto-instrumentations-node $OTEL_NODE_AUTO_VERSION)"
  rm -rf "$seed_node_dir"
  mkdir -p "$seed_node_dir"
  npm install --prefix "$seed_node_dir" --no-audit --no-fund --silent \
    "@opentelemetry/auto-instrumentations-node@$OTEL_NODE_AUTO_VERSION" \
    "@opentelemetry/sdk-node@$OTEL_NODE_SDK_VERSION" \
    "@opentelemetry/exporter-trace-otlp-http@$OTEL_NODE_SDK_VERSION" \
    "express@$EXPRESS_VERSION" >&2
  touch "$seed_node_dir/installed"
fi

# Java: the agent jar from Maven Central (Maven's own local repository is the cache).
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  log "installing Debian's default-jdk-headless and maven packages"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq default-jdk-headless maven >/dev/null
fi
seed_java_dir="$out/seed-java-$OTEL_JAVAAGENT_VERSION"
if [ ! -f "$seed_java_dir/opentelemetry-javaagent.jar" ]; then
  log "fetching the OpenTelemetry Java agent $OTEL_JAVAAGENT_VERSION"
  mkdir -p "$seed_java_dir"
  mvn -q -B dependency:copy \
    "-Dartifact=io.opentelemetry.javaagent:opentelemetry-javaagent:$OTEL_JAVAAGENT_VERSION" \
    "-DoutputDirectory=$seed_java_dir" -Dmdep.stripVersion=true >&2
fi
# The server compiled ahead: the agent does not start under the JDK's source launcher.
if ! cmp -s "$here/seeds/java/Server.java" "$seed_java_dir/classes/Server.java"; then
  rm -rf "$seed_java_dir/classes"
  mkdir -p "$seed_java_dir/classes"
  javac -d "$seed_java_dir/classes" "$here/seeds/java/Server.java" >&2
  cp "$here/seeds/java/Server.java" "$seed_java_dir/classes/Server.java"
fi

{
  echo "OTELCOL_BIN=$col_bin"
  echo "PROMETHEUS3_BIN=$prom_bin"
  echo "SEED_GO_BIN=$seed_go_dir/seed-go"
  echo "SEED_PYTHON_VENV=$seed_py_dir/venv"
  echo "SEED_NODE_MODULES=$seed_node_dir/node_modules"
  echo "SEED_JAVA_AGENT=$seed_java_dir/opentelemetry-javaagent.jar"
  echo "SEED_JAVA_CLASSES=$seed_java_dir/classes"
} | tee "$out/parts.env"
