"""A Kubernetes control plane from real binaries, with simulated nodes, KEDA and Argo Rollouts.

Everything runs as a plain process inside the network namespace scripts/test-cluster.sh made
for this run: etcd, kube-apiserver, kube-controller-manager (the HPA, ReplicaSet and Deployment
controllers), kube-scheduler, kwok (fake nodes whose pods it marks Running and Ready), KEDA's
operator and metrics adapter, Argo Rollouts' controller and slo-scaler itself. The namespace has
one address of its own, HOST_IP (on its loopback device, outside 127.0.0.0/8): the API server
refuses endpoints in 127.0.0.0/8, so the adapter's EndpointSlice points there. Its /etc/hosts
(scripts/test-cluster.sh writes it) sends every Service name the manifests use to HOST_IP, so
KEDA dials `slo-scaler.keda.svc.cluster.local:6000` exactly as a ScaledObject says.

The parts' paths come from target/real/cluster.env (scripts/real/build-cluster.sh).
"""

import glob
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import ssl

import yaml

HOST_IP = os.environ.get("CLUSTER_HOST_IP", "172.30.0.1")
APISERVER_PORT = 16443
ADMIN_TOKEN = "slo-scaler-cluster-tier-admin"


def load_parts(root):
    parts = {}
    with open(os.path.join(root, "target/real/cluster.env")) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                parts[key] = value
    return parts


