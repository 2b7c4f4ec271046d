"""The live check: the container args the chart renders for the README's `helm install` line
start the real binary; docs/triggers.md's first latency trigger answers Prometheus' own value over gRPC; the
scrape holds every metric the dashboard and rules use.

The chart passes the four listen addresses as `--*-addr=0.0.0.0:PORT` args. They are rewritten
in place to free 127.0.0.1 ports (appending the flags again would be a duplicate-flag error,
and an env var loses to an arg), and each `--prometheus=NAME=URL` keeps its name, scheme and
path with the host replaced by a real local Prometheus; every other arg and literal env value
runs verbatim.
"""

import math
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import keda_client
import promlive

ADDR_FLAGS = {
    "--grpc-addr": "SLO_SCALER_TEST_GRPC_ADDR",
    "--admin-addr": "SLO_SCALER_TEST_ADMIN_ADDR",
    "--otlp-grpc-addr": "SLO_SCALER_TEST_OTLP_GRPC_ADDR",
    "--otlp-http-addr": "SLO_SCALER_TEST_OTLP_HTTP_ADDR",
}
READY_WITHIN_S = 20
WORKLOAD_WITHIN_S = 300
EXIT_WITHIN_S = 30
# Families the README's install cannot produce, and the test that sees them exported instead.
ONLY_WITH = {
    "slo_scaler_tls_reload_failing":
        "a listener with TLS (the README's install has none; tests/tls/reload.rs scrapes it)",
}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s")
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rewrite_addrs(args):
    """Returns (args with loopback addresses, {flag: address}); raises if a flag is missing."""
    out, addrs = [], {}
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in ADDR_FLAGS and "=" in arg:
            addrs[flag] = f"127.0.0.1:{free_port()}"
            arg = f"{flag}={addrs[flag]}"
        out.append(arg)
    wanted = set(ADDR_FLAGS)
    if "--no-otlp" in args:
        wanted -= {"--otlp-grpc-addr", "--otlp-http-addr"}
    missing = sorted(wanted - set(addrs))
    if missing:
        raise ValueError(f"the Deployment's args lack {', '.join(missing)} (as --flag=ADDR)")
    return out, addrs


def rewrite_prometheus(args, addr):
    """Points every `--prometheus=NAME=URL` at `addr` (host and port only); returns (args, names)."""
    out, names = [], []
    for arg in args:
        if arg.startswith("--prometheus="):
            name, url = arg[len("--prometheus="):].split("=", 1)
            parts = urllib.parse.urlsplit(url)
            arg = f"--prometheus={name}={urllib.parse.urlunsplit(parts._replace(netloc=addr))}"
            names.append(name)
        out.append(arg)
    return out, names


def canonical_latency_query(meta):
    """The p-quantile of a service's server spans in seconds, otel-spanmetrics' PromQL shape as
    docs/prometheus-conventions.md writes it (independent of the scaler's own query builder)."""
    q = meta.get("quantile", "p95")
    q = float(q[1:]) / 100 if q.startswith("p") else float(q)
    window = meta.get("window", "1m")
    service = meta["service"].replace("\\", "\\\\").replace('"', '\\"')
    return (f"histogram_quantile({q}, sum by (le) (rate(traces_span_metrics_duration_milliseconds_bucket"
            f'{{service_name="{service}",span_kind="SPAN_KIND_SERVER"}}[{window}]))) / 1000')


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError:
        return None, ""


