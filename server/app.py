"""serve(): the gRPC server with the WaveNet service, health and reflection, until SIGTERM; then a graceful drain."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from models.generate.compiled import engine_description
from server import reflection
from server.auth import TokenAuth
from server.loading import LoadedModel
from server.metrics import Metrics
from server.servicer import ABORT_SECONDS, SERVICE_NAME, WaveNetService, add_service
from server.settings import ServeOptions

log = logging.getLogger("wavenet.server")
END_SECONDS = ABORT_SECONDS + 1.0  # after the grace: how long the streams still running have to say UNAVAILABLE


async def serve(models: dict[str, LoadedModel], options: ServeOptions, metrics: Metrics,
                on_ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None) -> None:
    """Run until stop is set (or SIGTERM / SIGINT), then refuse new calls and drain for options.grace seconds."""
    limits = options.limits
    grpc_options = [("grpc.max_receive_message_length", limits.max_message_bytes),
                    ("grpc.max_send_message_length", limits.max_message_bytes),
                    ("grpc.so_reuseport", 0)]  # on by default: a second server on a taken port shared its calls
    if options.max_connection_age > 0:  # clients reconnect (and re-resolve) in time; a live stream is never cut
        grpc_options += [("grpc.max_connection_age_ms", round(1000 * options.max_connection_age)),
                         ("grpc.max_connection_age_grace_ms", 2**31 - 1)]
    interceptors = [TokenAuth(options.tokens)] if options.tokens else []
    server = grpc.aio.server(options=grpc_options, interceptors=interceptors)
    servicer = WaveNetService(models, limits, metrics)
    add_service(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable((SERVICE_NAME, health.SERVICE_NAME), server)
    address = host_port(options.host, options.port)
    try:  # gRPC reports a port it cannot bind either as 0 or (newer versions) as RuntimeError
        if options.tls_cert is not None and options.tls_key is not None:
            credentials = grpc.ssl_server_credentials([(options.tls_key, options.tls_cert)])
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from None
    if not bound:
        raise OSError(f"cannot listen on {address}")
    for model in models.values():
        model.scheduler.start()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    engines = {name: {**engine_description(model.scheduler.generator), "max_streams": model.scheduler.max_streams}
               for name, model in models.items()}
    log.info(json.dumps({"event": "serving", "address": host_port(options.host, bound), "models": engines,
                         "tls": options.tls_cert is not None, "auth": bool(options.tokens)}))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    if on_ready is not None:
        on_ready(bound)
    await stop.wait()
    await drain(server, servicer, health_servicer, models, options.grace)


async def drain(server: grpc.aio.Server, servicer: WaveNetService, health_servicer: health.aio.HealthServicer,
                models: dict[str, LoadedModel], grace: float) -> None:
    """New calls are refused with UNAVAILABLE before any answer, which a client retries at another replica; running
    streams have the grace to finish, and those still running then end with UNAVAILABLE too. Only then does gRPC
    stop, cancelling whatever could not say so within END_SECONDS."""
    log.info(json.dumps({"event": "draining", "grace_seconds": grace}))
    servicer.draining = True
    await health_servicer.enter_graceful_shutdown()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while any(model.scheduler.active for model in models.values()) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    for model in models.values():
        model.scheduler.shut_down()
    await server.stop(END_SECONDS)
    for model in models.values():
        await model.scheduler.stop()


def host_port(host: str, port: int) -> str:
    """host:port, an IPv6 literal in brackets ([::]:50051) however --host gave it."""
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
