"""A real Prometheus (Debian's /usr/bin/prometheus) scraping a small exporter of OTel
spanmetrics series, for the live check of docs/triggers.md's trigger.

The exporter serves the OpenTelemetry Collector spanmetrics connector's names and labels
(`traces_span_metrics_duration_milliseconds_bucket`, `traces_span_metrics_calls_total`;
`service_name`, `span_kind`, `status_code`, `span_name`; buckets in ms as in
docs/prometheus-conventions.md). Every counter grows linearly with time, so any `rate()`
window gives the same distribution and Prometheus' quantile holds still while the check runs.
Other services and client spans are served too: a query that ignores the service or the
span kind answers a different number.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKETS_MS = [2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000]

# (service, span kind, status code, span name) → spans per second that end in each bucket
# (by upper bound in ms; "+Inf" for the rest).
SERIES = {
    ("order-service", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET", "POST /orders"):
        {50: 10, 100: 36, 200: 28, 400: 9, 800: 7, 1000: 1},
    ("order-service", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", "POST /orders"):
        {100: 4, 400: 1, 800: 1, 1400: 3},
    ("order-service", "SPAN_KIND_CLIENT", "STATUS_CODE_UNSET", "GET payment"):
        {2000: 30, 5000: 20},
    ("payment-service", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET", "POST /pay"):
        {10: 50, 50: 50},
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exposition(elapsed):
    """The text exposition at `elapsed` seconds after start."""
    lines = ["# TYPE traces_span_metrics_duration_milliseconds histogram",
             "# TYPE traces_span_metrics_calls_total counter"]
    calls = []
    for (svc, kind, status, name), per_bucket in SERIES.items():
        labels = (f'service_name="{svc}",span_kind="{kind}",status_code="{status}",'
                  f'span_name="{name}"')
        cumulative = 0.0
        for le in BUCKETS_MS:
            cumulative += per_bucket.get(le, 0)
            lines.append(f'traces_span_metrics_duration_milliseconds_bucket{{{labels},le="{le}"}} '
                         f"{cumulative * elapsed}")
        total = sum(per_bucket.values())
        lines.append(f'traces_span_metrics_duration_milliseconds_bucket{{{labels},le="+Inf"}} '
                     f"{total * elapsed}")
        lines.append(f"traces_span_metrics_duration_milliseconds_count{{{labels}}} {total * elapsed}")
        lines.append(f"traces_span_metrics_duration_milliseconds_sum{{{labels}}} 0")
        calls.append(f"traces_span_metrics_calls_total{{{labels}}} {total * elapsed}")
    return "\n".join(lines + calls) + "\n"


class Exporter:
    def __init__(self):
        self.start = time.monotonic()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = exposition(time.monotonic() - outer.start + 1.0).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    """Debian's Prometheus on a free loopback port, scraping `target` every second."""

    def __init__(self, target, work_dir, binary="/usr/bin/prometheus"):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} is missing: install Debian's prometheus package")
        self.dir = tempfile.mkdtemp(prefix="prometheus-", dir=os.path.abspath(work_dir))
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "scrape_configs:\n"
                    "  - job_name: spanmetrics\n"
                    f"    static_configs: [{{targets: ['{target}']}}]\n")
        self.addr = f"127.0.0.1:{free_port()}"
        self.log = open(os.path.join(work_dir, "live-prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address={self.addr}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def query(self, expr):
        """The instant value of `expr` (a one-element vector or a scalar), or None."""
        url = f"http://{self.addr}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                data = json.load(r)["data"]
        except OSError:
            return None
        result = data["result"]
        if data["resultType"] == "scalar":
            return float(result[1])
        if len(result) != 1:
            return None
        return float(result[0]["value"][1])

    def wait_for(self, expr, within_s):
        """Polls until `expr` has a finite value; returns it, or None."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            v = self.query(expr)
            if v is not None and v == v and abs(v) != float("inf"):
                return v
            time.sleep(0.5)
        return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
