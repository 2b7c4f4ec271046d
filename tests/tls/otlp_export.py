"""Sends spans to an OTLP receiver with the official Python exporter (gRPC or HTTP).

usage: otlp_export.py grpc|http SERVICE COUNT

The exporter reads its endpoint, CA bundle and client certificate from the standard
variables (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE,
OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY, OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE), as
an instrumented service configured by its Deployment would. Prints the export result
(SUCCESS or FAILURE) and exits 0 only on SUCCESS.
"""

import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

protocol, service, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
elif protocol == "http":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
else:
    sys.exit(f"unknown protocol {protocol!r}")

memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": service}))
provider.add_span_processor(SimpleSpanProcessor(memory))
tracer = provider.get_tracer("slo-scaler-tests")
for _ in range(count):
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
        pass

exporter = OTLPSpanExporter()
result = exporter.export(memory.get_finished_spans())
exporter.shutdown()
print(result.name)
sys.exit(0 if result.name == "SUCCESS" else 1)
