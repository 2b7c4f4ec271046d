"""The chart's ValidatingAdmissionPolicy, evaluated by the real kube-apiserver: ScaledObjects
whose triggers point at slo-scaler with a metricType their signal cannot work with are refused
with a message naming the mistake; every ScaledObject the repository shows is admitted."""

import copy

import pytest
import yaml

from cluster import wait_for
from conftest import repository_scaled_objects

SCALER = "slo-scaler.keda.svc.cluster.local:6000"


def scaled_object(name, *triggers, namespace="shop"):
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"scaleTargetRef": {"name": "order-service"}, "minReplicaCount": 2, "maxReplicaCount": 10,
                 "triggers": list(triggers)},
    }


def trigger(signal=None, metric_type=None, address=SCALER, kind="external", **extra):
    t = {"type": kind, "metadata": {"scalerAddress": address, "service": "order-service", **extra}}
    if signal is not None:
        t["metadata"]["signal"] = signal
    if metric_type is not None:
        t["metricType"] = metric_type
    return t


def dry_run(cluster, manifest):
    """Server-side dry run: admission (the policy included) runs, nothing is stored."""
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(manifest), check=False)


# (what, manifest, words the refusal must contain)
REFUSED = [
    ("latency with AverageValue", scaled_object("a", trigger("latency", "AverageValue", threshold="300ms")),
     ["latency", "needs metricType: Value"]),
    ("latency with no metricType (KEDA's default is AverageValue)",
     scaled_object("b", trigger("latency", threshold="300ms")), ["latency", "needs metricType: Value"]),
    ("errorRate over external-push with AverageValue",
     scaled_object("c", trigger("errorRate", "AverageValue", kind="external-push", threshold="0.05")),
     ["errorRate", "needs metricType: Value"]),
    ("slo with AverageValue, beside a good trigger",
     scaled_object("d", trigger("rps", "AverageValue", threshold="50"),
                   trigger("slo", "AverageValue", latencyObjective="300ms")), ["slo", "needs metricType: Value"]),
    ("sloCapacity with Value", scaled_object("e", trigger("sloCapacity", "Value", threshold="1")),
     ["sloCapacity", "needs metricType: AverageValue"]),
    ("queueDepth with Value", scaled_object("f", trigger("queueDepth", "Value", threshold="5")),
     ["queueDepth", "needs metricType: AverageValue"]),
    ("an unknown signal", scaled_object("g", trigger("p95latency", "Value")), ["known signal", "p95latency"]),
    ("no signal at all", scaled_object("h", trigger(None, "Value")), ["known signal", "(none)"]),
    ("the short Service name", scaled_object("i", trigger("latency", "AverageValue", address="slo-scaler.keda:6000")),
     ["needs metricType: Value"]),
]


@pytest.fixture(scope="module")
def policy_active(cluster, keda_crds, installed_chart):
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}])
    assert any(m["kind"] == "ValidatingAdmissionPolicy" for m in installed_chart), \
        "the chart rendered no ValidatingAdmissionPolicy"
    # The API server compiles a new policy in the background: wait until it refuses.
    wait_for("the admission policy to refuse a latency trigger with AverageValue",
             lambda: dry_run(cluster, REFUSED[0][1]).returncode != 0, 60)


@pytest.mark.parametrize("what,manifest,words", REFUSED, ids=[r[0] for r in REFUSED])
def test_the_api_server_refuses(cluster, policy_active, what, manifest, words):
    r = dry_run(cluster, manifest)
    assert r.returncode != 0, f"{what}: admitted"
    assert "denied request" in r.stderr or "ValidatingAdmissionPolicy" in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, f"{what}: refusal does not say {w!r}: {r.stderr}"


def test_another_scalers_triggers_pass_untouched(cluster, policy_active):
    other = scaled_object("other", trigger("latency", "AverageValue", address="my-scaler.tools.svc:6000"))
    r = dry_run(cluster, other)
    assert r.returncode == 0, r.stderr


def test_every_scaled_object_in_the_repository_is_admitted(cluster, policy_active):
    found = repository_scaled_objects()
    assert len(found) >= 8, f"only {len(found)} ScaledObjects found in the repository"
    namespaces = sorted({so["metadata"].get("namespace", "default") for _, so in found})
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces])
    refused = []
    for where, so in found:
        r = dry_run(cluster, copy.deepcopy(so))
        if r.returncode != 0:
            refused.append(f"{where} {so['metadata']['name']}: {r.stderr.strip()}")
    assert not refused, "\n".join(refused)


def test_the_charts_install_is_stored_by_the_api_server(cluster, installed_chart):
    """Every object `helm install` with README's values would create is accepted and stored:
    the workload, Service, NetworkPolicy, PodDisruptionBudget, the admission policy…"""
    kinds = {m["kind"] for m in installed_chart}
    assert {"Deployment", "Service", "NetworkPolicy", "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"} <= kinds, kinds
    for m in installed_chart:
        ns = m["metadata"].get("namespace")
        stored = cluster.get(m["kind"].lower(), m["metadata"]["name"], namespace=ns)
        assert stored["metadata"]["name"] == m["metadata"]["name"]