def parse_scrape(text):
    """({sample names}, {family: type})."""
    samples, types = set(), {}
    for line in text.splitlines():
        m = TYPE_LINE.match(line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            samples.add(m.group(1))
    return samples, types


def resolve(name, samples, types):
    """How a used series name shows in a scrape: 'sampled', 'declared', or a problem text."""
    if name.endswith("_total"):
        family, want = name[: -len("_total")], {"counter"}
    elif name.endswith("_bucket"):
        family, want = name[: -len("_bucket")], {"histogram", "gaugehistogram"}
    elif name.endswith(("_count", "_sum")):
        family, want = name.rsplit("_", 1)[0], {"histogram", "summary", "gaugehistogram"}
    else:
        family, want = name, {"gauge", "unknown", "untyped", "info", "stateset"}
    # The 0.0.4 text format declares counters with their _total suffix.
    kind = types.get(family) or types.get(name)
    if kind is None:
        return "missing"
    if kind not in want:
        return f"declared as {kind}, used as {'/'.join(sorted(want))}"
    return "sampled" if name in samples else "declared"


def run(report, binary, args, env, used, work_dir, readme):
    """`readme`: {"so": docs/triggers.md's first ScaledObject with a latency trigger, "trigger": that trigger}."""
    try:
        args, addrs = rewrite_addrs(args)
    except ValueError as e:
        report.fail("live: README install args start the binary", e)
        return
    unexpanded = [a for a in args if "$(" in a]
    if unexpanded:
        report.fail("live: README install args start the binary",
                    f"args use env expansion the test cannot reproduce: {unexpanded}")
        return
    exporter = promlive.Exporter()
    try:
        prometheus = promlive.Prometheus(exporter.addr, work_dir)
    except RuntimeError as e:
        exporter.close()
        report.fail("live: a real Prometheus for docs/triggers.md's trigger", e)
        return
    args, prom_names = rewrite_prometheus(args, prometheus.addr)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SLO_SCALER_")}
    child_env.update(env)
    admin = f"http://{addrs['--admin-addr']}"
    log_path = os.path.join(work_dir, "live-server.log")
    print(f"      running: {binary} {' '.join(args)}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([binary, *args], env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        if started(report, proc, admin, log_path):
            readme_trigger(report, prometheus, addrs, readme, prom_names, work_dir, log_path)
            scrape_checks(report, admin, addrs, used)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                code = proc.wait(EXIT_WITHIN_S)
                report.ok("live: SIGTERM stops the server", f"exit code {code}")
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                report.fail("live: SIGTERM stops the server", f"still running after {EXIT_WITHIN_S} s")
        prometheus.close()
        exporter.close()


def readme_trigger(report, prometheus, addrs, readme, prom_names, work_dir, log_path):
    """docs/triggers.md's first latency trigger, sent over gRPC as KEDA sends it, answers Prometheus' value."""
    name = "live: docs/triggers.md's first latency trigger answers Prometheus' value over gRPC"
    so, trigger = readme["so"], readme["trigger"]
    meta = {k: str(v) for k, v in (trigger.get("metadata") or {}).items()}
    if not prom_names:
        report.fail(name, "the README's helm install configures no Prometheus backend")
        return
    if meta.get("signal") != "latency" or "source" in meta:
        report.fail(name, f"the check reads a latency trigger that names no source; docs/triggers.md's "
                          f"first trigger is {meta}")
        return
    expr = canonical_latency_query(meta)
    truth = prometheus.wait_for(expr, READY_WITHIN_S + 20)
    if truth is None:
        report.fail(name, f"Prometheus never answered {expr}; see {work_dir}/live-prometheus.log")
        return
    pb, pb_grpc = keda_client.stubs("proto", os.path.join(work_dir, "grpc"))
    try:
        (metric, target), value = keda_client.metric_value(
            pb, pb_grpc, addrs["--grpc-addr"], so["metadata"]["name"],
            so["metadata"].get("namespace", "default"), meta)
    except Exception as e:  # grpc.RpcError and unpacking errors alike fail the check
        report.fail(name, f"GetMetricSpec / GetMetrics failed: {e}; log:\n{log_tail(log_path)}")
        return
    after = prometheus.query(expr)
    problems = []
    if not (value > 0 and math.isfinite(value)):
        problems.append(f"GetMetrics answered {value}, Prometheus {truth}")
    elif not math.isclose(value, truth, rel_tol=1e-6):
        problems.append(f"GetMetrics answered {value}, Prometheus answers {truth} (then {after}) "
                        f"for {expr}")
    report.check(name, problems, f"{metric} = {value:.6f} s, Prometheus {truth:.6f} s, target "
                                 f"{target}; {meta.get('service')} p95 through "
                                 f"--prometheus {prom_names[0]}, no --default-source")


def started(report, proc, admin, log_path):
    deadline = time.monotonic() + READY_WITHIN_S
    status = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            report.fail("live: README install args start the binary",
                        f"the server exited with code {proc.returncode}; log:\n{log_tail(log_path)}")
            return False
        status, _ = get(f"{admin}/readyz")
        if status == 200:
            break
        time.sleep(0.2)
    if status != 200:
        report.fail("live: README install args start the binary",
                    f"/readyz answered {status} after {READY_WITHIN_S} s; log:\n{log_tail(log_path)}")
        return False
    report.ok("live: README install args start the binary", "/readyz 200")
    status, _ = get(f"{admin}/healthz")
    report.check("live: /healthz answers 200", [] if status == 200 else [f"/healthz answered {status}"])
    return True


def log_tail(path, lines=30):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def scrape_checks(report, admin, addrs, used):
    workload = os.environ.get("DEPLOY_CHECK_WORKLOAD", "").strip()
    if workload:
        wl_env = dict(os.environ, **{ADDR_FLAGS[f]: a for f, a in addrs.items()})
        try:
            done = subprocess.run(["bash", "-c", workload], env=wl_env, timeout=WORKLOAD_WITHIN_S)
            report.check("live: workload ran", [] if done.returncode == 0 else
                         [f"DEPLOY_CHECK_WORKLOAD exited with {done.returncode}"], workload)
        except subprocess.TimeoutExpired:
            report.fail("live: workload ran", f"DEPLOY_CHECK_WORKLOAD ran over {WORKLOAD_WITHIN_S} s")

    status, text = get(f"{admin}/metrics")
    if status != 200:
        report.fail("live: /metrics answers 200", f"/metrics answered {status}")
        return
    samples, types = parse_scrape(text)
    # ONLY_WITH's families are left to the test named there.
    results = {name: resolve(name, samples, types) for name in used if name not in ONLY_WITH}
    bad = [f"{n}: {r}" for n, r in sorted(results.items()) if r not in ("sampled", "declared")]
    declared = sorted(n for n, r in results.items() if r == "declared")
    if bad and not workload:
        # prometheus-client writes a labelled family only once it has a series.
        bad.append("labelled families appear only once traffic flows: set DEPLOY_CHECK_WORKLOAD "
                   "to a command that drives the server (see scripts/deploy_checks/run.py)")
    report.check("live: scrape declares every metric the dashboard and rules use", bad,
                 f"{len(results)} names, {len(results) - len(declared) - len(bad)} with samples")
    if workload:
        report.check("live: every used metric has samples after the workload",
                     [f"{n}: declared, no samples" for n in declared])
    elif declared:
        report.skip("live: samples of traffic-driven series",
                    "no workload ran (set DEPLOY_CHECK_WORKLOAD); declared but not yet sampled: "
                    + ", ".join(declared))
