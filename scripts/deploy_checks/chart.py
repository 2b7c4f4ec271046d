"""Chart checks: lint, render, values schema, Kubernetes schemas, and what the manifests promise."""

import copy

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
    value_sets = {"default values": None, "all-on values": all_on}
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
    return rendered
