"""Bearer-token authentication: every method but health needs `authorization: Bearer <token>` with a known token."""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

TOKENS_ENV = "WAVENET_TOKENS"  # comma-separated tokens, besides --tokens-file
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # probes need no token


def load_tokens(path: str | None, environ: dict[str, str] | None = None) -> frozenset[str]:
    """Tokens from a file (one per line; a # at a line's start or after a space starts a comment, one inside a token
    is the token's) and the WAVENET_TOKENS variable; empty means no auth. A file with no token is an error, not an
    open server."""
    tokens: set[str] = set()
    if path:
        lines = (re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip() for line in Path(path).read_text().splitlines())
        tokens = {line for line in lines if line}
        if not tokens:
            raise ValueError(f"--tokens-file {path}: no token in it (an empty list would leave the server open)")
    env = (os.environ if environ is None else environ).get(TOKENS_ENV, "")
    tokens.update(t.strip() for t in env.split(",") if t.strip())
    return frozenset(tokens)


def bearer(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an `authorization: Bearer ...` header, if any (the scheme in any case, as RFC 7235 has it)."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def is_known(token: str | None, tokens: frozenset[str]) -> bool:
    """Constant-time membership, so a wrong token's timing says nothing about the right ones."""
    if token is None:
        return False
    return any(hmac.compare_digest(token.encode(), known.encode()) for known in tokens)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Refuses calls without a known token with UNAUTHENTICATED, before any handler runs."""

    def __init__(self, tokens: frozenset[str]):
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if is_known(bearer(details.invocation_metadata), self.tokens):  # type: ignore[attr-defined]
            return handler
        return refusal(handler)


def refusal(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends the call with UNAUTHENTICATED."""

    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: a valid 'Bearer <token>' is required")

    async def deny_stream(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await deny(_request, context)
        yield  # pragma: no cover - never reached; makes this an async generator

    serializers = {"request_deserializer": handler.request_deserializer,
                   "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **serializers)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **serializers)
