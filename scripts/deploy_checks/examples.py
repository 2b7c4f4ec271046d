"""Example ScaledObjects: KEDA's CRD schema (unknown fields rejected) and the product's rules."""

import copy
import glob
import os

import jsonschema
import yaml

# Trigger metadata keys the scaler accepts (docs/trigger-metadata.md, whose table docs.py checks
# lists exactly these), plus KEDA's own keys it ignores. A flat list: which keys each signal and
# source take, the binary checks (`slo-scaler check` on every example trigger, run.py).
METADATA_KEYS = {
    "signal", "source", "threshold", "activationThreshold", "service", "spanKind", "quantile",
    "window", "convention", "labels", "backend", "query", "tenant", "version", "ignoreNullValues",
    "cacheTTL", "queueURL", "queueLength", "activationQueueLength", "awsRegion", "scaleOnInFlight",
    "scaleOnDelayed", "metricName", "scalerAddress", "enableTLS", "unsafeSsl",
    "latencyObjective", "errorRateObjective", "podConcurrency", "awsRoleArn", "awsEndpoint",
}
# The HPA metric type each signal needs (keda-external-scaler.md: intensive → Value).
METRIC_TYPE = {"latency": "Value", "errorRate": "Value", "rps": "AverageValue",
               "queueDepth": "AverageValue", "slo": "Value", "concurrency": "AverageValue",
               "sloCapacity": "AverageValue"}
SCALER_ADDRESS = "slo-scaler.keda.svc.cluster.local:6000"
# Every example's latency objective is the seed services' 300 ms (product.md); a latency
# trigger aims at 0.8 × it (docs/triggers.md, docs/simulation-results.md).
LATENCY_THRESHOLD = "240ms"
# Every signal (docs/trigger-metadata.md).
SIGNALS = ("latency", "errorRate", "rps", "concurrency", "queueDepth", "query", "slo", "sloCapacity")


def crd_schema(crd_file):
    with open(crd_file) as f:
        crd = yaml.safe_load(f)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return strict(version["schema"]["openAPIV3Schema"])


