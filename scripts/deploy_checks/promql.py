"""Alert rules and dashboard queries: promtool parses them; the metric names they use are listed."""

import json
import os
import re
import subprocess

import yaml

# Every metric the scaler exports (the brief's list); the dashboard may use no other.
EXPORTED = {
    "slo_scaler_signal_value", "slo_scaler_signal_threshold",
    "slo_scaler_signal_activation_threshold", "slo_scaler_signal_active",
    "slo_scaler_signal_age_seconds", "slo_scaler_grpc_requests_total",
    "slo_scaler_grpc_request_duration_seconds_bucket",
    "slo_scaler_grpc_request_duration_seconds_count",
    "slo_scaler_grpc_request_duration_seconds_sum", "slo_scaler_backend_requests_total",
    "slo_scaler_backend_request_duration_seconds_bucket",
    "slo_scaler_backend_request_duration_seconds_count",
    "slo_scaler_backend_request_duration_seconds_sum", "slo_scaler_cache_requests_total",
    "slo_scaler_otlp_spans_total", "slo_scaler_otlp_store_series",
    "slo_scaler_otlp_store_series_evicted_total", "slo_scaler_tempo_partial_responses_total",
    "slo_scaler_build_info", "slo_scaler_signal_state",
    "slo_scaler_cache_entries", "slo_scaler_cache_bytes", "slo_scaler_cache_evictions_total",
    "slo_scaler_tls_reload_failing",
}
METRIC = re.compile(r"\bslo_scaler_[a-zA-Z0-9_]+")
# Grafana variables and what stands in for them so promtool can parse the query.
VARIABLES = [
    (re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}"), "5m"),
    (re.compile(r"\$\{?(namespace|scaled_object)\}?"), ".*"),
]
VARIABLE_LEFT = re.compile(r"\$\{?[A-Za-z_]+")
LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\)$")


def promtool_test(promtool, test_file):
    proc = subprocess.run([promtool, "test", "rules", test_file], capture_output=True, text=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def alert_unit_test(promtool, alert, stem, test, work_dir):
    """Runs promtool's unit test `test` (rule_files filled in here) on `alert` alone, without
    its annotations: promtool compares them too, and these tests are about when it fires."""
    bare = {k: v for k, v in alert.items() if k != "annotations"}
    rules_file = os.path.join(work_dir, f"{stem}.rules.yaml")
    with open(rules_file, "w") as f:
        yaml.safe_dump({"groups": [{"name": "alert", "rules": [bare]}]}, f, sort_keys=False)
    test = dict({"rule_files": [os.path.abspath(rules_file)], "evaluation_interval": "1m"}, **test)
    test_file = os.path.join(work_dir, f"{stem}.test.yaml")
    with open(test_file, "w") as f:
        yaml.safe_dump(test, f, sort_keys=False)
    return promtool_test(promtool, test_file)


def state_tests(report, promtool, rules_spec, dash, work_dir):
    """promtool unit tests: SloScalerSignalNoData fires after its `for` on no_data or error only,
    and the dashboard's "Signal state" query maps ok / stale / no_data / error to 0 / 1 / 2 / 3."""
    rules = {r["alert"]: r for g in rules_spec["groups"] for r in g["rules"] if "alert" in r}
    alert = rules.get("SloScalerSignalNoData")
    if alert is None:
        report.fail("signal-state alert and panel behave (promtool test rules)",
                    "no SloScalerSignalNoData alert in the PrometheusRule")
        return
    panel_expr = None
    for p in dash.get("panels", []):
        if p.get("title") == "Signal state":
            panel_expr = substitute(p["targets"][0]["expr"])
    if panel_expr is None:
        report.fail("signal-state alert and panel behave (promtool test rules)",
                    "no \"Signal state\" panel in the dashboard")
        return
    job = re.search(r'job="([^"]+)"', alert["expr"])
    job = job.group(1) if job else "slo-scaler"

    def series(so, state, values, pod="a"):
        return {"series": f'slo_scaler_signal_state{{job="{job}",pod="{pod}",namespace="shop",'
                          f'scaled_object="{so}",metric="m",state="{state}"}}', "values": values}

    # One sample a minute for 10 minutes; each ScaledObject is in exactly one state at a time.
    timeline = {
        "nodata": {"ok": "0x10", "stale": "0x10", "no_data": "1x10", "error": "0x10"},
        "healthy": {"ok": "1x10", "stale": "0x10", "no_data": "0x10", "error": "0x10"},
        "stale": {"ok": "0x10", "stale": "1x10", "no_data": "0x10", "error": "0x10"},
        # error only from minute 7: not yet 5 minutes at minute 8.
        "late-error": {"ok": "1 1 1 1 1 1 1 0 0 0 0", "stale": "0x10", "no_data": "0x10",
                       "error": "0 0 0 0 0 0 0 1 1 1 1"},
        # no_data then error: one continuous problem, still firing.
        "flapping": {"ok": "0x10", "stale": "0x10", "no_data": "1 1 1 1 0 0 0 0 0 0 0",
                     "error": "0 0 0 0 1 1 1 1 1 1 1"},
    }
    inputs = [series(so, st, v) for so, states in timeline.items() for st, v in states.items()]
    # KEDA round-robins over the replicas, so each exports every ScaledObject it was asked
    # about: a second replica in the same state must not change the panel's value.
    inputs += [series(so, st, v, pod="b") for so in ("nodata", "stale")
               for st, v in timeline[so].items()]
    labels = dict(alert.get("labels") or {})

    def firing(so):
        return dict(labels, namespace="shop", scaled_object=so, metric="m")

    test = {
        "tests": [{
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "SloScalerSignalNoData", "exp_alerts": []},
                {"eval_time": "8m", "alertname": "SloScalerSignalNoData",
                 "exp_alerts": [{"exp_labels": firing("flapping")}, {"exp_labels": firing("nodata")}]},
            ],
            "promql_expr_test": [{
                "expr": panel_expr, "eval_time": "8m",
                "exp_samples": [
                    {"labels": f'{{namespace="shop",scaled_object="{so}",metric="m"}}', "value": v}
                    for so, v in (("nodata", 2), ("healthy", 0), ("stale", 1), ("late-error", 3),
                                  ("flapping", 3))],
            }],
        }],
    }
    ok, out = alert_unit_test(promtool, alert, "signal-state", test, work_dir)
    report.check("signal-state alert and panel behave (promtool test rules)", [] if ok else [out],
                 "alert after its for on no_data / error only; panel 0 ok, 1 stale, 2 no data, 3 error")


