"""The order-service seed's instrumentation in miniature: a Flask app run under
`opentelemetry-instrument` (the distro configures the SDK and OTLP exporter from the
standard OTEL_* variables), plus one span processor of the app's own that writes every
finished span to $SEED_TRUTH, the truth the tests compare against.

GET /work?ms=N&status=S sleeps N milliseconds and answers S.
"""

import json
import os
import signal
import sys
import threading
import time

from flask import Flask, request
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor

app = Flask(__name__)
_lock = threading.Lock()
_truth = open(os.environ["SEED_TRUTH"], "w", encoding="utf-8")


class Truth(SpanProcessor):
    """Writes each ended span as one JSON line: kind, times in ns, status."""

    def on_end(self, span):
        line = json.dumps(
            {
                "service": span.resource.attributes.get("service.name"),
                "kind": span.kind.name,
                "start_ns": span.start_time,
                "end_ns": span.end_time,
                "error": span.status.status_code.name == "ERROR",
            }
        )
        with _lock:
            _truth.write(line + "\n")
            _truth.flush()


trace.get_tracer_provider().add_span_processor(Truth())


@app.get("/work")
def work():
    time.sleep(int(request.args.get("ms", "0")) / 1000)
    return "", int(request.args.get("status", "200"))


def _stop(*_):
    trace.get_tracer_provider().shutdown()
    sys.exit(0)


signal.signal(signal.SIGTERM, _stop)

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True)
