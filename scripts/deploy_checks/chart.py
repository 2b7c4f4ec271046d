"""Chart checks: lint, render, values schema, Kubernetes schemas, and what the manifests promise."""

import copy
import re

import helm_python as helm
import kubernetes_validate
import yaml

RELEASE = "slo-scaler"
NAMESPACE = "keda"

# Kinds from CRDs that kubernetes-validate has no schema for, with the apiVersion the chart uses.
CRD_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "Certificate": "cert-manager.io/v1",
}

# Values with a typo that the schema must reject: (what, values).
MISSPELLED = [
    ("top-level key replicaCont", {"replicaCont": 3}),
    ("nested key serviceMonitor.enabeld", {"serviceMonitor": {"enabeld": True}}),
    ("backend key prometheus[0].bearerTokenSecrets",
     {"prometheus": [{"name": "default", "url": "http://p:9090", "bearerTokenSecrets": {"name": "x"}}]}),
    ("duration config.cacheTtl=10 seconds", {"config": {"cacheTtl": "10 seconds"}}),
    ("a header from a ConfigMap (secrets only, as files)",
     {"prometheus": [{"name": "default", "url": "http://p:9090", "headers": [
         {"name": "X-Key", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}]}),
    ("networkPolicy.kedaNamespace=Not_A_Namespace", {"networkPolicy": {"kedaNamespace": "Not_A_Namespace"}}),
]
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

# TLS on the OTLP ports, with its own Secret and a senders' CA, on one replica (the receiver runs).
OTLP_TLS_VALUES = {
    "replicaCount": 1,
    "tls": {"enabled": True, "existingSecret": "scaler-tls", "reloadInterval": "5m"},
    "otlp": {"tls": {"enabled": True, "existingSecret": "otlp-tls", "clientAuth": True,
                     "clientCa": {"configMap": "senders-ca", "key": "ca.pem"}}},
}


def render(chart_dir, values):
    """Renders the chart; returns {template path: list of manifests} and the NOTES text."""
    with helm.Chart.load(chart_dir) as chart:
        out = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs, notes = {}, ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        parsed = [d for d in yaml.safe_load_all(text) if d]
        if parsed:
            docs[path] = parsed
    return docs, notes


def lint(report, chart_dir, name, values):
    result = helm.lint(chart_dir, values, strict=False, namespace=NAMESPACE)
    errors = [m for m in result.get("messages", []) if m.get("severity") == 3]
    errors += [{"path": "", "error": e} for e in result.get("errors") or []]
    for m in result.get("messages", []):
        if m.get("severity") == 2:
            print(f"      lint warning ({name}): {m.get('path')}: {m.get('error')}")
    report.check(f"helm lint ({name})", [f"{m.get('path')}: {m.get('error')}" for m in errors])


def schema_rejects_typos(report, chart_dir):
    for what, values in MISSPELLED:
        try:
            render(chart_dir, values)
        except helm.HelmError as e:
            report.ok(f"values schema rejects {what}", str(e).splitlines()[-1].strip())
        else:
            report.fail(f"values schema rejects {what}", "the chart rendered with it")


def kube_validate(report, name, docs):
    version = kubernetes_validate.utils.latest_version()
    problems, skipped = [], set()
    for path, manifests in docs.items():
        for doc in manifests:
            kind = doc.get("kind")
            if kind in CRD_KINDS:
                skipped.add(kind)
                problems += crd_structure(doc)
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as e:  # the library raises several unrelated types
                at = ".".join(map(str, getattr(e, "absolute_path", []) or []))
                problems.append(f"{path}: {kind}/{doc.get('metadata', {}).get('name')}: "
                                f"{at + ': ' if at else ''}{getattr(e, 'message', e)}")
    detail = f"Kubernetes {version}, strict"
    if skipped:
        print(f"      {name}: no published JSON schema for {', '.join(sorted(skipped))} "
              "(CRDs); checked structurally instead")
    report.check(f"manifests valid ({name})", problems, detail)


def crd_structure(doc):
    """Structural checks of the CRD kinds the chart emits."""
    kind, name = doc["kind"], doc.get("metadata", {}).get("name")
    where = f"{kind}/{name}"
    problems = []
    if doc.get("apiVersion") != CRD_KINDS[kind]:
        problems.append(f"{where}: apiVersion {doc.get('apiVersion')}, want {CRD_KINDS[kind]}")
    spec = doc.get("spec") or {}
    if kind == "ServiceMonitor":
        eps = spec.get("endpoints") or []
        if not eps or not all(e.get("port") for e in eps):
            problems.append(f"{where}: every endpoint needs a port")
        if not (spec.get("selector") or {}).get("matchLabels"):
            problems.append(f"{where}: selector.matchLabels is empty")
    elif kind == "PrometheusRule":
        groups = spec.get("groups") or []
        if not groups or not all(g.get("name") and g.get("rules") for g in groups):
            problems.append(f"{where}: every group needs a name and rules")
        if set(spec) - {"groups"}:
            problems.append(f"{where}: unknown spec keys {sorted(set(spec) - {'groups'})}")
    elif kind == "Certificate":
        for key in ("secretName", "issuerRef", "dnsNames"):
            if not spec.get(key):
                problems.append(f"{where}: spec.{key} is missing")
        if not (spec.get("issuerRef") or {}).get("name"):
            problems.append(f"{where}: spec.issuerRef.name is missing")
    return problems


def by_kind(docs, kind):
    return [d for ms in docs.values() for d in ms if d.get("kind") == kind]


def workloads(docs):
    return [d for k in WORKLOAD_KINDS for d in by_kind(docs, k)]


def wiring(report, name, docs):
    """What the manifests must agree on: selectors, ports, volumes, probes, security."""
    problems = []
    deps = workloads(docs)
    if len(deps) != 1:
        report.fail(f"manifests wired together ({name})", f"want one Deployment or StatefulSet, got {len(deps)}")
        return
    dep = deps[0]
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]

    def selects(sel):
        return sel and all(pod_labels.get(k) == v for k, v in sel.items())

    if not selects(selector):
        problems.append(f"{dep['kind']} selector does not match its pod labels")
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for svc in by_kind(docs, "Service"):
        if not selects(svc["spec"].get("selector")):
            problems.append(f"Service {svc['metadata']['name']} does not select the pods")
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                problems.append(f"Service port {p['name']} targets unknown container port {p['targetPort']}")
    svc_ports = {p["name"] for s in by_kind(docs, "Service") for p in s["spec"]["ports"]}
    for sm in by_kind(docs, "ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in svc_ports:
                problems.append(f"ServiceMonitor scrapes unknown Service port {ep['port']}")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for d in by_kind(docs, kind):
            sel = (d["spec"].get("selector") or d["spec"].get("podSelector"))["matchLabels"]
            if not selects(sel):
                problems.append(f"{kind} does not select the pods")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") != "admin" or "admin" not in ports:
            problems.append(f"{probe} must GET {path} on the admin port, got {get}")
    volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
    for m in container.get("volumeMounts", []):
        if m["name"] not in volumes:
            problems.append(f"volumeMount {m['name']} has no volume")
        elif m["mountPath"] != "/tmp" and not m.get("readOnly"):
            problems.append(f"volumeMount {m['name']} is not read-only")
    problems += restricted(pod["spec"], container)
    report.check(f"manifests wired together ({name})", problems)


def restricted(pod_spec, container):
    """The Pod Security Standard "restricted" profile, plus a read-only root filesystem."""
    psc, csc = pod_spec.get("securityContext") or {}, container.get("securityContext") or {}
    problems = []
    if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not set")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("capabilities do not drop ALL")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"seccompProfile is {seccomp}, want RuntimeDefault")
    return problems


def deployment_args(docs):
    """The container's args and literal env of the rendered Deployment or StatefulSet."""
    (dep,) = workloads(docs)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return list(container.get("args", [])), env


def run(report, chart_dir, all_on_file):
    """Runs every chart check; returns the rendered manifests by values name."""
    with open(all_on_file) as f:
        all_on = yaml.safe_load(f)
    value_sets = {"default values": None, "all-on values": all_on,
                  "otlp-tls values": OTLP_TLS_VALUES}
    rendered = {}
    for name, values in value_sets.items():
        lint(report, chart_dir, name, copy.deepcopy(values))
        try:
            docs, notes = render(chart_dir, copy.deepcopy(values))
        except helm.HelmError as e:
            report.fail(f"helm render ({name})", e)
            continue
        kinds = sorted({d["kind"] for ms in docs.values() for d in ms})
        report.check(f"helm render ({name})", [] if notes.strip() else ["NOTES.txt is empty"],
                     ", ".join(kinds))
        rendered[name] = docs
        kube_validate(report, name, docs)
        wiring(report, name, docs)
    if "all-on values" in rendered:
        want = {"Deployment", "Service", "ServiceAccount", "ServiceMonitor", "PrometheusRule",
                "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "Certificate"}
        got = {d["kind"] for ms in rendered["all-on values"].values() for d in ms}
        report.check("all-on values turn every resource on",
                     [f"missing {k}" for k in sorted(want - got)])
    schema_rejects_typos(report, chart_dir)
    integer_flags(report, chart_dir)
    if "otlp-tls values" in rendered:
        otlp_tls(report, chart_dir, rendered["otlp-tls values"])
    return rendered


def integer_flags(report, chart_dir):
    """Integer values render as integers: Helm reads a values file's numbers as float64, and
    `%v` prints 1000000 as 1e+06, which the binary's integer flags refuse."""
    name = "integer values render as integer flags (otlp.maxSeries 1000000, every port)"
    values = {"otlp": {"maxSeries": 1000000},
              "ports": {"grpc": 60000, "admin": 60001, "otlpGrpc": 60002, "otlpHttp": 60003}}
    want = ["--otlp-max-series=1000000", "--grpc-addr=0.0.0.0:60000", "--admin-addr=0.0.0.0:60001",
            "--otlp-grpc-addr=0.0.0.0:60002", "--otlp-http-addr=0.0.0.0:60003"]
    try:
        docs, notes = render(chart_dir, values)
    except helm.HelmError as e:
        report.fail(name, e)
        return
    args, _ = deployment_args(docs)
    problems = [f"{w} missing from {args}" for w in want if w not in args]
    problems += [f"{a}: a number in exponent form" for a in args if re.search(r"\de\+\d", a)]
    report.check(name, problems)


def mounted_files(docs):
    """{flag: (volume kind, source name, key)} for every `--*-file=PATH` arg under a mount."""
    (dep,) = workloads(docs)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    found = {}
    for arg in container.get("args", []):
        flag, _, path = arg.partition("=")
        if not flag.endswith("-file") or not path.startswith("/"):
            continue
        directory, _, file = path.rpartition("/")
        volume = volumes.get(mounts.get(directory))
        if volume is None:
            found[flag] = None
            continue
        kind = "secret" if "secret" in volume else "configMap"
        source = volume[kind].get("secretName") or volume[kind].get("name")
        items = {i["path"]: i["key"] for i in volume[kind].get("items", [])}
        found[flag] = (kind, source, items.get(file, file))
    return found


def otlp_tls(report, chart_dir, docs):
    """otlp.tls: flags whose files come from the named Secret / ConfigMap, the reload interval,
    the certificate shared with the gRPC port by default, and the refused combinations."""
    name = "otlp.tls: OTLP certificate flags point into the mounted Secret and CA"
    files = mounted_files(docs)
    want = {
        "--tls-cert-file": ("secret", "scaler-tls", "tls.crt"),
        "--tls-key-file": ("secret", "scaler-tls", "tls.key"),
        "--otlp-tls-cert-file": ("secret", "otlp-tls", "tls.crt"),
        "--otlp-tls-key-file": ("secret", "otlp-tls", "tls.key"),
        "--otlp-tls-client-ca-file": ("configMap", "senders-ca", "ca.pem"),
    }
    problems = [f"{flag}: want {w}, got {files.get(flag)}" for flag, w in want.items()
                if files.get(flag) != w]
    args, _ = deployment_args(docs)
    if "--tls-reload-interval=5m" not in args:
        problems.append(f"--tls-reload-interval=5m missing from {args}")
    report.check(name, problems)

    name = "otlp.tls without its own Secret shares the gRPC port's certificate"
    try:
        shared, notes = render(chart_dir, {"replicaCount": 1,
                                           "tls": {"enabled": True, "existingSecret": "scaler-tls"},
                                           "otlp": {"tls": {"enabled": True, "clientAuth": True}}})
        files = mounted_files(shared)
        want = {
            "--otlp-tls-cert-file": ("secret", "scaler-tls", "tls.crt"),
            "--otlp-tls-key-file": ("secret", "scaler-tls", "tls.key"),
            "--otlp-tls-client-ca-file": ("secret", "scaler-tls", "ca.crt"),
        }
        problems = [f"{flag}: want {w}, got {files.get(flag)}" for flag, w in want.items()
                    if files.get(flag) != w]
        if "OTEL_EXPORTER_OTLP_CERTIFICATE" not in notes:
            problems.append("NOTES.txt does not tell senders to use TLS")
        report.check(name, problems)
    except helm.HelmError as e:
        report.fail(name, e)

    docs_tls(report, chart_dir)

    name = "otlp.tls with otlp.fanOut: the Certificate names the replicas, NOTES' exporters verify it"
    try:
        fan, notes = render(chart_dir, {
            "replicaCount": 2,
            "tls": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "ca"}}},
            "otlp": {"fanOut": True, "tls": {"enabled": True, "clientAuth": True}}})
        (cert,) = by_kind(fan, "Certificate")
        wildcard = f"*.{RELEASE}.{NAMESPACE}.svc.cluster.local"
        exporters = yaml.safe_load(notes[notes.find("exporters:"):notes.find("service:")])["exporters"]
        problems = [] if wildcard in cert["spec"]["dnsNames"] else [f"{wildcard} not in {cert['spec']['dnsNames']}"]
        problems += [f"{n}: {e}" for n, e in exporters.items()
                     if set(e.get("tls", {})) != {"ca_file", "cert_file", "key_file"}]
        report.check(name, problems, f"{len(exporters)} exporters")
    except helm.HelmError as e:
        report.fail(name, e)

    for what, values, must_say in [
        ("otlp.tls.enabled without a certificate",
         {"replicaCount": 1, "otlp": {"tls": {"enabled": True}}},
         ["otlp.tls.existingSecret", "tls.enabled"]),
        ("otlp.tls.clientAuth without otlp.tls.enabled",
         {"replicaCount": 1, "otlp": {"tls": {"clientAuth": True}}},
         ["otlp.tls.enabled"]),
    ]:
        name = f"chart refuses {what}"
        try:
            render(chart_dir, values)
            report.fail(name, "the chart rendered it")
        except helm.HelmError as e:
            missing = [w for w in must_say if w not in str(e)]
            report.check(name, [f"the error does not name {m}: {e}" for m in missing])