def active_test(report, promtool, dash, work_dir):
    """promtool unit test: the "Active ScaledObject metrics" stat counts each active metric once,
    however many replicas export it (KEDA round-robins, so every replica it asked does)."""
    name = "\"Active ScaledObject metrics\" counts each metric once over two replicas (promtool test rules)"
    exprs = [substitute(p["targets"][0]["expr"]) for p in dash.get("panels", [])
             if p.get("title") == "Active ScaledObject metrics"]
    if len(exprs) != 1:
        report.fail(name, f"want one \"Active ScaledObject metrics\" panel, found {len(exprs)}")
        return

    def series(pod, so, value):
        return {"series": f'slo_scaler_signal_active{{pod="{pod}",namespace="shop",scaled_object="{so}",'
                          f'metric="m"}}', "values": f"{value}x5"}

    # x active on both replicas, y on one, z inactive on both: 2 active metrics.
    inputs = [series("a", "x", 1), series("b", "x", 1), series("a", "y", 1),
              series("a", "z", 0), series("b", "z", 0)]
    test = {"evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": inputs,
        "promql_expr_test": [{"expr": exprs[0], "eval_time": "4m",
                              "exp_samples": [{"labels": "{}", "value": 2}]}]}]}
    test_file = os.path.join(work_dir, "active.test.yaml")
    with open(test_file, "w") as f:
        yaml.safe_dump(test, f, sort_keys=False)
    ok, out = promtool_test(promtool, test_file)
    report.check(name, [] if ok else [out], "x on both replicas, y on one, z inactive: 2")


