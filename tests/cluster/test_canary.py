"""The seeds' canary with real Argo Rollouts: deploy/examples/canary/ applied unchanged (the
Rollout with Istio traffic routing, its VirtualService and DestinationRule, the AnalysisTemplate
asking slo-scaler's /api/v1/analysis through Argo Rollouts' `web` provider).

No Istio proxy runs here; the mesh's part is played by `Mesh`, which sends payment-service's
spans to the stable and canary versions in the shares the VirtualService's `primary` route
weights give (Istio's weighted routing: "weight: the proportion of traffic to be forwarded to
the service version", istio.io/api networking/v1/virtual_service.proto, HTTPRouteDestination).
Each version's spans carry its pod-template hash as `service.version`, as the Rollout's pods do.
"""

import os
import time

import pytest
import yaml

from cluster import HOST_IP, wait_for
from conftest import ROOT
from traffic import Background, Sender

NS = "shop"
EXAMPLE = os.path.join(ROOT, "deploy", "examples", "canary")
RPS = 100
DURATIONS = [0.080 + 0.002 * i for i in range(20)]


def example(name):
    with open(os.path.join(EXAMPLE, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


class Mesh(Background):
    """Routes payment-service's requests to its versions by the VirtualService's weights."""

    def __init__(self, cluster):
        super().__init__()
        self.cluster = cluster
        self.senders = {}
        self.behaviour = {}

    def version(self, pod_hash, error_ratio):
        self.behaviour[pod_hash] = error_ratio

    def weights(self):
        vs = self.cluster.get("virtualservice", "payment-service", namespace=NS)
        route = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
        return {d["destination"]["subset"]: d.get("weight", 0) for d in route["route"]}

    def _run(self):
        while not self._stop.is_set():
            try:
                ro = self.cluster.get("rollout", "payment-service", namespace=NS)
                st = ro.get("status", {})
                w = self.weights()
                shares = {st.get("stableRS"): w.get("stable", 100)}
                if st.get("currentPodHash") and st.get("currentPodHash") != st.get("stableRS"):
                    shares[st["currentPodHash"]] = w.get("canary", 0)
                for h, weight in shares.items():
                    if not h:
                        continue
                    if h not in self.senders:
                        self.senders[h] = Sender(f"{HOST_IP}:4317", "payment-service", version=h, rps=0,
                                                 durations=DURATIONS).start()
                    self.senders[h].set(rps=RPS * weight // 100, error_ratio=self.behaviour.get(h, 0.002))
                for h, s in self.senders.items():
                    if h not in shares:
                        s.set(rps=0)
            except (AssertionError, StopIteration, KeyError):
                pass
            self._stop.wait(1.0)

    def _stopped(self):
        for s in self.senders.values():
            s.stop()


@pytest.fixture(scope="module")
def rollout(cluster, scaler):
    cluster.start_rollouts()
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    cluster.apply(example("virtual-service.yaml") + example("analysis-template.yaml") + example("rollout.yaml"))
    wait_for("the Rollout Healthy with its stable ReplicaSet", lambda: cluster.get(
        "rollout", "payment-service", namespace=NS).get("status", {}).get("phase") == "Healthy", 120)
    mesh = Mesh(cluster).start()
    yield cluster, mesh
    mesh.stop()


def set_image(cluster, tag):
    """Patches the image and returns the new pod-template hash. An aborted Rollout keeps its
    aborted canary's hash as currentPodHash (not the stable one) until the controller sees the
    patch, so the hash from before the patch is excluded too, or that stale hash is returned."""
    before = cluster.get("rollout", "payment-service", namespace=NS)["status"].get("currentPodHash")
    cluster.kubectl("patch", "rollout", "payment-service", "-n", NS, "--type=json", "-p",
                    '[{"op":"replace","path":"/spec/template/spec/containers/0/image",'
                    f'"value":"registry.example.com/shop/payment-service:{tag}"}}]')
    return wait_for("the Rollout's new pod-template hash", lambda: (lambda st: st.get("currentPodHash") not in
                    (st.get("stableRS"), before, None) and st["currentPodHash"])(
                    cluster.get("rollout", "payment-service", namespace=NS)["status"]), 60)


def analysis_runs(cluster):
    return cluster.get("analysisruns", namespace=NS)["items"]


def test_a_canary_failing_12_percent_is_aborted_and_traffic_returns_to_stable(rollout):
    cluster, mesh = rollout
    stable = cluster.get("rollout", "payment-service", namespace=NS)["status"]["stableRS"]
    mesh.version(stable, 0.002)
    canary = set_image(cluster, "2.1.0-bad")
    mesh.version(canary, 0.12)
    started = time.monotonic()
    wait_for("10 % of the traffic on the canary", lambda: mesh.weights().get("canary") == 10, 60)
    ro = wait_for("the Rollout aborted", lambda: (lambda r: r["status"].get("abort") and r)(
        cluster.get("rollout", "payment-service", namespace=NS)), 240, 2.0)
    print(f"canary: the 12 % canary aborted {time.monotonic() - started:.0f} s after its rollout began")
    runs = [r for r in analysis_runs(cluster) if r["metadata"]["labels"].get("rollouts-pod-template-hash") == canary]
    assert runs and runs[-1]["status"]["phase"] == "Failed", [r.get("status") for r in runs]
    measurement = runs[-1]["status"]["metricResults"][0]["measurements"][-1]
    assert measurement["phase"] == "Failed", measurement
    assert '"errorRate"' in measurement["value"], measurement
    assert ro["status"]["stableRS"] == stable
    wait_for("all traffic back on the stable version", lambda: mesh.weights() == {"stable": 100, "canary": 0}, 60)


def test_a_healthy_canary_is_promoted(rollout):
    cluster, mesh = rollout
    stable = cluster.get("rollout", "payment-service", namespace=NS)["status"]["stableRS"]
    canary = set_image(cluster, "2.2.0")
    mesh.version(canary, 0.002)
    started = time.monotonic()
    ro = wait_for("the Rollout to promote the canary", lambda: (lambda r: r["status"].get("stableRS") == canary
                  and r["status"].get("phase") == "Healthy" and r)(cluster.get("rollout", "payment-service", namespace=NS)),
                  420, 2.0)
    print(f"canary: the healthy canary promoted {time.monotonic() - started:.0f} s after its rollout began")
    assert ro["status"]["stableRS"] != stable
    runs = [r for r in analysis_runs(cluster) if r["metadata"]["labels"].get("rollouts-pod-template-hash") == canary]
    assert len(runs) == 2 and all(r["status"]["phase"] == "Successful" for r in runs), [r.get("status") for r in runs]
    assert mesh.weights() == {"stable": 100, "canary": 0}