def docs_tls(report, chart_dir, path="docs/tls.md"):
    """docs/tls.md: its chart values render and validate; its exporter variables are the SDK's."""
    with open(path) as f:
        text = f.read()
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, re.S)
    values = [yaml.safe_load(b) for lang, b in blocks if lang == "yaml"]
    name = f"{path}: the chart values render (one replica) and validate"
    if len(values) != 1:
        report.fail(name, f"want one yaml block, found {len(values)}")
    else:
        try:
            docs, _ = render(chart_dir, dict(values[0], replicaCount=1))
            files = mounted_files(docs)
            problems = [f"{flag} is not under a mounted volume" for flag, v in files.items() if v is None]
            for flag in ("--otlp-tls-cert-file", "--otlp-tls-key-file", "--tls-reload-interval"):
                if not any(a.startswith(flag + "=") for a in deployment_args(docs)[0]):
                    problems.append(f"{flag} not rendered")
            report.check(name, problems)
            kube_validate(report, path, docs)
        except helm.HelmError as e:
            report.fail(name, e)
    # The variables the OpenTelemetry SDK reads (opentelemetry.sdk.environment_variables).
    from opentelemetry.sdk import environment_variables as sdk_env
    names = {n for lang, b in blocks if lang == "text" for n in re.findall(r"^(OTEL_[A-Z_]+)=", b, re.M)}
    report.check(f"{path}: exporter variables are the SDK's",
                 [f"{n} is not an OpenTelemetry SDK variable" for n in sorted(names)
                  if not hasattr(sdk_env, n)] + ([] if names else ["no OTEL_ variables found"]),
                 ", ".join(sorted(names)))