def promtool_check(promtool, rules_file):
    proc = subprocess.run([promtool, "check", "rules", rules_file], capture_output=True, text=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def dashboard_queries(dash):
    """(where, PromQL) for every panel target and every query variable."""
    out = []

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = LABEL_VALUES.match(q or "")
        # label_values(selector, label) is Grafana's, not PromQL: check its selector.
        out.append((f"variable {v['name']}", m.group(1) if m and m.group(1) else q))
    return out


def substitute(expr):
    for pattern, value in VARIABLES:
        expr = pattern.sub(value, expr)
    return expr


def dashboard_shape(dash):
    problems = []
    names = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
    for want in ("datasource", "namespace", "scaled_object"):
        if want not in names:
            problems.append(f"template variable {want} is missing")
    ids = []

    def walk(items):
        for p in items:
            ids.append(p.get("id"))
            if p.get("type") != "row":
                uid = (p.get("datasource") or {}).get("uid")
                if uid != "${datasource}":
                    problems.append(f"panel {p.get('title')!r} datasource is {uid}, want ${{datasource}}")
                if not p.get("targets"):
                    problems.append(f"panel {p.get('title')!r} has no query")
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    return problems


def tls_reload_test(report, promtool, rules_spec, work_dir):
    """promtool unit test: SloScalerTlsReloadFailing fires after its `for` while a listener's
    reload keeps failing, names the pod and listener, and stays quiet once a reload succeeds."""
    name = "TLS reload alert fires on a failing listener only (promtool test rules)"
    rules = {r["alert"]: r for g in rules_spec["groups"] for r in g["rules"] if "alert" in r}
    alert = rules.get("SloScalerTlsReloadFailing")
    if alert is None:
        report.fail(name, "no SloScalerTlsReloadFailing alert in the PrometheusRule")
        return
    job = re.search(r'job="([^"]+)"', alert["expr"])
    job = job.group(1) if job else "slo-scaler"

    def series(pod, listener, values):
        return {"series": f'slo_scaler_tls_reload_failing{{job="{job}",pod="{pod}",listener="{listener}"}}',
                "values": values}

    inputs = [
        series("a", "grpc", "1x10"),                     # failing throughout
        series("a", "otlp-grpc", "0x10"),                # fine
        series("b", "grpc", "1 1 1 0 0 0 0 0 0 0 0"),    # a later reload succeeded
    ]
    labels = dict(alert.get("labels") or {})
    test = {
        "tests": [{
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "SloScalerTlsReloadFailing", "exp_alerts": []},
                {"eval_time": "9m", "alertname": "SloScalerTlsReloadFailing",
                 "exp_alerts": [{"exp_labels": dict(labels, pod="a", listener="grpc")}]},
            ],
        }],
    }
    ok, out = alert_unit_test(promtool, alert, "tls-reload", test, work_dir)
    report.check(name, [] if ok else [out], "fires after its for; not for a listener that recovered")


def run(report, dashboard_files, rendered, promtool, work_dir):
    """Returns the sorted slo_scaler_* names the dashboard and rules use, or None."""
    used = set()
    os.makedirs(work_dir, exist_ok=True)

    # The dashboard and its copy inside the chart must be identical.
    contents = []
    for path in dashboard_files:
        with open(path, "rb") as f:
            contents.append(f.read())
    report.check("dashboard copy in the chart is identical",
                 [] if len(set(contents)) == 1 else
                 [f"{dashboard_files[1]} differs from {dashboard_files[0]}: cp the first over the second"])
    dash = json.loads(contents[0])
    report.check("dashboard has its variables and datasource", dashboard_shape(dash))

    # PrometheusRule from the all-on render → a rules file for promtool.
    rules = [d for ms in (rendered.get("all-on values") or {}).values() for d in ms
             if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        report.fail("PrometheusRule rules pass promtool", f"want one PrometheusRule in the all-on render, got {len(rules)}")
    else:
        rules_file = os.path.join(work_dir, "prometheusrule.rules.yaml")
        with open(rules_file, "w") as f:
            yaml.safe_dump(rules[0]["spec"], f, sort_keys=False)
        ok, out = promtool_check(promtool, rules_file)
        n = sum(len(g["rules"]) for g in rules[0]["spec"]["groups"])
        report.check("PrometheusRule rules pass promtool", [] if ok else [out], f"{n} rules")
        for g in rules[0]["spec"]["groups"]:
            for r in g["rules"]:
                used.update(METRIC.findall(r["expr"]))
        state_tests(report, promtool, rules[0]["spec"], dash, work_dir)
        tls_reload_test(report, promtool, rules[0]["spec"], work_dir)
    active_test(report, promtool, dash, work_dir)

    # Every dashboard query as a recording rule, variables substituted.
    queries = dashboard_queries(dash)
    problems, records = [], []
    for i, (where, expr) in enumerate(queries):
        concrete = substitute(expr)
        left = VARIABLE_LEFT.findall(concrete)
        if left:
            problems.append(f"{where}: unknown template variable {left}")
        records.append({"record": f"dashboard:query_{i}", "expr": concrete})
        names = set(METRIC.findall(expr))
        if not names:
            problems.append(f"{where}: uses no slo_scaler_* metric: {expr}")
        for name in sorted(names - EXPORTED):
            problems.append(f"{where}: {name} is not a metric the scaler exports")
        used.update(names)
    dash_file = os.path.join(work_dir, "dashboard.rules.yaml")
    with open(dash_file, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}, f, sort_keys=False)
    ok, out = promtool_check(promtool, dash_file)
    if not ok:
        problems.append(out)
    report.check("dashboard queries parse (promtool)", problems, f"{len(queries)} queries")

    names_file = os.path.join(work_dir, "used-metrics.txt")
    with open(names_file, "w") as f:
        f.write("".join(n + "\n" for n in sorted(used)))
    print(f"      {len(used)} slo_scaler_* names used by the dashboard and rules: {names_file}")
    return sorted(used)
