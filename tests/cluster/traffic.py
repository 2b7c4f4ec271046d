"""Spans with a known schedule, sent to the scaler's OTLP/gRPC port by the OpenTelemetry Python
SDK (the order-service seed's SDK), as a service's pods would send them.

Each second a sender ends `rps` server spans whose durations cycle through `durations` (so the
p95 over any window is a known value), a share `error_ratio` of them, spread evenly, with status
ERROR and HTTP 500.
The span times are set explicitly; nothing waits for the durations.
"""

import logging
import threading
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


# The exporter logs every retry while the scaler is down on purpose (the tests stop it).
logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").setLevel(logging.CRITICAL)


def p95(durations):
    """The 0.95 quantile of the cycle (nearest rank), what the scaler's p95 converges to."""
    ordered = sorted(durations)
    rank = max(1, -(-95 * len(ordered) // 100))
    return ordered[rank - 1]


class Background:
    """A daemon thread running `_run` until `stop()`, which then calls `_stopped`."""

    def __init__(self):
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self._stopped()

    def _run(self):
        raise NotImplementedError

    def _stopped(self):
        pass


class Sender(Background):
    def __init__(self, endpoint, service, version="v1", rps=50, durations=(0.05,), error_ratio=0.0):
        super().__init__()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": version}))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=200, max_export_batch_size=512))
        self.tracer = self.provider.get_tracer("slo-scaler-cluster-tier")
        self.lock = threading.Lock()
        self.rps, self.durations, self.error_ratio = rps, list(durations), error_ratio
        self.sent = self.errors = 0

    def set(self, rps=None, durations=None, error_ratio=None):
        with self.lock:
            if rps is not None:
                self.rps = rps
            if durations is not None:
                self.durations = list(durations)
            if error_ratio is not None:
                self.error_ratio = error_ratio

    def _stopped(self):
        self.provider.shutdown()

    def _run(self):
        i = 0
        while not self._stop.is_set():
            tick = time.monotonic()
            with self.lock:
                rps, durations, error_ratio = self.rps, self.durations, self.error_ratio
            now = time.time_ns()
            for k in range(rps):
                d = durations[i % len(durations)]
                end = now - int((rps - k) * 1e9 / max(rps, 1) / 2)
                span = self.tracer.start_span("GET /api", kind=SpanKind.SERVER, start_time=end - int(d * 1e9))
                span.set_attribute("http.response.status_code", 200)
                if int((i + 1) * error_ratio) > int(i * error_ratio):
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("http.response.status_code", 500)
                    self.errors += 1
                span.end(end_time=end)
                i += 1
                self.sent += 1
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))
