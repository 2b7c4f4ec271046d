"""The fan-out case live: the StatefulSet's args (otlp.fanOut, two replicas, no Prometheus) start
two real servers; spans go to each replica the way the NOTES' Collector snippet sends them (every
exporter endpoint is one replica, and a pipeline with several exporters hands every batch to each
of them: opentelemetry-collector `internal/fanoutconsumer/traces.go`, `ConsumeTraces` calls every
consumer); docs/triggers.md's first latency trigger (no `source`: the embedded store
is the default) answers the same p95 from every replica, and that p95 is the spans' own.

Spans travel as OTLP/HTTP JSON (`POST /v1/traces`, the OTLP JSON mapping: hex ids, nanosecond
timestamps as strings, `kind` 2 = SERVER).
"""

import json
import math
import os
import random
import subprocess
import time
import urllib.request

import yaml

import chart
import keda_client
import live

REPLICAS = 2
SPANS = 400
DURATION_S = 0.25  # every span lasts 250 ms, so any quantile is 0.25 s (DDSketch: within 1 %)


def spans_body(service, count, now_ns):
    spans = []
    for i in range(count):
        end = now_ns - i * 5_000_000  # one span every 5 ms, ending in the last two seconds
        spans.append({
            "traceId": "%032x" % random.getrandbits(128), "spanId": "%016x" % random.getrandbits(64),
            "name": "POST /orders", "kind": 2,
            "startTimeUnixNano": str(end - int(DURATION_S * 1e9)), "endTimeUnixNano": str(end),
            "status": {},
        })
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "deploy-check"}, "spans": spans}],
    }]}


def post(addr, body):
    req = urllib.request.Request(f"http://{addr}/v1/traces", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def run(report, binary, chart_dir, readme, work_dir):
    name = "live: otlp.fanOut — every replica answers the spans' p95 for docs/triggers.md's trigger"
    docs, notes = chart.render(chart_dir, {"otlp": {"fanOut": True}, "replicaCount": REPLICAS})
    args, env = chart.deployment_args(docs)
    so, trigger = readme["so"], readme["trigger"]
    meta = {k: str(v) for k, v in (trigger.get("metadata") or {}).items()}
    if "source" in meta or meta.get("signal") != "latency":
        report.fail(name, f"the check reads a latency trigger that names no source, got {meta}")
        return
    # The NOTES' exporters, in order; exporter i is replica i (<sts>-i.<svc>…).
    sts = chart.workloads(docs)[0]["metadata"]["name"]
    snippet = notes[notes.find("exporters:"):notes.find("Past one replica")]
    endpoints = sorted(e["endpoint"] for e in (yaml.safe_load(snippet).get("exporters") or {}).values())
    replica_of = {e: int(e.split(".", 1)[0][len(sts) + 1:]) for e in endpoints}
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SLO_SCALER_")}
    child_env.update(env)
    procs, addrs = [], []
    try:
        for i in range(REPLICAS):
            a, addr = live.rewrite_addrs(args)
            addrs.append(addr)
            log_path = os.path.join(work_dir, f"live-fanout-{i}.log")
            with open(log_path, "w") as log:
                procs.append(subprocess.Popen([binary, *a], env=child_env, stdout=log,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        for i, addr in enumerate(addrs):
            deadline = time.monotonic() + live.READY_WITHIN_S
            while live.get(f"http://{addr['--admin-addr']}/readyz")[0] != 200:
                if procs[i].poll() is not None or time.monotonic() > deadline:
                    report.fail(name, f"replica {i} did not become ready; log:\n"
                                f"{live.log_tail(os.path.join(work_dir, f'live-fanout-{i}.log'))}")
                    return
                time.sleep(0.2)
        body = spans_body(meta["service"], SPANS, time.time_ns())
        for endpoint in endpoints:
            post(addrs[replica_of[endpoint]]["--otlp-http-addr"], body)
        pb, pb_grpc = keda_client.stubs("proto", os.path.join(work_dir, "grpc"))
        values = []
        for i, addr in enumerate(addrs):
            _, v = keda_client.metric_value(pb, pb_grpc, addr["--grpc-addr"], so["metadata"]["name"],
                                            so["metadata"].get("namespace", "default"), meta)
            values.append(v)
        problems = [f"replica {i} answered {v}, want {DURATION_S} within 1 %"
                    for i, v in enumerate(values) if not math.isclose(v, DURATION_S, rel_tol=0.01)]
        report.check(name, problems, f"{len(endpoints)} exporters → replicas {sorted(replica_of.values())}, "
                                     f"values {', '.join(f'{v:.4f}' for v in values)} s")
    except Exception as e:  # gRPC and HTTP errors alike fail the check
        report.fail(name, f"{type(e).__name__}: {e}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(live.EXIT_WITHIN_S)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
