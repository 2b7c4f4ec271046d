"""deploy/examples/canary/: Argo Rollouts objects against Argo's own CRDs (unknown fields
rejected), the ScaledObject against KEDA's, the Istio routes and Telemetry against the fields
Istio documents, the objects' references to each other, and each AnalysisTemplate's verdicts on
the analysis endpoint's answers (docs/canary-analysis.md)."""

import glob
import os
import re
import urllib.parse

import jsonschema
import yaml
from jsonpath_ng import parse as jsonpath_parse

import examples

ARGO = "argoproj.io/v1alpha1"
ARGO_CRDS = {"Rollout": "rollout-crd.yaml", "AnalysisTemplate": "analysis-template-crd.yaml"}
ANALYSIS_URL = "http://slo-scaler.keda.svc:8080/api/v1/analysis"
# docs/canary-analysis.md: the endpoint's parameters; the first three are required.
ANALYSIS_PARAMS = {"service", "canary", "baseline", "window", "source", "backend", "convention",
                   "spanKind", "quantile", "minCount", "labels"}
ANALYSIS_REQUIRED = {"service", "canary", "baseline"}

# Istio's documented fields (istio/api networking/v1alpha3/virtual_service.proto: VirtualService,
# HTTPRoute, HTTPMatchRequest, StringMatch, HTTPRouteDestination, Destination; and
# destination_rule.proto: DestinationRule, Subset), in their JSON (camelCase) names.
# None: a map or an object this check does not descend into.
STRING_MATCH = {"exact": None, "prefix": None, "regex": None}
DESTINATION = {"host": None, "subset": None, "port": None}
ISTIO = {
    "VirtualService": {
        "hosts": None, "gateways": None, "tls": None, "tcp": None, "exportTo": None,
        "http": [{
            "name": None, "redirect": None, "directResponse": None, "delegate": None,
            "rewrite": None, "timeout": None, "retries": None, "fault": None, "mirror": None,
            "mirrors": None, "mirrorPercent": None, "mirrorPercentage": None, "corsPolicy": None,
            "headers": None,
            "match": [{
                "name": None, "uri": STRING_MATCH, "scheme": STRING_MATCH, "method": STRING_MATCH,
                "authority": STRING_MATCH, "headers": {"*": STRING_MATCH}, "port": None,
                "sourceLabels": None, "gateways": None, "queryParams": {"*": STRING_MATCH},
                "ignoreUriCase": None, "withoutHeaders": {"*": STRING_MATCH},
                "sourceNamespace": None, "statPrefix": None,
            }],
            "route": [{"destination": DESTINATION, "weight": None, "headers": None}],
        }],
    },
    "DestinationRule": {
        "host": None, "trafficPolicy": None, "exportTo": None, "workloadSelector": None,
        "subsets": [{"name": None, "labels": None, "trafficPolicy": None}],
    },
}
# istio/api telemetry/v1/telemetry.proto: Telemetry, Metrics, ProviderRef, MetricsOverrides,
# MetricSelector, TagOverride (and type/v1beta1/selector.proto's WorkloadSelector).
ISTIO["Telemetry"] = {
    "selector": {"matchLabels": None}, "targetRef": None, "targetRefs": None, "tracing": None,
    "accessLogging": None,
    "metrics": [{
        "providers": [{"name": None}], "reportingInterval": None,
        "overrides": [{
            "match": {"metric": None, "customMetric": None, "mode": None},
            "disabled": None,
            "tagOverrides": {"*": {"operation": None, "value": None}},
        }],
    }],
}
ISTIO_METRICS = {"ALL_METRICS", "REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE",
                 "TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES",
                 "TCP_RECEIVED_BYTES", "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES"}
