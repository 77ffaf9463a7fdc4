"""`wavenet-client`: list models, generate audio, re-voice a recording, against a running wavenet-server."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf

from client.api import Chunk, WaveNetClient
from wavenet.defaults import DEFAULT_PORT
from wavenet.v1 import wavenet_pb2 as pb

TOKEN_ENV = "WAVENET_TOKEN"


class Progress:
    """Seconds of audio received, real-time factor and time to first audio, on one stderr line: drawn from the
    call's first answer (nothing for a call the server refuses) and only where stderr is a terminal, unless
    `shown` says otherwise."""

    def __init__(self, sample_rate: int, total_seconds: float | None, shown: bool):
        self.sample_rate = sample_rate
        self.total_seconds = total_seconds
        self.shown = shown
        self.started = time.monotonic()
        self.first: float | None = None
        self.bar: Any = None

    def update(self, chunk: Chunk) -> None:
        now = time.monotonic()
        if self.first is None and len(chunk.audio):
            self.first = now - self.started
        if not self.shown:
            return
        if self.bar is None:
            from tqdm import tqdm

            total = "/{total:g}" if self.total_seconds else ""  # as a person writes it: 4, 4.025
            self.bar = tqdm(total=self.total_seconds, unit="s", file=sys.stderr,
                            bar_format=("{l_bar}{bar}| " if self.total_seconds else "")
                            + "{n:.2f}" + total + " s audio [{elapsed}{postfix}]")
        self.bar.update(len(chunk.audio) / self.sample_rate)
        if self.bar.total is not None and self.bar.n > self.bar.total:  # whole frames, or rounding: grow, not warn
            self.bar.total = self.bar.n
        seconds = (chunk.first_sample + len(chunk.audio)) / self.sample_rate
        ttfa = f"{1000 * self.first:.0f} ms" if self.first is not None else "-"
        self.bar.set_postfix_str(f"RTF {seconds / max(now - self.started, 1e-9):.2f}x, first audio {ttfa}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_shown(args: argparse.Namespace) -> bool:
    """--progress draws the bar, --quiet never; else only on a terminal (a log or a pipe gets no bar lines)."""
    return not args.quiet and (args.progress or sys.stderr.isatty())


def receive(chunks: Iterator[Chunk], progress: Progress) -> tuple[np.ndarray, Chunk | None]:
    """All audio of a call, in order; and its last chunk (with the summary). A call that ends early (Ctrl-C, an
    error) after some audio raises Cut with that audio, to be kept rather than thrown away."""
    parts, last = [], None
    try:
        for chunk in chunks:
            parts.append(chunk.audio)
            progress.update(chunk)
            last = chunk
    except (KeyboardInterrupt, grpc.RpcError) as exc:
        if sum(len(p) for p in parts):
            raise Cut(np.concatenate(parts), progress.sample_rate, exc) from exc
        raise
    finally:
        progress.close()  # an error then starts a line of its own
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), last


class Cut(Exception):
    """A call ended early, after `audio` had arrived."""

    def __init__(self, audio: np.ndarray, sample_rate: int, cause: BaseException):
        super().__init__(str(cause))
        self.audio, self.sample_rate, self.cause = audio, sample_rate, cause


def write_audio(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """Write the file whole or not at all: into a hidden file beside it, then renamed over it, so a failed write
    (a full disk) leaves an existing file as it was."""
    target = Path(path)
    partial = target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")
    try:
        sf.write(partial, audio, sample_rate, subtype="PCM_16")
        os.replace(partial, target)
    except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        partial.unlink(missing_ok=True)
        raise BadFile(f"cannot write {path}: {exc}") from None


def output_problem(path: str) -> str | None:
    """Why the output cannot be written (checked before any audio is made), or None."""
    if path.endswith(("/", os.sep)) or Path(path).is_dir():
        return f"cannot write {path}: it is a folder; give a file name"
    if Path(path).suffix.lower() not in (".wav", ".flac"):
        return f"output must be .wav or .flac, got {path}"
    folder = Path(path).parent
    if not folder.is_dir():
        return f"cannot write {path}: no folder {folder}"
    if not os.access(folder, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
        return f"cannot write {path}: permission denied"
    return None


def non_negative(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seed(text: str) -> int:
    """An argparse type: a 64-bit unsigned seed."""
    value = non_negative(text)
    if value >= 2**64:
        raise argparse.ArgumentTypeError(f"must be < 2**64, got {value}")
    return value


def timeout(text: str) -> float:
    """An argparse type: seconds > 0 and within gRPC's deadlines (nanoseconds in 64 bits)."""
    value = float(text)
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be > 0 and at most {MAX_TIMEOUT:g} s, got {text}")
    return value


MAX_TIMEOUT = 1e8  # seconds; gRPC fails a deadline past 2**63 ns (about 9.2e9 s) at once


