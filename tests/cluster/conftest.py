"""Fixtures of the cluster tier: one control plane for the whole session (it takes a minute to
start), the chart rendered with README's install values, the repository's ScaledObjects."""

import glob
import os
import re
import shutil
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(ROOT, "scripts", "deploy_checks"))

import chart  # noqa: E402  (scripts/deploy_checks/chart.py: the chart rendered by Helm's own code)
from cluster import Cluster  # noqa: E402

CHART = os.path.join(ROOT, "deploy", "helm", "slo-scaler")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def readme_install_values():
    """The values of README's `helm install` command (its --set flags)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    command = re.search(r"^helm install .*?(?<!\\)$", text, re.S | re.M).group(0)
    values = {}
    for key, value in re.findall(r"--set '?([^=\s]+)=([^'\s]+)'?", command):
        node, parts = values, re.findall(r"[^.\[\]]+|\[\d+\]", key)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part.startswith("["):
                idx = int(part[1:-1])
                while len(node) <= idx:
                    node.append({})
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
                continue
            if last:
                node[part] = value
            else:
                nxt = parts[i + 1]
                node = node.setdefault(part, [] if nxt.startswith("[") else {})
    return values


def repository_scaled_objects():
    """Every ScaledObject the repository shows a user: deploy/examples/ and the yaml blocks of
    README.md and docs/, as (where, manifest)."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "examples", "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if isinstance(doc, dict) and doc.get("kind") == "ScaledObject":
                    found.append((os.path.relpath(path, ROOT), doc))
    docs = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    for path in docs:
        with open(path) as f:
            text = f.read()
        for lang, body in FENCE.findall(text):
            if lang != "yaml":
                continue
            for doc in yaml.safe_load_all(body):
                if isinstance(doc, dict) and doc.get("kind") == "ScaledObject":
                    found.append((os.path.relpath(path, ROOT), doc))
    return found


@pytest.fixture(scope="session")
def cluster():
    # The run's files (certificates, etcd's data, every process's log) in target/cluster-tier/,
    # kept until the next run for a look after a failure.
    workdir = os.path.join(ROOT, "target", "cluster-tier")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    c = Cluster(ROOT, workdir)
    try:
        c.start_control_plane()
        yield c
    except BaseException:
        print(c.dump_logs())
        raise
    finally:
        c.stop()


@pytest.fixture(scope="session")
def keda_crds(cluster):
    for path in sorted(glob.glob(os.path.join(cluster.parts["KEDA_CRDS"], "*.yaml"))):
        with open(path) as f:
            cluster.apply(f.read())
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/scaledobjects.keda.sh")
    return True


MOTO = "http://moto.aws.svc.cluster.local:5000"


def install_values():
    """README's `helm install` values, with one replica (README's own advice for `source: otlp`
    triggers: one replica holds every span) and SQS at the emulator (`aws.endpoint`)."""
    values = readme_install_values()
    values["replicaCount"] = 1
    values["aws"] = {"endpoint": MOTO}
    return values


@pytest.fixture(scope="session")
def installed_chart(cluster):
    """The chart rendered with install_values(), applied in namespace keda."""
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": chart.NAMESPACE}}])
    docs, _ = chart.render(CHART, install_values())
    manifests = [d for path in sorted(docs) for d in docs[path]]
    cluster.apply(manifests)
    return manifests


def scaler_args(manifests):
    """The container args of the chart's workload."""
    workload = next(m for m in manifests if m["kind"] in chart.WORKLOAD_KINDS)
    return workload["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.fixture(scope="session")
def moto(cluster):
    """moto's server (scripts/install-moto.sh) as SQS, at MOTO's address."""
    cluster.run("moto", [os.path.join(ROOT, ".venv-test", "bin", "moto_server"), "-H", "0.0.0.0", "-p", "5000"])
    import urllib.request
    from cluster import wait_for
    wait_for("moto", lambda: urllib.request.urlopen("http://127.0.0.1:5000/moto-api/", timeout=2).status == 200, 60)
    return MOTO


@pytest.fixture(scope="session")
def scaler(cluster, installed_chart, moto):
    """The release binary, started with the args the chart gave its container (and, for moto,
    the static credentials the AWS SDK's default chain reads from the environment)."""
    cluster.scaler_args = scaler_args(installed_chart)
    return cluster.start_scaler(cluster.scaler_args)
