"""Docker HEALTHCHECK: ask the server's standard grpc.health.v1 service; exit 0 only when it answers SERVING.

    python /opt/wavenet/healthcheck.py [HOST:PORT]     (default 127.0.0.1:$WAVENET_PORT, else :50051)

With WAVENET_TLS_CERT set (the server speaks TLS only) it connects with TLS, trusting WAVENET_TLS_CA (default: the
server's own certificate) and checking the name WAVENET_TLS_NAME (default localhost). Health needs no token.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else f"127.0.0.1:{os.environ.get('WAVENET_PORT') or 50051}"
    timeout = float(os.environ.get("WAVENET_HEALTH_TIMEOUT") or 3)
    cert = os.environ.get("WAVENET_TLS_CERT")
    if cert:
        with open(os.environ.get("WAVENET_TLS_CA") or cert, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        name = os.environ.get("WAVENET_TLS_NAME") or "localhost"
        channel = grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", name)])
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                 timeout=timeout)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