def speaker(text: str) -> str:
    """An argparse type: a speaker's name, or an index >= 0 (resolved against the model by speaker_index)."""
    if text.lstrip("-").isdigit() and not 0 <= int(text) < 2**32:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 2**32, got {text}")
    return text


def speaker_index(info: pb.ModelInfo, speaker: str | None) -> int | None:
    """--speaker as the model's speaker index: given as the index or as the name `models` lists."""
    if speaker is None:
        return None
    if speaker.isdigit():
        return int(speaker)
    if speaker in info.speakers:
        return list(info.speakers).index(speaker)
    raise ValueError(f"--speaker: model {info.name} has no speaker {speaker!r} "
                     f"(have {', '.join(info.speakers) or 'none'}, or their index from 0)")


def cmd_models(client: WaveNetClient, args: argparse.Namespace) -> int:
    for info in client.models():
        speakers = ", ".join(f"{i} {name}" for i, name in enumerate(info.speakers)) or "-"
        print(f"{info.name}: {info.sample_rate} Hz, {info.classes} classes, receptive field {info.receptive_field} "
              f"samples, default temperature {info.default_temperature:g}; speakers: {speakers}")
        if info.HasField("features"):
            f = info.features
            print(f"  features: {f.channels} log-mel bands, hop {f.hop}, lookahead {f.lookahead_frames} frames")
            print(f"  {f.description}")
    return 0


def cmd_generate(client: WaveNetClient, args: argparse.Namespace) -> int:
    info = client.model(args.model)
    progress = Progress(info.sample_rate, args.seconds, progress_shown(args))
    audio, last = receive(client.generate(args.seconds, model=info.name, speaker=speaker_index(info, args.speaker),
                                          temperature=args.temperature, seed=args.seed), progress)
    write_audio(args.output, audio, info.sample_rate)
    report(args, len(audio) / info.sample_rate, last)
    return 0


