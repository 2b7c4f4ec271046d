"""The live check: the Deployment's args from default values start the real binary, and its
scrape holds every metric the dashboard and rules use.

The chart passes the four listen addresses as `--*-addr=0.0.0.0:PORT` args. They are rewritten
in place to free 127.0.0.1 ports (appending the flags again would be a duplicate-flag error,
and an env var loses to an arg); every other arg and literal env value runs verbatim.
"""

import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

ADDR_FLAGS = {
    "--grpc-addr": "SLO_SCALER_TEST_GRPC_ADDR",
    "--admin-addr": "SLO_SCALER_TEST_ADMIN_ADDR",
    "--otlp-grpc-addr": "SLO_SCALER_TEST_OTLP_GRPC_ADDR",
    "--otlp-http-addr": "SLO_SCALER_TEST_OTLP_HTTP_ADDR",
}
READY_WITHIN_S = 20
WORKLOAD_WITHIN_S = 300
EXIT_WITHIN_S = 30
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
    missing = sorted(set(ADDR_FLAGS) - set(addrs))
    if missing:
        raise ValueError(f"the Deployment's args lack {', '.join(missing)} (as --flag=ADDR)")
    return out, addrs


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


def run(report, binary, args, env, used, work_dir):
    try:
        args, addrs = rewrite_addrs(args)
    except ValueError as e:
        report.fail("live: Deployment args start the binary", e)
        return
    unexpanded = [a for a in args if "$(" in a]
    if unexpanded:
        report.fail("live: Deployment args start the binary",
                    f"args use env expansion the test cannot reproduce: {unexpanded}")
        return
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SLO_SCALER_")}
    child_env.update(env)
    admin = f"http://{addrs['--admin-addr']}"
    log_path = os.path.join(work_dir, "live-server.log")
    print(f"      running: {binary} {' '.join(args)}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([binary, *args], env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        live_checks(report, proc, admin, addrs, used, log_path)
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


def log_tail(path, lines=30):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def live_checks(report, proc, admin, addrs, used, log_path):
    deadline = time.monotonic() + READY_WITHIN_S
    status = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            report.fail("live: Deployment args start the binary",
                        f"the server exited with code {proc.returncode}; log:\n{log_tail(log_path)}")
            return
        status, _ = get(f"{admin}/readyz")
        if status == 200:
            break
        time.sleep(0.2)
    if status != 200:
        report.fail("live: Deployment args start the binary",
                    f"/readyz answered {status} after {READY_WITHIN_S} s; log:\n{log_tail(log_path)}")
        return
    report.ok("live: Deployment args start the binary", "/readyz 200")
    status, _ = get(f"{admin}/healthz")
    report.check("live: /healthz answers 200", [] if status == 200 else [f"/healthz answered {status}"])

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
    results = {name: resolve(name, samples, types) for name in used}
    bad = [f"{n}: {r}" for n, r in sorted(results.items()) if r not in ("sampled", "declared")]
    declared = sorted(n for n, r in results.items() if r == "declared")
    if bad and not workload:
        # prometheus-client writes a labelled family only once it has a series.
        bad.append("labelled families appear only once traffic flows: set DEPLOY_CHECK_WORKLOAD "
                   "to a command that drives the server (see scripts/deploy_checks/run.py)")
    report.check("live: scrape declares every metric the dashboard and rules use", bad,
                 f"{len(used)} names, {len(used) - len(declared) - len(bad)} with samples")
    if workload:
        report.check("live: every used metric has samples after the workload",
                     [f"{n}: declared, no samples" for n in declared])
    elif declared:
        report.skip("live: samples of traffic-driven series",
                    "no workload ran (set DEPLOY_CHECK_WORKLOAD); declared but not yet sampled: "
                    + ", ".join(declared))
