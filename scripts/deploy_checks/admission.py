"""The chart's ValidatingAdmissionPolicy, evaluated with cel-go (celpolicy/, the CEL options of
Kubernetes' base environment): it admits every ScaledObject the repository shows, reads
`signal` as the scaler does (trimmed, any case; `signalFromEnv` left to the scaler), and refuses
exactly the metricTypes a signal cannot work with. The cluster tier (tests/cluster) asks the
real kube-apiserver; this runs without one."""

import json
import os
import re
import subprocess

import chart
import examples

SCALER = examples.SCALER_ADDRESS
# The signal spellings to try: the scaler's names in other cases and with spaces around, and
# names it refuses.
SPELLINGS = ["latency", "Latency", "LATENCY", "errorRate", "errorrate", "ERRORRATE", " slo ", "SLO",
             "sloCapacity", "slocapacity", "rps", "RPS", "concurrency", "Concurrency",
             "queueDepth", "QueueDepth", "query", "Query", "p95latency", "latency95", "error-rate"]
# The signal names `slo-scaler` accepts (SignalKind::ALL; trigger::parse compares them ignoring
# ASCII case after trimming): run() confirms this against the binary when it has one.
SIGNALS = examples.SIGNALS


def canonical(spelling):
    """The signal the scaler reads for `spelling`, or None when it refuses it."""
    return next((s for s in SIGNALS if s.lower() == spelling.strip().lower()), None)


def build(work_dir):
    """Builds celpolicy; returns its path, or raises RuntimeError saying why not."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "celpolicy")
    out = os.path.abspath(os.path.join(work_dir, "celpolicy"))
    try:
        proc = subprocess.run(["go", "build", "-buildvcs=false", "-o", out, "."], cwd=src, capture_output=True,
                              text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"go build of {src}: {e}") from e
    if proc.returncode != 0:
        raise RuntimeError(f"go build of {src} failed:\n{proc.stderr.strip()}")
    return out


def evaluate(celpolicy, policy, objects):
    """[{"admitted", "messages", "error"}] for each object."""
    proc = subprocess.run([celpolicy], input=json.dumps({"policy": policy, "objects": objects}),
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    return json.loads(proc.stdout)


def scaled_object(metadata, metric_type=None):
    trigger = {"type": "external", "metadata": dict(metadata, scalerAddress=SCALER)}
    if metric_type is not None:
        trigger["metricType"] = metric_type
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "admission-check", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"name": "order-service"}, "triggers": [trigger]}}


def cases():
    """(what, ScaledObject, admitted?, words a refusal must contain)."""
    out = []
    for spelling in SPELLINGS:
        kind = canonical(spelling)
        for metric_type in ("Value", "AverageValue", None):
            so = scaled_object({"signal": spelling, "service": "order-service"}, metric_type)
            what = f"signal {spelling!r}, metricType {metric_type or '(KEDA default AverageValue)'}"
            if kind is None:
                out.append((what, so, False, ["known signal", spelling]))
                continue
            want = examples.METRIC_TYPE.get(kind)
            ok = want is None or (metric_type or "AverageValue") == want
            out.append((what, so, ok, [] if ok else [spelling, f"needs metricType: {want}"]))
    out.append(("signalFromEnv (the target's environment names the signal)",
                scaled_object({"signalFromEnv": "SCALE_SIGNAL", "service": "order-service"}, "Value"),
                True, []))
    out.append(("no signal", scaled_object({"service": "order-service"}, "Value"), False,
                ["known signal", "(none)"]))
    return out


def binary_spellings(report, binary):
    """The scaler accepts exactly the spellings canonical() accepts."""
    name = "admission: the binary reads the signal spellings as the checks expect"
    problems = []
    for spelling in SPELLINGS + ["", "  "]:
        out = subprocess.run([binary, "check", "-m", f"signal={spelling}"], capture_output=True,
                             text=True, timeout=60)
        text = out.stdout + out.stderr
        refused = re.search(r"(?:metadata: |; )signal: ", text) is not None
        if refused != (canonical(spelling) is None):
            problems.append(f"signal {spelling!r}: the binary {'refuses' if refused else 'accepts'} it, "
                            f"the checks expect {'a refusal' if canonical(spelling) is None else canonical(spelling)}: "
                            f"{text.strip()[:200]}")
    report.check(name, problems, f"{len(SPELLINGS) + 2} spellings")


def run(report, rendered, found, work_dir, binary=None):
    """`rendered`: chart.run's renders; `found`: [(path, ScaledObject or None, trigger)] of the
    docs and examples."""
    name = "admission policy: signal read as the scaler reads it, metricType refused as documented"
    docs = rendered.get("default values")
    policies = chart.by_kind(docs, "ValidatingAdmissionPolicy") if docs else []
    if len(policies) != 1:
        report.fail(name, f"want one ValidatingAdmissionPolicy in the default render, got {len(policies)}")
        return
    try:
        celpolicy = build(work_dir)
    except RuntimeError as e:
        report.fail(name, e)
        return
    listed = cases()
    shown = []
    for path, so, _ in found:
        if so is not None and all(s is not so for _, s in shown):
            shown.append((path, so))
    try:
        verdicts = evaluate(celpolicy, policies[0], [so for _, so, _, _ in listed] + [so for _, so in shown])
    except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
        report.fail(name, e)
        return
    problems = []
    for (what, _, admit, words), v in zip(listed, verdicts):
        if v.get("error"):
            problems.append(f"{what}: {v['error']}")
        elif v["admitted"] != admit:
            problems.append(f"{what}: {'admitted' if v['admitted'] else 'refused'}, want "
                            f"{'admitted' if admit else 'refused'} {v['messages'] or ''}")
        elif not admit:
            said = " ".join(v["messages"])
            problems += [f"{what}: the refusal does not say {w!r}: {said}" for w in words if w not in said]
    report.check(name, problems, f"{len(listed)} triggers")

    name = "admission policy admits every ScaledObject the docs and examples show"
    problems = [f"{path}: {so['metadata'].get('name')}: {v.get('error') or v['messages']}"
                for (path, so), v in zip(shown, verdicts[len(listed):])
                if v.get("error") or not v["admitted"]]
    if not shown:
        problems.append("no ScaledObject found in the docs or examples")
    report.check(name, problems, f"{len(shown)} ScaledObjects")
    if binary:
        binary_spellings(report, binary)