def cmd_vocode(client: WaveNetClient, args: argparse.Namespace) -> int:
    if not Path(args.input).exists():
        raise BadFile(f"cannot read {args.input}: no such file")
    if Path(args.input).is_dir():
        raise BadFile(f"cannot read {args.input}: it is a folder")
    if Path(args.input).is_file() and Path(args.input).stat().st_size == 0:  # (a pipe's size says nothing)
        raise BadFile(f"cannot read {args.input}: empty file")
    try:
        recording, rate = sf.read(args.input, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise BadFile(f"cannot read {args.input}: {exc}") from None
    if not len(recording):
        raise BadFile(f"cannot vocode {args.input}: it holds no audio")
    info = client.model(args.model)
    if not args.quiet and (notice := conversion_notice(recording.shape[1], rate, info.sample_rate)):
        print(f"wavenet-client: {args.input}: {notice}", file=sys.stderr)
    speaker = speaker_index(info, args.speaker)
    try:
        chunks = client.vocode(recording, rate, model=info.name, realtime=args.realtime, speaker=speaker,
                               temperature=args.temperature, seed=args.seed)
    except ValueError as exc:  # a recording shorter than one frame, a model without features
        raise BadFile(f"cannot vocode {args.input}: {exc}") from None
    audio, last = receive(chunks, Progress(info.sample_rate, len(recording) / rate, progress_shown(args)))
    write_audio(args.output, audio, info.sample_rate)
    report(args, len(audio) / info.sample_rate, last)
    return 0


def conversion_notice(channels: int, rate: int, model_rate: int) -> str | None:
    """What happens to a recording before its frames are computed, in a line; None when nothing does."""
    steps = ([f"{channels} channels mixed to mono"] if channels > 1 else []) + \
            ([f"resampled from {rate:,} Hz to {model_rate:,} Hz"] if rate != model_rate else [])
    return ", ".join(steps) if steps else None


def report(args: argparse.Namespace, seconds: float, last: Chunk | None) -> None:
    if args.quiet or last is None or last.summary is None:
        return
    s = last.summary
    print(f"wrote {args.output}: {seconds:.2f} s, real-time factor {s.real_time_factor:.2f}, first audio after "
          f"{1000 * s.time_to_first_audio_seconds:.0f} ms, seed {s.seed}", file=sys.stderr)


class BadFile(Exception):
    """An input file that cannot be used."""


def connection_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes. They go before or after the command: the command's copies have no
    defaults (argparse.SUPPRESS), so they set a value only when given."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--server", default=default(f"localhost:{DEFAULT_PORT}"),
                   help=f"host:port of the wavenet-server (default localhost:{DEFAULT_PORT}); or several: "
                        "dns:///name:port or host:port,host:port,... (calls spread round-robin, a refused one tried "
                        "on the next)")
    p.add_argument("--timeout", type=timeout, default=default(None), help="deadline per call, seconds (default: none)")
    p.add_argument("--quiet", action="store_true", default=default(False),
                   help="no progress bar, notices or report: errors only")
    p.add_argument("--progress", action="store_true", default=default(False),
                   help="draw the progress bar even when stderr is not a terminal (default: only on a terminal)")
    p.add_argument("--tls", action="store_true", default=default(False),
                   help="connect with TLS (system roots unless --ca; default: plaintext)")
    p.add_argument("--ca", default=default(None),
                   help="PEM file of the CA that signed the server's certificate (implies --tls)")
    p.add_argument("--token", default=default(os.environ.get(TOKEN_ENV)), help=f"bearer token (default ${TOKEN_ENV})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="wavenet-client", description=__doc__)
    connection_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    connection_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", required=True, help="what to do (COMMAND --help for its options)")
    sub.add_parser("models", help="list the server's models", parents=[common])

    def sampling(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", default="", help="model name (default: the server's default)")
        q.add_argument("--speaker", type=speaker, default=None,
                       help="a speaker's name or its index from 0, as `models` lists them (default: the first)")
        q.add_argument("--temperature", type=float, default=None,
                       help="sampling temperature: lower is plainer, 0 always the likeliest class (default: the "
                            "model's, as `models` lists)")
        q.add_argument("--seed", type=seed, default=None, help="same seed, same audio (default: a random one)")
        q.add_argument("-o", "--output", required=True, help="output .wav or .flac (required)")

    g = sub.add_parser("generate", help="free-running audio", parents=[common])
    g.add_argument("--seconds", type=float, required=True, help="audio to generate (required; the server sets a limit)")
    sampling(g)
    v = sub.add_parser("vocode", help="re-voice a recording through its log-mel frames", parents=[common])
    v.add_argument("input", help="a recording soundfile can read (WAV, FLAC, OGG, ...), any rate, mono or not")
    v.add_argument("--realtime", action="store_true",
                   help="send the input paced like a live feed (default: as fast as it goes)")
    sampling(v)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    commands = {"models": cmd_models, "generate": cmd_generate, "vocode": cmd_vocode}
    output = getattr(args, "output", None)
    problem = output_problem(output) if output is not None else None
    if problem is not None:
        print(f"wavenet-client: {problem}", file=sys.stderr)
        return 2
    try:
        ca = Path(args.ca).read_bytes() if args.ca else None
    except OSError as exc:
        print(f"wavenet-client: cannot read --ca {args.ca}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        client = WaveNetClient(args.server, timeout=args.timeout, tls=args.tls, ca=ca, token=args.token)
    except (ValueError, OSError) as exc:  # an address that does not parse or resolve
        print(f"wavenet-client: {exc}", file=sys.stderr)
        return 2
    with client:
        try:
            return commands[args.command](client, args)
        except BadFile as exc:
            print(f"wavenet-client: {exc}", file=sys.stderr)
            return 2
        except Cut as cut:  # keep what arrived: a long stream interrupted is not a stream lost
            try:
                write_audio(args.output, cut.audio, cut.sample_rate)
            except BadFile as exc:
                print(f"wavenet-client: {exc}", file=sys.stderr)
                return 2
            kept = f"wrote the {len(cut.audio) / cut.sample_rate:.2f} s received to {args.output}"
            if isinstance(cut.cause, KeyboardInterrupt):
                print(f"wavenet-client: interrupted: {kept}", file=sys.stderr)
                return INTERRUPTED
            print(f"wavenet-client: the call ended early, {rpc_error(cut.cause)}: {kept}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("wavenet-client: interrupted", file=sys.stderr)
            return INTERRUPTED
        except grpc.RpcError as exc:
            if rpc_code(exc) == grpc.StatusCode.UNAVAILABLE:
                print(f"wavenet-client: cannot reach a server at {args.server}: {rpc_details(exc)}", file=sys.stderr)
            else:
                print(f"wavenet-client: {rpc_error(exc)}", file=sys.stderr)
            return 1
        except (KeyError, ValueError) as exc:
            print(f"wavenet-client: {exc.args[0] if exc.args else exc}", file=sys.stderr)  # a KeyError's str quotes
            return 2


INTERRUPTED = 130  # a shell's status for a command ended by SIGINT


def rpc_code(exc: BaseException) -> grpc.StatusCode | None:
    return exc.code() if hasattr(exc, "code") else None


def rpc_details(exc: BaseException) -> str:
    return exc.details() if hasattr(exc, "details") else str(exc)


def rpc_error(exc: BaseException) -> str:
    """"CODE: details" of a failed call."""
    code = rpc_code(exc)
    return f"{code.name if code else 'error'}: {rpc_details(exc)}"


if __name__ == "__main__":
    sys.exit(main())
