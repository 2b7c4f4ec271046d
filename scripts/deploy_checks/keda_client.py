"""KEDA's side of the ExternalScaler protocol: Python stubs generated from proto/externalscaler.proto
(grpcio-tools) and the two calls KEDA makes for a metric value."""

import importlib
import os
import sys

import grpc
from grpc_tools import protoc


def stubs(proto_dir, out_dir):
    """Generates and imports (messages, service stubs) for externalscaler.proto."""
    os.makedirs(out_dir, exist_ok=True)
    code = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
                        f"--grpc_python_out={out_dir}",
                        os.path.join(proto_dir, "externalscaler.proto")])
    if code != 0:
        raise RuntimeError(f"protoc failed on {proto_dir}/externalscaler.proto (exit {code})")
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    return importlib.import_module("externalscaler_pb2"), importlib.import_module("externalscaler_pb2_grpc")


def metric_value(pb, pb_grpc, addr, name, namespace, metadata, timeout=15):
    """GetMetricSpec then GetMetrics, as KEDA does: ((metric name, target), value).

    KEDA's `pkg/scalers/external_scaler.go`: `GetMetricSpecForScaling` asks GetMetricSpec;
    `GetMetricsAndActivity` sends a `GetMetricsRequest` with the spec's metric name (its
    `sX-` prefix removed) and the same `ScaledObjectRef`, and reads `metricValueFloat`
    when it is above 0."""
    with grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        ref = pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata)
        spec = stub.GetMetricSpec(ref, timeout=timeout)
        (ms,) = spec.metricSpecs
        answer = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=ms.metricName),
                                 timeout=timeout)
        (mv,) = answer.metricValues
        return (ms.metricName, ms.targetSizeFloat), mv.metricValueFloat
