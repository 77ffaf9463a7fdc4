"""`wavenet-server`: flags to options, the models loaded, then serve() (server/app.py) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import ssl
import sys
import time
from pathlib import Path

from models.generate.compiled import engine_description
from models.wavenet import CheckpointError
from server.app import serve
from server.auth import TOKENS_ENV, load_tokens
from server.capacity import HEADROOM, calibrate
from server.loading import LoadedModel, load_model, model_spec, model_specs
from server.metrics import Metrics
from server.settings import (
    DEFAULT_HOST,
    DEFAULT_MODEL,
    DEFAULT_PORT,
    GRACE_SECONDS,
    MIN_MESSAGE_BYTES,
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
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"gRPC port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--max-streams", type=streams_flag, default=AUTO, metavar="N|auto",
                   help="active streams per model; callers past it get RESOURCE_EXHAUSTED at once. auto (the "
                        "default): as many as the engine keeps in real time here, measured at start-up (a second "
                        f"or two per model, logged; {HEADROOM}x real time each in the engine alone)")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics on this port (default 0: off)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="weights of the compiled generator: bf16 is about 3x faster; auto (the default): bf16 "
                        "where the CPU has it")
    p.add_argument("--grace", type=float, default=GRACE_SECONDS,
                   help=f"seconds to let streams finish on SIGTERM (default {GRACE_SECONDS:g})")
    p.add_argument("--max-connection-age", type=float, default=0.0, metavar="SECONDS",
                   help="ask each client connection to reconnect after this long (0, the default: never), so "
                        "clients that resolve a name with several replicas find new ones; live streams run on")
    defaults = Limits()
    p.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                   help=f"audio per request, seconds (default {defaults.max_seconds:g})")
    p.add_argument("--max-frames", type=int, default=defaults.max_frames,
                   help=f"feature frames per request (default {defaults.max_frames})")
    p.add_argument("--max-message-bytes", type=int, default=defaults.max_message_bytes,
                   help=f"largest gRPC message either way (default {defaults.max_message_bytes})")
    p.add_argument("--idle-seconds", type=float, default=defaults.idle_seconds,
                   help="end a call that receives no input and sends no audio this long (OUT_OF_RANGE; default "
                        f"{defaults.idle_seconds:g} s)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS only (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tokens-file", help=f"bearer tokens, one per line (also ${TOKENS_ENV}, comma-separated); "
                                         "with any token set, calls need one (health stays open)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                   help="any case (default INFO; WAVENET_LOG_LEVEL in the container)")
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
            loaded = load_model(spec, 1 if args.max_streams == AUTO else args.max_streams,
                                None if args.precision == "auto" else args.precision)
            models[loaded.name] = loaded
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"wavenet-server: {exc}", file=sys.stderr)
        return 2
    try:
        if args.max_streams == AUTO:  # once every model has loaded: a bad one fails the start at once
            for loaded in models.values():
                loaded.scheduler.max_streams = measured_capacity(loaded)
    except (RuntimeError, ValueError) as exc:
        print(f"wavenet-server: measuring the capacity (--max-streams auto) failed: {exc}; give --max-streams",
              file=sys.stderr)
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


AUTO = "auto"


def streams_flag(text: str) -> int | str:
    """An argparse type: "auto", or a whole number of streams >= 1."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number of streams or auto, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def measured_capacity(model: LoadedModel) -> int:
    """The streams the model's engine keeps in real time on this machine (server/capacity.py), logged."""
    started = time.perf_counter()
    streams, rates = calibrate(model.scheduler.generator)
    rate = model.cfg.sample_rate
    log.info(json.dumps({"event": "capacity", "model": model.name, "max_streams": streams, "headroom": HEADROOM,
                         "real_time_factor_by_streams": {n: round(r / n / rate, 2) for n, r in sorted(rates.items())},
                         "seconds": round(time.perf_counter() - started, 2)}))
    if rates[1] < HEADROOM * rate:
        log.warning(f"model {model.name}: even one stream is made at only {rates[1] / rate:.2f}x real time here "
                    f"({engine_description(model.scheduler.generator)}): admitting 1")
    return streams


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
        ("--max-connection-age", args.max_connection_age, 0 <= args.max_connection_age < math.inf,
         "a finite number >= 0 (0: off)"),
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
                        tls_key=tls_key, tokens=load_tokens(args.tokens_file),
                        max_connection_age=args.max_connection_age)


if __name__ == "__main__":
    sys.exit(main())