def strict(schema):
    """Rejects unknown fields where the API server would prune them (a typo in an example)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for value in node.values():
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

    walk(schema)
    # metadata is an ObjectMeta the CRD leaves open.
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def product_rules(doc, text):
    """What the docs promise about every example."""
    problems = []
    triggers = doc.get("spec", {}).get("triggers", [])
    for i, t in enumerate(triggers):
        where = f"trigger {i}"
        meta = t.get("metadata", {})
        if t.get("type") not in ("external", "external-push"):
            problems.append(f"{where}: type {t.get('type')}, want external or external-push")
        if meta.get("scalerAddress") != SCALER_ADDRESS:
            problems.append(f"{where}: scalerAddress {meta.get('scalerAddress')}, want {SCALER_ADDRESS}")
        unknown = sorted(set(meta) - METADATA_KEYS)
        if unknown:
            problems.append(f"{where}: unknown metadata keys {unknown}")
        want = METRIC_TYPE.get(meta.get("signal"))
        if want and t.get("metricType") != want:
            problems.append(f"{where}: signal {meta.get('signal')} needs metricType {want}, "
                            f"got {t.get('metricType')}")
        if meta.get("signal") == "latency" and meta.get("threshold") != LATENCY_THRESHOLD:
            problems.append(f"{where}: latency threshold {meta.get('threshold')}, want {LATENCY_THRESHOLD} "
                            "(0.8 × the 300 ms objective)")
    comments = [line for line in text.splitlines() if line.strip().startswith("#")]
    if any("KEDA's fallback" in line for line in comments) and "fallback" not in doc.get("spec", {}):
        problems.append("a comment counts on KEDA's fallback, but spec.fallback is missing")
    explained = sum(1 for line in comments if "metricType" in line)
    if explained < len(triggers):
        problems.append(f"{len(triggers)} triggers but {explained} comments explain a metricType")
    return problems


def triggers(examples_dir):
    """[(path, ScaledObject, trigger)] for every trigger of every ScaledObject under
    `examples_dir` (canary/ included), as docs.parsed_by_binary takes them."""
    found = []
    for path in sorted(glob.glob(os.path.join(examples_dir, "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict) and doc.get("kind") == "ScaledObject":
                    found += [(path, doc, t) for t in (doc.get("spec") or {}).get("triggers") or []]
    return found


def run(report, examples_dir, crd_file):
    if not os.path.isfile(crd_file):
        report.fail("KEDA ScaledObject CRD present",
                    f"{crd_file} is missing (set SHARED_DIR to the shared/ directory)")
        return
    validator = jsonschema.Draft7Validator(crd_schema(crd_file))
    files = sorted(glob.glob(os.path.join(examples_dir, "*.yaml")))
    if not files:
        report.fail("example ScaledObjects", f"no *.yaml in {examples_dir}")
        return
    seen_sources, seen_signals, seen_types, with_fallback = set(), set(), set(), 0
    for path in files:
        name = os.path.basename(path)
        with open(path) as f:
            text = f.read()
        docs = [d for d in yaml.safe_load_all(text) if d]
        problems = []
        for doc in docs:
            if (doc.get("apiVersion"), doc.get("kind")) != ("keda.sh/v1alpha1", "ScaledObject"):
                problems.append(f"{doc.get('apiVersion')} {doc.get('kind')} is not a keda.sh/v1alpha1 ScaledObject")
                continue
            problems += [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                         for e in validator.iter_errors(doc)]
            problems += product_rules(doc, text)
            with_fallback += "fallback" in doc["spec"]
            for t in doc["spec"].get("triggers", []):
                seen_types.add(t.get("type"))
                seen_sources.add(t.get("metadata", {}).get("source"))
                seen_signals.add(t.get("metadata", {}).get("signal"))
        report.check(f"example {name} valid", problems, "KEDA CRD schema, unknown fields rejected")
    coverage = [f"no example uses source {s}" for s in ("otlp", "prometheus", "tempo", "sqs")
                if s not in seen_sources]
    # product.md: "deploy/examples/: ScaledObjects for each signal".
    coverage += [f"no example uses signal {s}" for s in SIGNALS if s not in seen_signals]
    coverage += [] if "external-push" in seen_types else ["no example uses external-push"]
    coverage += [] if with_fallback else ["no example has a fallback block"]
    report.check("examples cover every signal, every source, external-push and fallback", coverage)
    readme_table(report, examples_dir)


def readme_table(report, examples_dir, readme_path=os.path.join("deploy", "README.md")):
    """deploy/README.md's table of examples: a row for every example ScaledObject file, each
    naming the source and metricType its trigger has."""
    name = f"{readme_path}: its examples table names each example's source and metricType"
    with open(readme_path) as f:
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in f.read().splitlines() if line.startswith("| `") and ".yaml`" in line]
    listed = {r[0].strip("`"): r for r in rows if len(r) == 4}
    problems = []
    files = sorted(glob.glob(os.path.join(examples_dir, "**", "*.yaml"), recursive=True))
    for path in files:
        rel = os.path.relpath(path, examples_dir)
        with open(path) as f:
            sos = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "ScaledObject"]
        if not sos:
            continue
        row = listed.pop(rel, None)
        if row is None:
            problems.append(f"{rel} has no row")
            continue
        triggers = [t for so in sos for t in so["spec"].get("triggers", [])]
        sources = {(t.get("metadata") or {}).get("source") or "default" for t in triggers}
        types = {t.get("metricType", "AverageValue") for t in triggers}
        if {row[2].split()[0]} != sources:
            problems.append(f"{rel}: the table says source {row[2]!r}, the file {sorted(sources)}")
        if {row[3]} != types:
            problems.append(f"{rel}: the table says metricType {row[3]!r}, the file {sorted(types)}")
    problems += [f"row {f} names no example ScaledObject file" for f in sorted(listed)]
    if not rows:
        problems.append(f"no examples table in {readme_path}")
    report.check(name, problems, f"{len(rows)} rows")