WORKLOAD_MODES = {"CLIENT_AND_SERVER", "CLIENT", "SERVER"}
NETWORKING_VERSIONS = {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"}
ISTIO_VERSIONS = {"VirtualService": NETWORKING_VERSIONS, "DestinationRule": NETWORKING_VERSIONS,
                  "Telemetry": {"telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"}}
# What istio-telemetry.yaml must write into `destination_version` for the Istio
# AnalysisTemplate to compare pod-template hashes: the pod's label, read from the proxy
# node's metadata (istio/proxy source/extensions/filters/http/istio_stats/istio_stats.cc).
HASH_EXPRESSION = "node.metadata['LABELS']['rollouts-pod-template-hash']"
# The scaler's OTLP ports and the exporter protocols each takes (docs/otlp.md).
OTLP_PROTOCOLS = {4317: {"grpc"}, 4318: {"http/protobuf", "http/json"}}


def crd_validator(path, version="v1alpha1"):
    with open(path) as f:
        crd = yaml.safe_load(f)
    (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = examples.strict(v["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def istio_fields(node, shape, at):
    """Unknown fields of an Istio object against the documented shape."""
    problems = []
    if isinstance(shape, list):
        if not isinstance(node, list):
            return [f"{at}: want a list"]
        for i, item in enumerate(node):
            problems += istio_fields(item, shape[0], f"{at}[{i}]")
        return problems
    if not isinstance(node, dict):
        return [f"{at}: want an object"]
    for key, value in node.items():
        if "*" in shape:
            problems += istio_fields(value, shape["*"], f"{at}.{key}")
        elif key not in shape:
            problems.append(f"{at}.{key}: not a field Istio documents")
        elif shape[key] is not None:
            problems += istio_fields(value, shape[key], f"{at}.{key}")
    if shape is STRING_MATCH and len(node) != 1:
        problems.append(f"{at}: a StringMatch holds exactly one of exact, prefix, regex")
    return problems


def load(examples_dir):
    docs = {}
    for path in sorted(glob.glob(os.path.join(examples_dir, "*.yaml"))):
        with open(path) as f:
            text = f.read()
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.setdefault(doc["kind"], []).append((os.path.basename(path), doc, text))
    return docs


def templates(docs):
    """Every AnalysisTemplate, by name."""
    return {doc["metadata"]["name"]: doc for _, doc, _ in docs.get("AnalysisTemplate", [])}


def one(docs, kind, problems):
    found = docs.get(kind, [])
    if len(found) != 1:
        problems.append(f"want one {kind}, found {len(found)}")
        return None
    return found[0][1]


def schemas(report, docs, argo_dir, keda_crd):
    for kind, crd_file in ARGO_CRDS.items():
        validator = crd_validator(os.path.join(argo_dir, crd_file))
        for file, doc, _ in docs.get(kind, []):
            problems = [] if doc.get("apiVersion") == ARGO else [f"apiVersion {doc.get('apiVersion')}, want {ARGO}"]
            problems += [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                         for e in validator.iter_errors(doc)]
            report.check(f"canary {file}: {kind} valid", problems,
                         f"Argo Rollouts CRD {crd_file}, unknown fields rejected")
    keda = jsonschema.Draft7Validator(examples.crd_schema(keda_crd))
    for file, doc, text in docs.get("ScaledObject", []):
        problems = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                    for e in keda.iter_errors(doc)]
        problems += examples.product_rules(doc, text)
        report.check(f"canary {file}: ScaledObject valid", problems, "KEDA CRD schema, unknown fields rejected")
    # Imported here: `verdict` (run against live answers by the Rust tests) needs only
    # jsonpath-ng and yaml.
    import kubernetes_validate

    version = kubernetes_validate.utils.latest_version()
    for file, doc, _ in docs.get("Service", []):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            report.ok(f"canary {file}: Service valid", f"Kubernetes {version}, strict")
        except Exception as e:  # the library raises several unrelated types
            report.fail(f"canary {file}: Service valid", getattr(e, "message", e))
    for kind, shape in ISTIO.items():
        for file, doc, _ in docs.get(kind, []):
            problems = [] if doc.get("apiVersion") in ISTIO_VERSIONS[kind] else [f"apiVersion {doc.get('apiVersion')}"]
            problems += [f"{k}: not a top-level field" for k in set(doc) - {"apiVersion", "kind", "metadata", "spec"}]
            problems += istio_fields(doc.get("spec") or {}, shape, "spec")
            if kind == "Telemetry":
                for i, m in enumerate((doc.get("spec") or {}).get("metrics", [])):
                    for j, o in enumerate(m.get("overrides", [])):
                        match = o.get("match") or {}
                        if match.get("metric", "ALL_METRICS") not in ISTIO_METRICS:
                            problems.append(f"spec.metrics[{i}].overrides[{j}].match.metric {match['metric']}")
                        if match.get("mode", "CLIENT_AND_SERVER") not in WORKLOAD_MODES:
                            problems.append(f"spec.metrics[{i}].overrides[{j}].match.mode {match['mode']}")
            source = ("istio/api telemetry/v1/telemetry.proto" if kind == "Telemetry" else
                      "istio/api networking/v1alpha3 virtual_service.proto / destination_rule.proto")
            report.check(f"canary {file}: {kind} fields", problems, source)


def wiring(report, docs):
    """The objects name each other correctly, and the Rollout does what docs/canary-analysis.md says."""
    problems = []
    ro = one(docs, "Rollout", problems)
    named = templates(docs)
    if not named:
        problems.append("no AnalysisTemplate")
    vs = one(docs, "VirtualService", problems)
    dr = one(docs, "DestinationRule", problems)
    so = one(docs, "ScaledObject", problems)
    if problems:
        report.fail("canary objects wired together", "\n".join(problems))
        return
    canary = ro["spec"]["strategy"]["canary"]
    istio = canary["trafficRouting"]["istio"]
    subsets = {istio["destinationRule"]["stableSubsetName"]: "stable",
               istio["destinationRule"]["canarySubsetName"]: "canary"}
    # Steps: weights 10 → 50 → 100, an analysis after each weight below 100.
    steps = canary.get("steps", [])
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    if weights != [10, 50, 100]:
        problems.append(f"setWeight steps {weights}, want [10, 50, 100]")
    for i, s in enumerate(steps):
        if s.get("setWeight", 100) < 100 and "analysis" not in (steps[i + 1] if i + 1 < len(steps) else {}):
            problems.append(f"no analysis step after setWeight {s['setWeight']}")
    # Each template takes the same args, so a step can name either.
    template_args = {a["name"] for a in next(iter(named.values()))["spec"].get("args", [])}
    for name, at in named.items():
        got = {a["name"] for a in at["spec"].get("args", [])}
        if got != template_args:
            problems.append(f"AnalysisTemplate {name} takes args {sorted(got)}, the others {sorted(template_args)}")
    for s in steps:
        if "analysis" not in s:
            continue
        names = [t.get("templateName") for t in s["analysis"].get("templates", [])]
        if len(names) != 1 or names[0] not in named:
            problems.append(f"analysis step uses templates {names}, want one of {sorted(named)}")
        args = {a["name"]: a for a in s["analysis"].get("args", [])}
        if set(args) != template_args:
            problems.append(f"analysis args {sorted(args)}, template wants {sorted(template_args)}")
        hashes = {n: (a.get("valueFrom") or {}).get("podTemplateHashValue") for n, a in args.items()}
        if hashes.get("canary-version") != "Latest" or hashes.get("baseline-version") != "Stable":
            problems.append(f"canary / baseline versions must be the Latest / Stable pod-template hashes, got {hashes}")
    # Pods report the pod-template hash as service.version (what the analysis compares).
    (container,) = ro["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    attrs = (env.get("OTEL_RESOURCE_ATTRIBUTES") or {}).get("value", "")
    m = re.search(r"service\.version=\$\((\w+)\)", attrs)
    field = (((env.get(m.group(1)) or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") if m else None
    if field != "metadata.labels['rollouts-pod-template-hash']":
        problems.append(f"service.version is not the pod-template hash (OTEL_RESOURCE_ATTRIBUTES={attrs!r})")
    # The exporter's protocol fits the port: OpenTelemetry's default is http/protobuf (Java agent
    # 2.x, Node), which 4317 (OTLP/gRPC) does not speak; 4318 takes http/protobuf or http/json.
    endpoint = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or {}).get("value", "")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or {}).get("value", "http/protobuf")
    port = urllib.parse.urlsplit(endpoint).port
    if port not in OTLP_PROTOCOLS:
        problems.append(f"OTLP endpoint {endpoint!r} is not on the scaler's port 4317 or 4318")
    elif protocol not in OTLP_PROTOCOLS[port]:
        problems.append(f"OTLP endpoint {endpoint} with protocol {protocol}: port {port} takes {sorted(OTLP_PROTOCOLS[port])}")
    # Istio: the Rollout's VirtualService, route and DestinationRule exist and carry both subsets.
    if istio["virtualService"]["name"] != vs["metadata"]["name"]:
        problems.append(f"Rollout names VirtualService {istio['virtualService']['name']}")
    if istio["destinationRule"]["name"] != dr["metadata"]["name"]:
        problems.append(f"Rollout names DestinationRule {istio['destinationRule']['name']}")
    if {s["name"] for s in dr["spec"]["subsets"]} != set(subsets):
        problems.append(f"DestinationRule subsets {[s['name'] for s in dr['spec']['subsets']]}, want {sorted(subsets)}")
    routes = {r.get("name"): r for r in vs["spec"]["http"]}
    for name in istio["virtualService"].get("routes", []):
        r = routes.get(name)
        if r is None:
            problems.append(f"VirtualService has no route {name}")
            continue
        got = {d["destination"].get("subset"): d.get("weight", 0) for d in r["route"]}
        if set(got) != set(subsets) or sum(got.values()) != 100:
            problems.append(f"weighted route {name}: {got}, want both subsets summing to 100")
    header_routes = [i for i, r in enumerate(vs["spec"]["http"])
                     if any("headers" in mt for mt in r.get("match", []))
                     and [d["destination"].get("subset") for d in r["route"]] ==
                     [istio["destinationRule"]["canarySubsetName"]]]
    weighted = [i for i, r in enumerate(vs["spec"]["http"]) if r.get("name") in istio["virtualService"].get("routes", [])]
    if not header_routes:
        problems.append("no header-matched route sends to the canary subset alone")
    elif weighted and header_routes[0] > min(weighted):
        problems.append("the header route comes after the weighted route (Istio uses the first match)")
    # KEDA scales the Rollout itself.
    ref = so["spec"]["scaleTargetRef"]
    if (ref.get("apiVersion"), ref.get("kind"), ref.get("name")) != (ARGO, "Rollout", ro["metadata"]["name"]):
        problems.append(f"ScaledObject scaleTargetRef {ref}, want {ARGO} Rollout {ro['metadata']['name']}")
    meta = so["spec"]["triggers"][0]["metadata"]
    if (meta.get("signal"), meta.get("quantile")) != ("latency", "p95"):
        problems.append(f"ScaledObject scales on {meta.get('signal')} {meta.get('quantile')}, want latency p95")
    report.check("canary objects wired together", problems,
                 "Rollout → AnalysisTemplate, VirtualService, DestinationRule; ScaledObject → Rollout")


def evaluate(condition, result):
    """An Argo Rollouts condition (antonmedv/expr syntax, as used here: `result.a.b`, `!`, `&&`,
    `||`, comparisons, parentheses) evaluated on `result`; raises on anything else."""
    if not re.fullmatch(r"[\w.!&|()<>=\s]+", condition):
        raise ValueError(f"condition uses syntax this check does not model: {condition}")

    class Obj(dict):
        def __getattr__(self, name):
            value = self[name]  # a missing field is an error, as in expr
            return Obj(value) if isinstance(value, dict) else value

    py = condition.replace("&&", " and ").replace("||", " or ")
    py = re.sub(r"!(?!=)", " not ", py)
    return bool(eval(py, {"__builtins__": {}}, {"result": Obj(result)}))  # noqa: S307 (own text)


def verdict(metric, answer):
    """Argo Rollouts' measurement phase for one answer: web provider's jsonPath, then
    EvaluateResult (utils/evaluate/evaluate.go) with both conditions set."""
    path = metric["provider"]["web"]["jsonPath"]
    m = re.fullmatch(r"\{(.*)\}", path)
    matches = jsonpath_parse(m.group(1) if m else path).find(answer)
    if not matches:
        return "Error"
    result = matches[0].value
    try:
        success = evaluate(metric["successCondition"], result)
        failure = evaluate(metric["failureCondition"], result)
    except (KeyError, TypeError) as e:
        return f"Error ({e!r})"
    if failure:
        return "Failed"
    if not success:
        return "Inconclusive"
    return "Successful"


def answer(canary_err, delta_latency, inconclusive=False, baseline_latency=0.198):
    """An analysis answer in docs/canary-analysis.md's shape."""
    return {"service": "payment-service", "window": "2m", "quantile": 0.95,
            "canary": {"version": "6d5f7c9b8", "count": 1204, "rps": 10.0, "errorRate": canary_err,
                       "latency": baseline_latency + delta_latency},
            "baseline": {"version": "7c8d9e0f1", "count": 9630, "rps": 80.3, "errorRate": 0.002,
                         "latency": baseline_latency},
            "delta": {"errorRate": canary_err - 0.002, "latency": delta_latency},
            "inconclusive": inconclusive}


def istio_versions(docs, problems):
    """The Istio template compares pod-template hashes (the Rollout's args): a Telemetry object
    must have the Rollout's pods write their hash into `destination_version`."""
    ro = (docs.get("Rollout") or [(None, {}, None)])[0][1]
    pod_labels = ((ro.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels", {})
    for _, t, _ in docs.get("Telemetry", []):
        selector = ((t.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            continue
        for m in t["spec"].get("metrics", []):
            for o in m.get("overrides", []):
                match = o.get("match") or {}
                tag = (o.get("tagOverrides") or {}).get("destination_version") or {}
                if (match.get("metric", "ALL_METRICS") == "ALL_METRICS"
                        and match.get("mode", "CLIENT_AND_SERVER") in ("SERVER", "CLIENT_AND_SERVER")
                        and tag.get("operation", "UPSERT") == "UPSERT"
                        and tag.get("value") == HASH_EXPRESSION):
                    return
    problems.append("no Telemetry selecting the Rollout's pods sets destination_version to "
                    f"{HASH_EXPRESSION} for every server-side metric")


def analysis(report, docs):
    named = templates(docs)
    if not named:
        report.fail("canary AnalysisTemplate judges the rule", "no AnalysisTemplate")
        return
    for name, at in sorted(named.items()):
        analysis_one(report, docs, name, at)


def analysis_one(report, docs, name, at):
    problems = []
    (metric,) = at["spec"]["metrics"]
    web = metric["provider"]["web"]
    url = urllib.parse.urlsplit(web["url"])
    base = f"{url.scheme}://{url.netloc}{url.path}"
    if base != ANALYSIS_URL:
        problems.append(f"web url {base}, want {ANALYSIS_URL}")
    params = dict(urllib.parse.parse_qsl(url.query))
    if set(params) - ANALYSIS_PARAMS:
        problems.append(f"parameters the endpoint does not take: {sorted(set(params) - ANALYSIS_PARAMS)}")
    if ANALYSIS_REQUIRED - set(params):
        problems.append(f"required parameters missing: {sorted(ANALYSIS_REQUIRED - set(params))}")
    for p, arg in (("canary", "canary-version"), ("baseline", "baseline-version")):
        if params.get(p) != f"{{{{args.{arg}}}}}":
            problems.append(f"{p}={params.get(p)}, want {{{{args.{arg}}}}}")
    if "source" not in params:
        # The install's default source would decide, and an install with a Prometheus defaults
        # to it while the example's pods send their spans to the scaler (the cluster tier's
        # analysis answered 503 from the Prometheus it did not have).
        problems.append("no source parameter: the install's default source would pick what the analysis reads")
    if params.get("convention") == "istio":
        if params.get("source") != "prometheus":
            problems.append(f"convention=istio reads Prometheus: source={params.get('source')}")
        istio_versions(docs, problems)
    cases = [
        ("a healthy canary", answer(0.01, 0.05), "Successful"),
        ("error rate exactly 3 %", answer(0.03, 0.0), "Successful"),
        ("error rate 4.1 % (docs/canary-analysis.md's example)", answer(0.041, 0.214), "Failed"),
        ("error rate 3.1 %, latency equal", answer(0.031, 0.0), "Failed"),
        ("p95 201 ms above baseline", answer(0.0, 0.201), "Failed"),
        ("p95 200 ms above baseline", answer(0.0, 0.2), "Successful"),
        ("faster canary", answer(0.0, -0.05), "Successful"),
        ("too few spans, numbers look fine", answer(0.0, 0.0, inconclusive=True), "Inconclusive"),
        ("too few spans, numbers look bad", answer(0.5, 1.0, inconclusive=True), "Inconclusive"),
    ]
    for what, body, want in cases:
        got = verdict(metric, body)
        if got != want:
            problems.append(f"{what}: {got}, want {want}")
    # analysis/analysis.go assessMetricStatus: without consecutiveSuccessLimit a run of only
    # inconclusive measurements below inconclusiveLimit passes once `count` is reached.
    csl = int(metric.get("consecutiveSuccessLimit", 0))
    if csl < 1:
        problems.append("consecutiveSuccessLimit is unset: inconclusive measurements could pass at count")
    if int(metric.get("failureLimit", 0)) != 0:
        problems.append(f"failureLimit {metric.get('failureLimit')}: one failed measurement must fail")
    if "inconclusiveLimit" in metric and int(metric.get("count", 0)) <= csl:
        problems.append("count leaves no room for inconclusive measurements before the successes")
    report.check(f"canary AnalysisTemplate {name} judges the rule", problems,
                 f"{len(cases)} answers: fail on error rate > 3 % or delta.latency > 0.2 s; "
                 "inconclusive never passes")


def run(report, examples_dir, shared, keda_crd):
    argo_dir = os.path.join(shared, "data", "argo-rollouts")
    if not os.path.isdir(argo_dir) or not os.path.isfile(keda_crd):
        report.fail("canary examples", f"{argo_dir} or {keda_crd} is missing (set SHARED_DIR)")
        return
    docs = load(examples_dir)
    if not docs:
        report.fail("canary examples", f"no *.yaml in {examples_dir}")
        return
    schemas(report, docs, argo_dir, keda_crd)
    wiring(report, docs)
    analysis(report, docs)


def main(argv):
    """`canary.py verdict EXAMPLES_DIR TEMPLATE < answer.json`: the measurement phase Argo
    Rollouts would give a live answer of the endpoint under the example AnalysisTemplate named
    TEMPLATE (printed)."""
    import json
    import sys
    if len(argv) != 4 or argv[1] != "verdict":
        print("usage: canary.py verdict EXAMPLES_DIR TEMPLATE < answer.json", file=sys.stderr)
        return 2
    at = templates(load(argv[2])).get(argv[3])
    if at is None:
        print(f"no AnalysisTemplate {argv[3]} in {argv[2]}", file=sys.stderr)
        return 1
    (metric,) = at["spec"]["metrics"]
    print(verdict(metric, json.load(sys.stdin)))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv))