def wait_for(what, check, timeout=120.0, interval=0.5):
    """Calls check() until it returns a truthy value; fails naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported below if it never passes
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Process:
    """A process with its output in LOGDIR/NAME.log. With `restart`, it is started again when it
    exits, as a pod's `restartPolicy: Always` would (KEDA's operator exits on purpose after it
    first writes its certificates, for the kubelet to restart it)."""

    def __init__(self, name, argv, logdir, env=None, restart=False):
        self.name, self.argv = name, argv
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.env = env
        self.proc = None
        self.restarts = 0
        self._stopped = threading.Event()
        if restart:
            threading.Thread(target=self._supervise, daemon=True).start()

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()
        return self

    def _supervise(self):
        while not self._stopped.wait(1.0):
            if self.proc is not None and self.proc.poll() is not None and not self._stopped.is_set():
                self.restarts += 1
                self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self._stopped.set()
        if not self.alive():
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, lines=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """The control plane; `kubectl()` talks to it as cluster-admin."""

    def __init__(self, root, workdir=None):
        self.root = root
        self.parts = load_parts(root)
        self.dir = workdir or tempfile.mkdtemp(prefix="slo-scaler-cluster-")
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.procs = {}
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")

    # --- processes -------------------------------------------------------------------------

    def run(self, name, argv, env=None, restart=False):
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = Process(name, argv, self.logs, full_env, restart).start()
        self.procs[name] = p
        return p

    def stop(self):
        for p in reversed(list(self.procs.values())):
            p.stop()

    def logs_of(self, name, lines=40):
        p = self.procs.get(name)
        return p.tail(lines) if p else ""

    def dump_logs(self, lines=30):
        return "\n".join(f"--- {n} ---\n{p.tail(lines)}" for n, p in self.procs.items())

    # --- the control plane -----------------------------------------------------------------

    def _pki(self):
        pki = os.path.join(self.dir, "pki")
        os.makedirs(pki)
        self.pki = pki
        # The service-account signing key (kube-apiserver signs, the controller-manager's token
        # controller too).
        openssl("genrsa", "-out", f"{pki}/sa.key", "2048")
        openssl("rsa", "-in", f"{pki}/sa.key", "-pubout", "-out", f"{pki}/sa.pub")
        # The aggregator's front proxy: its CA (extension API servers such as KEDA's adapter
        # trust it, read from the extension-apiserver-authentication ConfigMap) and its client
        # certificate (kube-apiserver presents it when proxying to them).
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=front-proxy-ca",
                "-keyout", f"{pki}/front-proxy-ca.key", "-out", f"{pki}/front-proxy-ca.crt")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=front-proxy-client",
                "-keyout", f"{pki}/front-proxy-client.key", "-out", f"{pki}/front-proxy-client.csr")
        openssl("x509", "-req", "-in", f"{pki}/front-proxy-client.csr", "-CA", f"{pki}/front-proxy-ca.crt",
                "-CAkey", f"{pki}/front-proxy-ca.key", "-CAcreateserial", "-days", "2",
                "-out", f"{pki}/front-proxy-client.crt")
        with open(f"{pki}/tokens.csv", "w") as f:
            f.write(f'{ADMIN_TOKEN},cluster-admin,cluster-admin,"system:masters"\n')
        with open(self.kubeconfig, "w") as f:
            yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "tier",
                "clusters": [{"name": "tier", "cluster": {
                    "server": f"https://{HOST_IP}:{APISERVER_PORT}", "insecure-skip-tls-verify": True}}],
                "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
                "contexts": [{"name": "tier", "context": {"cluster": "tier", "user": "admin"}}],
            }, f)

    def start_control_plane(self):
        p = self.parts
        self._pki()
        pki = self.pki
        self.run("etcd", [p["ETCD_BIN"], "--data-dir", os.path.join(self.dir, "etcd"),
                          "--listen-client-urls", "http://127.0.0.1:2379",
                          "--advertise-client-urls", "http://127.0.0.1:2379",
                          "--listen-peer-urls", "http://127.0.0.1:2380",
                          "--log-level", "warn"])
        wait_for("etcd", lambda: urllib.request.urlopen("http://127.0.0.1:2379/health", timeout=2).status == 200, 60)
        self.run("kube-apiserver", [
            p["KUBE_APISERVER_BIN"],
            "--etcd-servers=http://127.0.0.1:2379",
            f"--secure-port={APISERVER_PORT}", "--bind-address=0.0.0.0", f"--advertise-address={HOST_IP}",
            f"--cert-dir={pki}/apiserver",
            f"--token-auth-file={pki}/tokens.csv",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            "--service-cluster-ip-range=10.96.0.0/16",
            # The aggregation layer, as kubeadm sets it up.
            f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
            f"--proxy-client-key-file={pki}/front-proxy-client.key",
            # No kube-proxy here: the aggregator dials the endpoint, not the Service's IP.
            "--enable-aggregator-routing=true",
        ])
        wait_for("kube-apiserver /readyz", lambda: self.api_get("/readyz") == "ok", 120)
        common = [f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
                  f"--authorization-kubeconfig={self.kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        self.run("kube-controller-manager", [
            p["KUBE_CONTROLLER_MANAGER_BIN"], *common,
            f"--service-account-private-key-file={pki}/sa.key",
            f"--root-ca-file={pki}/apiserver/apiserver.crt",
            "--use-service-account-credentials=false",
        ])
        self.run("kube-scheduler", [p["KUBE_SCHEDULER_BIN"], *common])
        self._start_kwok()
        wait_for("the default ServiceAccount", lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0, 120)

    def _start_kwok(self):
        stages = self.parts["KWOK_STAGES"]
        config = os.path.join(self.dir, "kwok.yaml")
        with open(config, "w") as out:
            for rel in ("node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
                        "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"):
                with open(os.path.join(stages, rel)) as f:
                    out.write("---\n" + f.read() + "\n")
        self.run("kwok", [self.parts["KWOK_BIN"], f"--kubeconfig={self.kubeconfig}", f"--config={config}",
                          "--manage-all-nodes=false",
                          "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                          "--node-lease-duration-seconds=40",
                          "--cidr=10.0.0.1/16", f"--node-ip={HOST_IP}"])
        nodes = []
        for i in range(2):
            nodes.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": f"kwok-node-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                             "labels": {"kubernetes.io/hostname": f"kwok-node-{i}", "kubernetes.io/os": "linux",
                                        "kubernetes.io/arch": "amd64", "type": "kwok"}},
                "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                           "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"}},
            })
        self.apply(nodes)
        wait_for("kwok's nodes Ready", lambda: all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
            for n in self.get("nodes")["items"]), 120)

    # --- talking to it ---------------------------------------------------------------------

    def api_get(self, path):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"https://{HOST_IP}:{APISERVER_PORT}{path}",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.read().decode()

    def kubectl(self, *args, input=None, check=True):
        r = subprocess.run([self.parts["KUBECTL_BIN"], f"--kubeconfig={self.kubeconfig}", *args],
                           input=input, capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def apply(self, docs, check=True):
        """Server-side apply of manifests (a list of dicts or a YAML string)."""
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        return self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text, check=check)

    def get(self, *what, namespace=None):
        ns = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", *what, *ns, "-o", "json").stdout)

    # --- KEDA ------------------------------------------------------------------------------

    def start_keda(self):
        """KEDA's operator and metrics adapter, with the args of KEDA's own manifests
        (config/manager/manager.yaml, config/metrics-server/deployment.yaml) and the ports moved
        off the scaler's. The operator's certificate rotation writes Secret kedaorg-certs; the
        harness then does the kubelet's part and writes the Secret's keys into the cert dir
        both read, as the pods' Secret volume would."""
        p, certs = self.parts, os.path.join(self.dir, "keda-certs")
        os.makedirs(certs, exist_ok=True)
        self.keda_certs = certs
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keda"}}])
        env = {"KUBECONFIG": self.kubeconfig, "POD_NAMESPACE": "keda", "WATCH_NAMESPACE": "",
               "KEDA_CLUSTER_OBJECT_NAMESPACE": "keda", "POD_NAME": "keda-operator", "OPERATOR_NAME": "keda-operator"}
        self.run("keda-operator", [p["KEDA_OPERATOR_BIN"], "--zap-log-level=info", "--zap-encoder=console",
                                   "--enable-cert-rotation=true", f"--cert-dir={certs}",
                                   "--enable-webhook-patching=false",
                                   "--metrics-bind-address=:8090", "--health-probe-bind-address=:8091"], env,
                 restart=True)
        keda_dir = os.path.dirname(os.path.dirname(p["KEDA_CRDS"]))
        # The metrics adapter's Service has no pods to select here: its endpoint is this host.
        with open(os.path.join(keda_dir, "metrics-server", "service.yaml")) as f:
            service = yaml.safe_load(f)
        service["spec"].pop("selector", None)
        with open(os.path.join(keda_dir, "metrics-server", "api_service.yaml")) as f:
            api_service = yaml.safe_load(f)
        endpoints = [
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "keda-metrics-apiserver-host", "namespace": "keda",
                          "labels": {"kubernetes.io/service-name": "keda-metrics-apiserver"}},
             "addressType": "IPv4",
             "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}, {"name": "metrics", "port": 8092, "protocol": "TCP"}],
             "endpoints": [{"addresses": [HOST_IP], "conditions": {"ready": True}}]},
        ]
        self.apply([service, *endpoints])

        def secret_written():
            secret = self.get("secret", "kedaorg-certs", namespace="keda")
            data = secret.get("data") or {}
            if not all(k in data for k in ("ca.crt", "tls.crt", "tls.key")):
                return False
            import base64
            for k in ("ca.crt", "tls.crt", "tls.key"):
                with open(os.path.join(certs, k), "wb") as f:
                    f.write(base64.b64decode(data[k]))
            return True
        wait_for("KEDA's operator to write Secret kedaorg-certs", secret_written, 120)
        self.run("keda-adapter", [p["KEDA_ADAPTER_BIN"], "--secure-port=6443", "--port=8092", "--zap-log-level=info",
                                  f"--client-ca-file={certs}/ca.crt", f"--tls-cert-file={certs}/tls.crt",
                                  f"--tls-private-key-file={certs}/tls.key", f"--cert-dir={certs}",
                                  f"--lister-kubeconfig={self.kubeconfig}",
                                  f"--authentication-kubeconfig={self.kubeconfig}",
                                  f"--authorization-kubeconfig={self.kubeconfig}"], env)
        # The APIService last: the operator patches its caBundle once it exists.
        self.apply([api_service])
        wait_for("the external.metrics.k8s.io APIService Available", lambda: any(
            c["type"] == "Available" and c["status"] == "True"
            for c in self.get("apiservice", "v1beta1.external.metrics.k8s.io").get("status", {}).get("conditions", [])), 180)

    # --- Argo Rollouts ---------------------------------------------------------------------

    def start_rollouts(self):
        """Argo Rollouts' controller with its CRDs, and Istio's CRDs for the example Rollout's
        traffic routing (no Istio runs: the tests route spans by the VirtualService's weights)."""
        crds = sorted(glob.glob(os.path.join(self.parts["ARGO_ROLLOUTS_CRDS"], "*-crd.yaml")))
        for path in [*crds, self.parts["ISTIO_CRDS"]]:
            with open(path) as f:
                self.apply([d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition"])
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/rollouts.argoproj.io",
                     "crd/analysistemplates.argoproj.io", "crd/virtualservices.networking.istio.io")
        self.run("argo-rollouts", [self.parts["ARGO_ROLLOUTS_BIN"], f"--kubeconfig={self.kubeconfig}",
                                   "--leader-elect=false", "--metricsPort=8096", "--healthzPort=8097"],
                 {"POD_NAMESPACE": "argo-rollouts"})

    # --- slo-scaler ------------------------------------------------------------------------

    def start_scaler(self, args, name="slo-scaler"):
        """The release binary (SLO_SCALER_BIN to run another) with the container args the chart
        rendered."""
        binary = os.environ.get("SLO_SCALER_BIN") or os.path.join(self.root, "target", "release", "slo-scaler")
        proc = self.run(name, [binary, *args], {"RUST_LOG": "info", "AWS_ACCESS_KEY_ID": "testing",
                                                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "eu-west-1"})
        wait_for("slo-scaler /readyz", lambda: urllib.request.urlopen("http://127.0.0.1:8080/readyz", timeout=2).status == 200, 60)
        return proc

    def scaler_metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=5) as r:
            return r.read().decode()
