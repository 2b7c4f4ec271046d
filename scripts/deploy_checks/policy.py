"""What the chart's defaults promise: the default source follows what is configured, replicas and
the embedded store go together, the NetworkPolicy admits exactly its callers, secrets stay out
of the container's args and env, and a namespace policy needs authenticated callers."""

import copy
import os

import helm_python as helm
import yaml

import chart
import readme

PROM = [{"name": "default", "url": "http://prometheus-operated.monitoring.svc:9090"}]


def render_or_error(chart_dir, values):
    """(docs, notes, None) or (None, None, error text)."""
    try:
        docs, notes = chart.render(chart_dir, copy.deepcopy(values))
        return docs, notes, None
    except helm.HelmError as e:
        return None, None, str(e)


def container(docs):
    (w,) = chart.workloads(docs)
    (c,) = w["spec"]["template"]["spec"]["containers"]
    return w, c


def flag_values(args, flag):
    return [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")] + \
        [a for a in args if a == flag]


def source_and_replicas(report, chart_dir, readme_values):
    """Issue 9 items 3 and 9: what a user following the README (or the defaults) gets."""
    cases = [
        # (what, values, want kind, want replicas, want --default-source values)
        ("default values: embedded store, one replica", None, "Deployment", 1, []),
        ("the README's helm install: prometheus, flag left out", readme_values, "Deployment", 2, []),
        ("prometheus configured, replicaCount 4", {"prometheus": PROM, "replicaCount": 4},
         "Deployment", 4, []),
        ("config.defaultSource set by the user", {"prometheus": PROM, "config": {"defaultSource": "otlp"}},
         "Deployment", 1, ["otlp"]),
        ("otlp.fanOut with replicaCount 3", {"replicaCount": 3, "otlp": {"fanOut": True}},
         "StatefulSet", 3, []),
    ]
    for what, values, kind, replicas, source in cases:
        name = f"default source and replicas: {what}"
        docs, notes, err = render_or_error(chart_dir, values)
        if err:
            report.fail(name, err)
            continue
        w, c = container(docs)
        got = (w["kind"], w["spec"]["replicas"], flag_values(c["args"], "--default-source"))
        report.check(name, [] if got == (kind, replicas, source) else
                     [f"got {got}, want {(kind, replicas, source)}"],
                     f"{kind}, {replicas} replica(s), --default-source {source or 'left out'}")
    refused = [
        ("replicaCount 3 with the embedded store as the default source",
         {"replicaCount": 3}, ["otlp.fanOut", "replicaCount=1"]),
        ("prometheus configured but config.defaultSource=otlp, replicaCount 2",
         {"prometheus": PROM, "config": {"defaultSource": "otlp"}, "replicaCount": 2}, ["otlp.fanOut"]),
        ("otlp.enabled=false with no other source", {"otlp": {"enabled": False}}, ["prometheus"]),
        ("otlp.fanOut on a non-headless Service",
         {"otlp": {"fanOut": True}, "service": {"headless": False}}, ["service.headless"]),
    ]
    for what, values, words in refused:
        name = f"chart refuses {what}"
        docs, notes, err = render_or_error(chart_dir, values)
        if err is None:
            report.fail(name, "the chart rendered it")
        else:
            missing = [w for w in words if w not in err]
            report.check(name, [f"the error does not name {missing}: {err}"] if missing else [],
                         err.splitlines()[-1].strip()[:160])


def fan_out(report, chart_dir, install_text):
    """otlp.fanOut: stable per-replica addresses, and the NOTES' Collector snippet sends to each."""
    name = "otlp.fanOut: the Collector snippet exports to every replica's stable address"
    values = {"replicaCount": 3, "otlp": {"fanOut": True}}
    docs, notes, err = render_or_error(chart_dir, values)
    if err:
        report.fail(name, err)
        return
    problems = []
    (sts,) = chart.by_kind(docs, "StatefulSet")
    svcs = chart.by_kind(docs, "Service")
    headless = [s for s in svcs if s["spec"].get("clusterIP") == "None"]
    if [s["metadata"]["name"] for s in headless] != [sts["spec"].get("serviceName")]:
        problems.append(f"serviceName {sts['spec'].get('serviceName')} is not the headless Service "
                        f"{[s['metadata']['name'] for s in headless]}")
    ns, svc = chart.NAMESPACE, sts["spec"].get("serviceName")
    port = next(p["port"] for s in headless for p in s["spec"]["ports"] if p["name"] == "otlp-grpc")
    # A StatefulSet pod's DNS name: <pod>.<serviceName>.<namespace>.svc.<domain>; pods are <sts>-<i>.
    want = {f"{sts['metadata']['name']}-{i}.{svc}.{ns}.svc.cluster.local:{port}"
            for i in range(sts["spec"]["replicas"])}
    snippet = notes[notes.find("exporters:"):notes.find("Past one replica")]
    try:
        collector = yaml.safe_load(snippet)
    except yaml.YAMLError as e:
        report.fail(name, f"the NOTES snippet is not YAML: {e}\n{snippet}")
        return
    problems += collector_problems(collector, want)
    report.check(name, problems, f"{len(want)} exporters, StatefulSet {sts['metadata']['name']}")

    # docs/install.md's snippet is the chart's own rendering for the values it states.
    name = f"{readme.INSTALL_DOC}'s fan-out Collector snippet equals the chart's rendering"
    snippets = readme.collector_snippets(install_text)
    if len(snippets) != 1:
        report.fail(name, f"want one {readme.INSTALL_DOC} YAML block with otlp/slo-scaler-N exporters, "
                          f"got {len(snippets)}")
        return
    n = len(snippets[0].get("exporters") or {})
    docs, notes, err = render_or_error(chart_dir, {"replicaCount": n, "otlp": {"fanOut": True}})
    rendered = yaml.safe_load(notes[notes.find("exporters:"):notes.find("Past one replica")])
    report.check(name, [] if rendered == snippets[0] else
                 [f"{readme.INSTALL_DOC}:\n{yaml.safe_dump(snippets[0])}chart (replicaCount {n}):\n{yaml.safe_dump(rendered)}"],
                 f"replicaCount {n}")


def collector_problems(collector, want_endpoints):
    problems = []
    exporters = collector.get("exporters") or {}
    got = {e.get("endpoint") for e in exporters.values()}
    if got != want_endpoints:
        problems.append(f"exporter endpoints {sorted(got)}, want {sorted(want_endpoints)}")
    pipe = (((collector.get("service") or {}).get("pipelines") or {}).get("traces") or {})
    if sorted(pipe.get("exporters") or []) != sorted(exporters):
        problems.append(f"traces pipeline exports to {pipe.get('exporters')}, want {sorted(exporters)}")
    return problems


def admitted(policy, pod_ports, source_ns_labels, port_name):
    """Whether a NetworkPolicy admits a pod in a namespace with these labels to a named port
    (Kubernetes semantics for namespaceSelector.matchLabels; ipBlock peers admit nothing here)."""
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports")
        if ports and not any(p.get("port") in (port_name, pod_ports.get(port_name)) for p in ports):
            continue
        peers = rule.get("from")
        if not peers:
            return True
        for peer in peers:
            if set(peer) - {"namespaceSelector"}:
                continue  # podSelector / ipBlock: narrower than "any pod of the namespace"
            sel = peer["namespaceSelector"] or {}
            if set(sel) - {"matchLabels"}:
                continue
            if all(source_ns_labels.get(k) == v for k, v in (sel.get("matchLabels") or {}).items()):
                return True
    return False


def network_policy(report, chart_dir):
    """Issue 15: on by default; gRPC from KEDA's namespace, admin from monitoring, OTLP from the cluster."""
    def ns(name):
        return {"kubernetes.io/metadata.name": name}

    cases = [
        ("default values", None, "keda", "monitoring"),
        ("namespaces from values", {"networkPolicy": {"kedaNamespace": "autoscaling",
                                                      "monitoringNamespace": "observability",
                                                      "analysisNamespace": "argo-rollouts"}},
         "autoscaling", "observability"),
    ]
    for what, values, keda_ns, mon_ns in cases:
        analysis = ((values or {}).get("networkPolicy") or {}).get("analysisNamespace")
        name = f"NetworkPolicy admits exactly its callers ({what})"
        docs, notes, err = render_or_error(chart_dir, values)
        if err:
            report.fail(name, err)
            continue
        pols = chart.by_kind(docs, "NetworkPolicy")
        if len(pols) != 1:
            report.fail(name, f"want one NetworkPolicy, got {len(pols)}")
            continue
        _, c = container(docs)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        matrix = [
            (keda_ns, "grpc", True), ("shop", "grpc", False), (mon_ns, "grpc", False),
            (mon_ns, "admin", True), ("shop", "admin", False), (keda_ns, "admin", False),
            ("shop", "otlp-grpc", True), ("shop", "otlp-http", True), (mon_ns, "otlp-grpc", True),
            ("argo-rollouts", "admin", bool(analysis)), ("argo-rollouts", "grpc", False),
        ]
        problems = [f"a pod in {n} → {p}: {'admitted' if not want else 'refused'}, want "
                    f"{'admitted' if want else 'refused'}"
                    for n, p, want in matrix if admitted(pols[0], ports, ns(n), p) != want]
        if "Ingress" not in pols[0]["spec"].get("policyTypes", []):
            problems.append("policyTypes lacks Ingress")
        report.check(name, problems, f"gRPC ← {keda_ns}, admin ← {mon_ns}"
                     f"{' and ' + analysis if analysis else ''}, OTLP ← every namespace")


def secrets(report, rendered):
    """Issue 15: header secrets reach the server as mounted files, never through args or env."""
    name = "secrets never in the container's args or env (all-on values)"
    docs = rendered.get("all-on values")
    if not docs:
        report.fail(name, "the all-on values did not render")
        return
    w, c = container(docs)
    pod = w["spec"]["template"]["spec"]
    problems = [f"arg expands an env var: {a}" for a in c["args"] if "$(" in a]
    problems += [f"env {e['name']} comes from a Secret" for e in c.get("env", [])
                 if "secretKeyRef" in (e.get("valueFrom") or {})]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    header_files = [a for a in c["args"] if a.startswith(("--prometheus-header-file=", "--tempo-header-file="))]
    if not header_files:
        problems.append("the all-on values' secret header renders no --*-header-file flag")
    for arg in header_files:
        spec = arg.split("=", 2)[2] if arg.count("=") >= 2 else ""
        path = spec.split(":", 1)[1] if ":" in spec else ""
        mount = next((m for m in mounts if path.startswith(m["mountPath"] + "/")), None)
        if mount is None:
            problems.append(f"{arg}: {path} is on no mounted volume")
            continue
        secret = (volumes.get(mount["name"]) or {}).get("secret")
        items = {i["path"]: i["key"] for i in (secret or {}).get("items", [])}
        if not secret or path[len(mount["mountPath"]) + 1:] not in items or not mount.get("readOnly"):
            problems.append(f"{arg}: {mount['name']} is not a read-only Secret key at {path}")
    report.check(name, problems, f"{len(header_files)} header file(s)")


def tenant_policy(report, chart_dir):
    """Issue 15: a namespace policy needs mTLS client verification or an explicit acknowledgement."""
    allow = {"tempo": [{"name": "default", "url": "http://tempo:3200"}],
             "tempoTenantAllow": {"shop": ["shop"]}}
    name = "chart refuses tempoTenantAllow without authenticated callers"
    docs, notes, err = render_or_error(chart_dir, allow)
    if err is None:
        report.fail(name, "the chart rendered it")
    else:
        missing = [w for w in ("tls.clientAuth", "security.allowUnauthenticatedNamespacePolicy") if w not in err]
        report.check(name, [f"the error does not name {missing}: {err}"] if missing else [])
    cases = [
        ("with security.allowUnauthenticatedNamespacePolicy",
         dict(allow, security={"allowUnauthenticatedNamespacePolicy": True}), True),
        ("with tls.clientAuth (mTLS)",
         dict(allow, tls={"enabled": True, "existingSecret": "tls", "clientAuth": True}), False),
    ]
    for what, values, want_flag in cases:
        name = f"tempoTenantAllow renders {what}"
        docs, notes, err = render_or_error(chart_dir, values)
        if err:
            report.fail(name, err)
            continue
        _, c = container(docs)
        got = "--allow-unauthenticated-namespace-policy" in c["args"]
        problems = [] if got == want_flag else [f"--allow-unauthenticated-namespace-policy present: {got}"]
        if "--tempo-tenant-allow=shop=shop" not in c["args"]:
            problems.append("--tempo-tenant-allow=shop=shop missing")
        report.check(name, problems)
    # The binary also counts --backend-allow, --raw-query-allow and --aws-role-allow as namespace
    # policies (ServeArgs::check_policy_trust): through extraArgs they need the flag as much.
    name = "security.allowUnauthenticatedNamespacePolicy renders its flag for policies in extraArgs"
    docs, notes, err = render_or_error(chart_dir, {
        "prometheus": PROM, "extraArgs": ["--raw-query-allow=shop=default"],
        "security": {"allowUnauthenticatedNamespacePolicy": True}})
    if err:
        report.fail(name, err)
    else:
        _, c = container(docs)
        report.check(name, [] if "--allow-unauthenticated-namespace-policy" in c["args"] else
                     [f"--allow-unauthenticated-namespace-policy missing from {c['args']}"])


def prometheus_backends(report, chart_dir, rendered, docs_text):
    """Issue 24: a Prometheus backend's sigv4Region and tenant become --prometheus-sigv4 and
    --prometheus-tenant, prometheusTenantAllow --prometheus-tenant-allow (which, like
    tempoTenantAllow, needs authenticated callers); the chart snippets of
    docs/prometheus-backends.md render and pass the schema."""
    name = "prometheus sigv4Region, tenant and prometheusTenantAllow render (all-on values)"
    docs = rendered.get("all-on values")
    if not docs:
        report.fail(name, "the all-on values did not render")
    else:
        _, c = container(docs)
        want = ["--prometheus-sigv4=amp=eu-west-1", "--prometheus-tenant=mimir=platform",
                "--prometheus-tenant-allow=shop=shop", "--prometheus-tenant-allow=*=platform"]
        report.check(name, [f"{w} missing from {c['args']}" for w in want if w not in c["args"]])
    name = "chart refuses sigv4Region on a tempo backend"
    values = {"prometheus": PROM,
              "tempo": [{"name": "t", "url": "http://tempo:3200", "sigv4Region": "eu-west-1"}]}
    docs, notes, err = render_or_error(chart_dir, values)
    if err is None:
        report.fail(name, "the chart rendered it")
    else:
        report.check(name, [] if "sigv4Region" in err else [f"the error does not name sigv4Region: {err}"])
    name = "chart refuses prometheusTenantAllow without authenticated callers"
    docs, notes, err = render_or_error(chart_dir, {"prometheus": PROM, "prometheusTenantAllow": {"shop": ["shop"]}})
    if err is None:
        report.fail(name, "the chart rendered it")
    else:
        missing = [w for w in ("prometheusTenantAllow", "tls.clientAuth",
                               "security.allowUnauthenticatedNamespacePolicy") if w not in err]
        report.check(name, [f"the error does not name {missing}: {err}"] if missing else [])
    snippets = [yaml.safe_load(body) for lang, body in readme.FENCE.findall(docs_text) if lang == "yaml"]
    if len(snippets) < 2:
        report.fail("docs/prometheus-backends.md chart snippets", f"found {len(snippets)} yaml snippets, want 2")
    for i, values in enumerate(snippets):
        name = f"docs/prometheus-backends.md chart snippet {i + 1} renders"
        values = dict(values)
        if values.get("tls", {}).get("enabled"):
            values["tls"] = dict(values["tls"], existingSecret="slo-scaler-tls")
        docs, notes, err = render_or_error(chart_dir, values)
        if err:
            report.fail(name, err)
            continue
        _, c = container(docs)
        flags = [a for a in c["args"] if a.startswith("--prometheus")]
        report.check(name, [] if len(flags) > 1 else [f"only {flags}"], " ".join(flags)[:160])


def receiver_follows_replicas(report, chart_dir, readme_values):
    """KEDA's client round-robins its calls over the replicas (keda
    pkg/scalers/external_scaler.go, getClientForConnectionPool: grpc.WithDefaultServiceConfig with
    `{"loadBalancingConfig": [{"round_robin":{}}]}`), so replicas that each receive part of the spans
    would each answer `source: otlp` with a part. The receiver runs only with one replica or with
    otlp.fanOut; otherwise the chart passes --no-otlp, publishes no OTLP port and says why."""
    cases = [
        # (what, values, receiver on)
        ("the README's helm install: prometheus, 2 replicas", readme_values, False),
        ("prometheus configured, replicaCount 4", {"prometheus": PROM, "replicaCount": 4}, False),
        ("prometheus configured, replicaCount 1", {"prometheus": PROM, "replicaCount": 1}, True),
        ("prometheus configured, otlp.fanOut with replicaCount 2",
         {"prometheus": PROM, "replicaCount": 2, "otlp": {"fanOut": True}}, True),
        ("default values: embedded store, one replica", None, True),
    ]
    for what, values, on in cases:
        name = f"OTLP receiver {'on' if on else 'off'}: {what}"
        docs, notes, err = render_or_error(chart_dir, values)
        if err:
            report.fail(name, err)
            continue
        w, c = container(docs)
        args = c["args"]
        service_ports = {p["name"] for s in chart.by_kind(docs, "Service") for p in s["spec"]["ports"]}
        pod_ports = {p["name"] for p in c.get("ports", [])}
        got = {
            "--no-otlp": "--no-otlp" in args,
            "--otlp-grpc-addr": bool(flag_values(args, "--otlp-grpc-addr")),
            "Service OTLP ports": bool({"otlp-grpc", "otlp-http"} & service_ports),
            "container OTLP ports": bool({"otlp-grpc", "otlp-http"} & pod_ports),
        }
        want = {"--no-otlp": not on, "--otlp-grpc-addr": on, "Service OTLP ports": on,
                "container OTLP ports": on}
        problems = [f"{k}: got {got[k]}, want {want[k]}" for k in want if got[k] != want[k]]
        if not on and "receiver is off" not in notes:
            problems.append(f"NOTES.txt does not say the receiver is off:\n{notes}")
        report.check(name, problems, f"{w['spec']['replicas']} replica(s), "
                     f"{'receiver on' if on else '--no-otlp'}")


def readme_image(report, chart_dir, readme_text, readme_values):
    """The image the README's install runs is the one its `docker build` line makes and pushes,
    and the chart's default image is what the Dockerfile's own example builds."""
    import re
    name = "README: helm install runs the image its docker build makes and pushes"
    built = re.findall(r"^docker build -t (\S+) \.$", readme_text, re.M)
    pushed = re.findall(r"^docker push (\S+)$", readme_text, re.M)
    docs, _, err = render_or_error(chart_dir, readme_values)
    if err:
        report.fail(name, err)
        return
    _, c = container(docs)
    problems = []
    if not built or c["image"] != built[0]:
        problems.append(f"the install runs {c['image']}, the README builds {built}")
    if not pushed or pushed[0] != c["image"]:
        problems.append(f"the README pushes {pushed}, the install runs {c['image']}")
    report.check(name, problems, c["image"])
    name = "the chart's default image is what the Dockerfile's example builds"
    # deploy/helm/slo-scaler → the repository root.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(chart_dir))))
    with open(os.path.join(root, "Dockerfile")) as f:
        example = re.findall(r"docker build -t (\S+) \.", f.read())
    docs, _, err = render_or_error(chart_dir, None)
    if err:
        report.fail(name, err)
        return
    _, c = container(docs)
    report.check(name, [] if example and example[0] == c["image"] else
                 [f"the chart's default is {c['image']}, the Dockerfile builds {example}"], c["image"])


def flag_cases(chart_dir):
    """Container args of renders that use flags no other render uses."""
    out = []
    for values in ({"otlp": {"fanOut": True}, "replicaCount": 2},
                   {"tempo": [{"name": "default", "url": "http://tempo:3200"}],
                    "tempoTenantAllow": {"shop": ["shop"]},
                    "security": {"allowUnauthenticatedNamespacePolicy": True}},
                   {"prometheus": [{"name": "mimir", "url": "http://mimir:8080/prometheus",
                                    "tenant": "platform", "sigv4Region": "eu-west-1"}],
                    "prometheusTenantAllow": {"shop": ["shop"]},
                    "security": {"allowUnauthenticatedNamespacePolicy": True}}):
        docs, _, err = render_or_error(chart_dir, values)
        if docs:
            out.append(chart.deployment_args(docs)[0])
    return out


def run(report, chart_dir, readme_text, readme_values, rendered, docs_text, install_text):
    source_and_replicas(report, chart_dir, readme_values)
    fan_out(report, chart_dir, install_text)
    receiver_follows_replicas(report, chart_dir, readme_values)
    readme_image(report, chart_dir, readme_text, readme_values)
    network_policy(report, chart_dir)
    secrets(report, rendered)
    tenant_policy(report, chart_dir)
    prometheus_backends(report, chart_dir, rendered, docs_text)
