#!/usr/bin/env bash
# Cache-hit GetMetrics next to tonic's grpc.health.v1.Health/Check on the same slo-scaler,
# with h2load (Debian's nghttp2-client): 8 connections x 16 streams, alternating runs.
#
#   bash scripts/h2load-bench.sh            # RUNS=5 REQUESTS=500000 by default
#   RUNS=9 REQUESTS=1000000 bash scripts/h2load-bench.sh
#
# The request bodies (gRPC-framed protobuf) come from the h2load bench
# (`--write-bodies`, benches/h2load.rs); the scaler is the release binary with its embedded store,
# fed once with spans of `h2load-svc`, so the GetMetrics h2load sends (p95 over 5 m) is a
# cache hit with a value. h2load only sees HTTP statuses; gRPC errors travel in trailers
# with HTTP 200, so the script also checks that every GetMetrics h2load sent was counted
# `code="ok"` by the scaler's own slo_scaler_grpc_requests_total, and makes one real-client
# call of each request first (`--probe`).
#
# Each run also sends the same GetMetrics to a bare tonic ExternalScaler (the h2load
# bench's `--serve-bare`: the same generated server, `wire` types and codec, a fixed answer,
# a worker per core as the scaler has): what decoding KEDA's request and writing an answer
# cost with no scaler behind them, beside what the scaler reaches.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
REQUESTS=${REQUESTS:-500000}
CONNECTIONS=${CONNECTIONS:-8}
STREAMS=${STREAMS:-16}
GRPC_PORT=${GRPC_PORT:-16000}
ADMIN_PORT=${ADMIN_PORT:-18080}
OTLP_GRPC_PORT=${OTLP_GRPC_PORT:-14317}
OTLP_HTTP_PORT=${OTLP_HTTP_PORT:-14318}
BARE_PORT=${BARE_PORT:-16001}

command -v h2load >/dev/null || {
  echo "h2load not found: apt-get install -y nghttp2-client" >&2
  exit 1
}

cargo build --release --bin slo-scaler
work=$(mktemp -d)
cargo bench --bench h2load -- --write-bodies "$work"

target/release/slo-scaler serve \
  --grpc-addr "127.0.0.1:$GRPC_PORT" --admin-addr "127.0.0.1:$ADMIN_PORT" \
  --otlp-grpc-addr "127.0.0.1:$OTLP_GRPC_PORT" --otlp-http-addr "127.0.0.1:$OTLP_HTTP_PORT" \
  >"$work/scaler.log" 2>&1 &
pid=$!
bare_bin=$(cargo bench --bench h2load --no-run --message-format=json 2>/dev/null |
  awk -F'"executable":"' 'NF > 1 && /"h2load"/ {split($2, a, "\""); print a[1]}' | tail -1)
"$bare_bin" --serve-bare "127.0.0.1:$BARE_PORT" >"$work/bare.log" 2>&1 &
bare_pid=$!
trap 'kill "$pid" "$bare_pid" 2>/dev/null; wait "$pid" "$bare_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null
curl -fsS -X POST -H 'content-type: application/x-protobuf' \
  --data-binary "@$work/spans.pb" "http://127.0.0.1:$OTLP_HTTP_PORT/v1/traces" >/dev/null
# One real-client call of each request: a value and SERVING, not an error served fast.
cargo bench --bench h2load -- --probe "127.0.0.1:$GRPC_PORT"
for _ in $(seq 100); do
  "$bare_bin" --probe "127.0.0.1:$BARE_PORT" >"$work/bare-probe.txt" 2>&1 && break
  sleep 0.1
done
echo "bare $(cat "$work/bare-probe.txt")"

ok_count() {
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" |
    awk '/^slo_scaler_grpc_requests_total\{method="GetMetrics",code="ok"\}/ {print $2}'
}

# Prints the req/s of one h2load run of PATH with BODY (to PORT, the scaler's by default);
# fails unless every request succeeded with HTTP 200.
run() {
  local path=$1 body=$2 port=${3:-$GRPC_PORT} out
  out=$(h2load -n "$REQUESTS" -c "$CONNECTIONS" -m "$STREAMS" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$body" "http://127.0.0.1:$port$path")
  local done2xx failed
  done2xx=$(awk '/^status codes:/ {print $3}' <<<"$out")
  failed=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
  if [[ "$done2xx" != "$REQUESTS" || "$failed" != "0" ]]; then
    echo "h2load $path: not every request answered 200:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '/^finished in/ {print $4}' <<<"$out"
}

echo "machine: $(nproc) x $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "load: $(uptime)"
echo "h2load -n $REQUESTS -c $CONNECTIONS -m $STREAMS, $RUNS alternating runs"
gm_all=() hc_all=() bare_all=() ratios=() bare_ratios=()
for i in $(seq "$RUNS"); do
  before=$(ok_count)
  gm=$(run /externalscaler.ExternalScaler/GetMetrics "$work/get_metrics.bin")
  after=$(ok_count)
  if [[ $((${after%.*} - ${before%.*})) != "$REQUESTS" ]]; then
    echo "GetMetrics: the scaler counted $((${after%.*} - ${before%.*})) ok of $REQUESTS" >&2
    exit 1
  fi
  hc=$(run /grpc.health.v1.Health/Check "$work/health_check.bin")
  bare=$(run /externalscaler.ExternalScaler/GetMetrics "$work/get_metrics.bin" "$BARE_PORT")
  ratio=$(awk -v a="$gm" -v b="$hc" 'BEGIN {printf "%.3f", a / b}')
  bare_ratio=$(awk -v a="$bare" -v b="$hc" 'BEGIN {printf "%.3f", a / b}')
  echo "run $i: GetMetrics $gm req/s, Health/Check $hc req/s, ratio $ratio;" \
    "bare GetMetrics $bare req/s, ratio to Health/Check $bare_ratio"
  gm_all+=("$gm") hc_all+=("$hc") bare_all+=("$bare") ratios+=("$ratio")
  bare_ratios+=("$bare_ratio")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
gm_med=$(median "${gm_all[@]}")
hc_med=$(median "${hc_all[@]}")
echo "median: GetMetrics $gm_med req/s, Health/Check $hc_med req/s," \
  "ratio $(awk -v a="$gm_med" -v b="$hc_med" 'BEGIN {printf "%.2f", a / b}')"
# Each run's pair is measured back to back, so its ratio is the least moved by a shared
# machine's drift; both figures are printed.
echo "median of the runs' ratios: $(median "${ratios[@]}")"
bare_med=$(median "${bare_all[@]}")
echo "bare: median GetMetrics $bare_med req/s, ratio to Health/Check" \
  "$(awk -v a="$bare_med" -v b="$hc_med" 'BEGIN {printf "%.2f", a / b}')," \
  "median of the runs' ratios $(median "${bare_ratios[@]}");" \
  "the scaler's GetMetrics / bare: $(awk -v a="$gm_med" -v b="$bare_med" 'BEGIN {printf "%.2f", a / b}')"
echo "load: $(uptime)"
