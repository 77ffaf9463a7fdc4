"""`wavenet-server`: flags to options, the models loaded, then serve() (server/app.py) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import ssl
import sys
from pathlib import Path

from models.cpus import default_threads
from models.generate.compiled import engine_module
from models.wavenet import CheckpointError
from server.app import serve
from server.auth import TOKENS_ENV, load_tokens
from server.loading import load_model, model_spec, model_specs
from server.metrics import Metrics
from server.settings import (
    DEFAULT_HOST,
    DEFAULT_MODEL,
    DEFAULT_PORT,
    GRACE_SECONDS,
    MIN_MESSAGE_BYTES,
    STREAMS_PER_CPU,
    Limits,
    ServeOptions,
)

log = logging.getLogger("wavenet.server")


LOG_LEVELS = sorted(logging.getLevelNamesMapping())  # WARN and FATAL too, as logging takes them


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wavenet-server", description="Serve WaveNet models over gRPC.")
    p.add_argument("--model", action="append", metavar="[NAME=]PATH",
                   help=f"a checkpoint to serve (repeatable; the first is the default; default {DEFAULT_MODEL})")
    p.add_argument("--model-dir", metavar="DIR",
                   help="serve every *.pt in DIR too, each named by its file name; its default.pt replaces the "
                        "bundled model when no --model is given; a file whose name a --model has is left out")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--max-streams", type=int, default=None,
                   help="active streams per model (default: per CPU this process may use, by the engine this CPU "
                        f"runs: {', '.join(f'{n} with {v}' for v, n in STREAMS_PER_CPU.items())}; else 1 in all; "
                        "measured at the engine's default precision, bf16: with --precision fp32 set it yourself)")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics on this port (0: off)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="weights of the compiled generator: bf16 is about 3x faster; auto: bf16 where the CPU has it")
    p.add_argument("--grace", type=float, default=GRACE_SECONDS, help="seconds to let streams finish on SIGTERM")
    defaults = Limits()
    p.add_argument("--max-seconds", type=float, default=defaults.max_seconds, help="audio per request")
    p.add_argument("--max-frames", type=int, default=defaults.max_frames, help="feature frames per request")
    p.add_argument("--max-message-bytes", type=int, default=defaults.max_message_bytes)
    p.add_argument("--idle-seconds", type=float, default=defaults.idle_seconds,
                   help="end a call that receives no input and sends no audio this long (OUT_OF_RANGE)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS only (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tokens-file", help=f"bearer tokens, one per line (also ${TOKENS_ENV}, comma-separated); "
                                         "with any token set, calls need one (health stays open)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help="any case (WAVENET_LOG_LEVEL in the container)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        options = options_from(args)
        models = {}
        specs, notes = model_specs(args.model, args.model_dir)
        for note in notes:
            log.warning(note)
        for spec in specs:
            if (name := model_spec(spec)[0]) in models:  # the later would replace the earlier without a word
                raise ValueError(f"--model {spec}: a model named {name!r} is already loaded; name it (NAME=PATH)")
            loaded = load_model(spec, max_streams(args, engine_variant()),
                                None if args.precision == "auto" else args.precision)
            models[loaded.name] = loaded
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"wavenet-server: {exc}", file=sys.stderr)
        return 2
    metrics = Metrics()
    try:
        if args.metrics_port:
            metrics.serve(args.metrics_port, args.host.strip("[]"))
        asyncio.run(serve(models, options, metrics))
    except OSError as exc:
        print(f"wavenet-server: {exc}", file=sys.stderr)
        return 2
    return 0


def engine_variant() -> str:
    """The compiled engine variant this CPU runs, or "reference" where none is built (as the start-up log names it)."""
    module = engine_module()
    return str(module.VARIANT) if module is not None else "reference"


def max_streams(args: argparse.Namespace, engine: str) -> int:
    """--max-streams, or the streams per CPU that the engine keeps in real time for each CPU this process may use
    (at least 1)."""
    if args.max_streams is None:
        return max(1, STREAMS_PER_CPU.get(engine, 0) * default_threads())
    if args.max_streams < 1:
        raise ValueError(f"--max-streams must be at least 1, got {args.max_streams}")
    return args.max_streams


def options_from(args: argparse.Namespace) -> ServeOptions:
    """The server's options from its flags, reading the TLS files and tokens."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    for flag, value, ok, rule in (
        ("--port", args.port, 0 <= args.port <= 65535, "in [0, 65535]"),
        ("--metrics-port", args.metrics_port, 0 <= args.metrics_port <= 65535, "in [0, 65535] (0: off)"),
        ("--max-seconds", args.max_seconds, 0 < args.max_seconds < math.inf, "a finite number > 0"),
        ("--max-frames", args.max_frames, args.max_frames >= 1, ">= 1"),
        ("--max-message-bytes", args.max_message_bytes, args.max_message_bytes >= MIN_MESSAGE_BYTES,
         f">= {MIN_MESSAGE_BYTES}"),
        ("--idle-seconds", args.idle_seconds, args.idle_seconds > 0, "> 0"),
        ("--grace", args.grace, 0 <= args.grace < math.inf, "a finite number >= 0"),
    ):
        if not ok:  # NaN fails every rule
            raise ValueError(f"{flag} must be {rule}, got {value}")
    tls_cert = Path(args.tls_cert).read_bytes() if args.tls_cert else None  # a missing file: OSError naming it
    tls_key = Path(args.tls_key).read_bytes() if args.tls_key else None
    if args.tls_cert:
        try:  # a key that is not the certificate's made gRPC say only "cannot listen"
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(args.tls_cert, args.tls_key)
        except ssl.SSLError as exc:
            raise ValueError(f"--tls-cert {args.tls_cert} / --tls-key {args.tls_key}: not a certificate and its "
                             f"key ({exc.reason or exc})") from None
    limits = Limits(max_seconds=args.max_seconds, max_frames=args.max_frames, max_message_bytes=args.max_message_bytes,
                    idle_seconds=args.idle_seconds)
    return ServeOptions(host=args.host, port=args.port, limits=limits, grace=args.grace, tls_cert=tls_cert,
                        tls_key=tls_key, tokens=load_tokens(args.tokens_file))


if __name__ == "__main__":
    sys.exit(main())
