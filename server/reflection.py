"""gRPC server reflection under both names clients ask for: grpc.reflection.v1 (grpcurl, Postman and current
clients try it first) and grpc.reflection.v1alpha (older ones).

grpcio-reflection implements v1alpha only. The v1 service is the same protocol under a new package name: its
messages have the same fields and numbers, so v1alpha's servicer answers it, its messages read and written as
v1alpha's (the bytes are identical).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1_SERVICE_NAME, reflection.SERVICE_NAME)


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Reflection v1 and v1alpha on an aio server, listing service_names and themselves."""
    names = (*service_names, *SERVICE_NAMES)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
    }),))
