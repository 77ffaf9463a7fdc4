"""wavenet-client driven in-process against a real server; the client library's own calls."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from client.api import ITERATOR_FAILED, Chunk, WaveNetClient
from client.cli import Progress, main
from tests.serving import LIMITS, MAX_STREAMS, RunningServer, wait_for
from tests.tiny import TINY_MEL
from wavenet.audio import recording_frames
from wavenet.codec import mel_spec


def test_models_lists_the_model(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", server.address, "models"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 1600 Hz" in out and "alice" in out and "hop 4" in out


def test_generate_writes_a_file_soundfile_reads(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "gen.wav"
    assert main(["--server", server.address, "--quiet", "generate", "--seconds", "0.5", "--speaker", "1",
                 "--seed", "5", "-o", str(out)]) == 0
    audio, rate = sf.read(out)
    assert rate == TINY_MEL.sample_rate and len(audio) == 800 and np.std(audio) > 0
    again = tmp_path / "again.wav"  # the connection options may also follow the command
    assert main(["generate", "--seconds", "0.5", "--speaker", "1", "--seed", "5", "-o", str(again),
                 "--server", server.address, "--quiet"]) == 0
    assert np.array_equal(sf.read(again)[0], audio)  # same seed, same audio


@pytest.mark.parametrize("realtime", [False, True])
def test_vocode_revoices_a_recording(server: RunningServer, tmp_path: Path, realtime: bool) -> None:
    rate = 8000  # not the model's rate: the client resamples as training did
    t = np.arange(int(0.4 * rate)) / rate
    recording = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    src, out = tmp_path / "in.wav", tmp_path / "out.flac"
    sf.write(src, recording, rate)
    args = ["--server", server.address, "--quiet", "vocode", str(src), "-o", str(out), "--seed", "1"]
    assert main(args + (["--realtime"] if realtime else [])) == 0
    audio, out_rate = sf.read(out)
    assert out_rate == TINY_MEL.sample_rate
    assert len(audio) == len(recording_frames(recording, rate, TINY_MEL)) * TINY_MEL.hop


def test_progress_report_goes_to_stderr(server: RunningServer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", server.address, "generate", "--seconds", "0.2", "-o", str(tmp_path / "a.wav")]) == 0
    err = capsys.readouterr().err
    assert "real-time factor" in err and "first audio" in err and "seed" in err


def test_server_down_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--server", "127.0.0.1:1", "--timeout", "5", "generate", "--seconds", "1",
                 "-o", str(tmp_path / "x.wav")])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach a server at 127.0.0.1:1" in err and "Traceback" not in err


def test_bad_input_file_and_bad_request(server: RunningServer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file at all")
    assert main(["--server", server.address, "vocode", str(bad), "-o", str(tmp_path / "o.wav")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["--server", server.address, "generate", "--seconds", "1", "--speaker", "9",
                 "-o", str(tmp_path / "o.wav")]) == 1
    assert "INVALID_ARGUMENT: speaker" in capsys.readouterr().err
    assert main(["--server", server.address, "generate", "--seconds", "1", "-o", str(tmp_path / "o.mp3")]) == 2


def test_an_output_that_cannot_be_written_is_refused_before_generating(model_path: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    own = RunningServer([f"tiny={model_path}"], MAX_STREAMS, LIMITS)  # its own server: no other test's calls counted

    def generate_calls() -> float:
        return sum(own.metrics.registry.get_sample_value("wavenet_requests_total",
                                                         {"method": "Generate", "code": code}) or 0.0
                   for code in ("OK", "CANCELLED", "INVALID_ARGUMENT"))

    try:
        missing = tmp_path / "no-such-folder" / "x.wav"
        assert main(["--server", own.address, "generate", "--seconds", "0.2", "-o", str(missing)]) == 2
        assert capsys.readouterr().err.strip() == f"wavenet-client: cannot write {missing}: no folder {missing.parent}"
        # A call of our own, counted once it has ended, orders the count: a call the CLI made would be counted first.
        with WaveNetClient(own.address) as client:
            list(client.generate(samples=40))
        wait_for(lambda: generate_calls() >= 1)
        assert generate_calls() == 1  # ours alone: the CLI was refused before any call
    finally:
        own.stop()


def test_a_failed_write_is_one_line_and_exit_2(server: RunningServer, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(file: object, *args: object, **kwargs: object) -> None:
        Path(str(file)).write_bytes(b"RIFF")  # part of a header, then the disk is full
        raise OSError(28, "No space left on device")

    out = tmp_path / "x.wav"
    assert main(["--server", server.address, "--quiet", "generate", "--seconds", "0.2", "-o", str(out)]) == 0
    before = out.read_bytes()
    monkeypatch.setattr(sf, "write", full_disk)
    assert main(["--server", server.address, "--quiet", "generate", "--seconds", "0.2", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wavenet-client: cannot write {out}: ") and "No space left" in err
    assert "Traceback" not in err
    assert out.read_bytes() == before and list(tmp_path.iterdir()) == [out]  # the old file whole, nothing left


def test_negative_seed_or_speaker_is_a_usage_error_naming_the_option(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--seed", "--speaker"):
        with pytest.raises(SystemExit) as exit_:
            main(["generate", "--seconds", "1", option, "-3", "-o", str(tmp_path / "x.wav")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}: must be >= 0" in err and "got -3" in err


def test_an_error_after_the_progress_bar_starts_gets_a_line_of_its_own(server: RunningServer, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", server.address, "generate", "--seconds", "-1", "-o", str(tmp_path / "x.wav")]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("wavenet-client: INVALID_ARGUMENT: seconds")


def test_an_unknown_model_is_named_without_quotes(server: RunningServer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", server.address, "generate", "--seconds", "1", "--model", "nope",
                 "-o", str(tmp_path / "x.wav")]) == 2
    assert capsys.readouterr().err.startswith("wavenet-client: no model named 'nope' (have tiny")


def test_library_feature_spec_round_trips_and_synthesize_streams(server: RunningServer) -> None:
    with WaveNetClient(server.address) as client:
        info = client.model()
        assert mel_spec(info.features) == TINY_MEL
        frames = np.random.default_rng(0).normal(size=(30, TINY_MEL.n_mels)).astype(np.float32)
        chunks = list(client.synthesize([frames[:10], frames[10:]], seed=2))
        assert sum(len(c.audio) for c in chunks) == 30 * TINY_MEL.hop
        assert chunks[-1].summary is not None and chunks[-1].summary.seed == 2


def test_progress_past_its_estimate_raises_no_warning() -> None:
    """Audio longer than the estimated total (a vocoded file rounded up to whole frames) grows the bar quietly."""
    progress = Progress(sample_rate=16000, total_seconds=1.0, shown=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for first in range(0, 16100, 3220):
            progress.update(Chunk(first_sample=first, audio=np.zeros(3220, np.float32), summary=None))
        progress.close()
    assert progress.bar.total == pytest.approx(16100 / 16000)


def seeded_generate(server: RunningServer, out: Path, *extra: str) -> int:
    return main(["--server", server.address, "--quiet", "generate", "--seconds", "2", "--seed", "7", "-o", str(out),
                 *extra])


def stop_after(chunks: int, error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client's progress raise `error` (as Ctrl-C or a failed call would) after `chunks` chunks."""
    update = Progress.update
    seen = []

    def update_then_stop(self: Progress, chunk: Chunk) -> None:
        update(self, chunk)
        seen.append(chunk)
        if len(seen) == chunks:
            raise error

    monkeypatch.setattr(Progress, "update", update_then_stop)


class Gone(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "Socket closed"


@pytest.mark.parametrize("error, code, message", [
    (KeyboardInterrupt(), 130, "wavenet-client: interrupted: wrote the "),
    (Gone(), 1, "wavenet-client: the call ended early, UNAVAILABLE: Socket closed: wrote the "),
])
def test_a_call_cut_short_keeps_the_audio_received(server: RunningServer, tmp_path: Path, error: BaseException,
                                                   code: int, message: str, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C, or the server going away, after 3 chunks: they are written, and they are the audio the whole call
    makes (same seed), not a server that cannot be reached."""
    whole = tmp_path / "whole.wav"
    assert seeded_generate(server, whole) == 0
    stop_after(3, error, monkeypatch)
    cut = tmp_path / "cut.wav"
    assert seeded_generate(server, cut) == code
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err and "cannot reach" not in err
    got, expected = sf.read(cut)[0], sf.read(whole)[0]
    assert 0 < len(got) < len(expected) and np.array_equal(got, expected[: len(got)])


@pytest.mark.parametrize("output", ["folder", "folder/", "x.wav/"])
def test_a_folder_as_the_output_is_refused_before_generating(tmp_path: Path, output: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "folder").mkdir()
    path = f"{tmp_path}/{output}"
    assert main(["--server", "127.0.0.1:1", "generate", "--seconds", "1", "-o", path]) == 2  # before connecting
    assert capsys.readouterr().err.strip() == f"wavenet-client: cannot write {path}: it is a folder; give a file name"


def test_a_missing_or_too_short_recording_is_named(server: RunningServer, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.wav"
    assert main(["--server", server.address, "vocode", str(missing), "-o", str(tmp_path / "o.wav")]) == 2
    assert capsys.readouterr().err.strip() == f"wavenet-client: cannot read {missing}: no such file"
    assert main(["--server", server.address, "vocode", str(tmp_path), "-o", str(tmp_path / "o.wav")]) == 2
    assert capsys.readouterr().err.strip() == f"wavenet-client: cannot read {tmp_path}: it is a folder"
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(TINY_MEL.hop - 1), TINY_MEL.sample_rate)
    assert main(["--server", server.address, "vocode", str(short), "-o", str(tmp_path / "o.wav")]) == 2
    assert "is shorter than one frame" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_a_recording_from_a_pipe_is_vocoded(server: RunningServer, tmp_path: Path) -> None:
    """Not a regular file (/dev/stdin, <(sox ...)): soundfile reads it as before."""
    import os
    import threading

    src, fifo = tmp_path / "src.wav", tmp_path / "pipe.wav"
    t = np.arange(TINY_MEL.hop * 20) / TINY_MEL.sample_rate
    sf.write(src, 0.3 * np.sin(2 * np.pi * 100 * t), TINY_MEL.sample_rate, subtype="FLOAT")
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(src.read_bytes()), daemon=True)  # as `cat src > fifo`
    writer.start()
    out = tmp_path / "o.wav"
    assert main(["--server", server.address, "--quiet", "vocode", str(fifo), "-o", str(out)]) == 0
    writer.join(10)
    assert len(sf.read(out)[0]) == 20 * TINY_MEL.hop


def test_a_speaker_is_given_by_name_or_index(server: RunningServer, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    by_name, by_index = tmp_path / "name.wav", tmp_path / "index.wav"
    assert seeded_generate(server, by_name, "--speaker", "bob") == 0
    assert seeded_generate(server, by_index, "--speaker", "1") == 0
    assert np.array_equal(sf.read(by_name)[0], sf.read(by_index)[0])
    assert seeded_generate(server, tmp_path / "x.wav", "--speaker", "carol") == 2
    assert "--speaker: model tiny has no speaker 'carol' (have alice, bob" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, problem", [("--seed", str(2**64), "must be < 2**64"),
                                                     ("--speaker", str(2**32), "must be >= 0 and < 2**32"),
                                                     ("--timeout", "0", "must be > 0"),
                                                     ("--timeout", "-1", "must be > 0"),
                                                     ("--timeout", "inf", "must be > 0 and at most 1e+08 s"),
                                                     ("--timeout", "1e10", "must be > 0 and at most 1e+08 s")])
def test_out_of_range_seed_or_timeout_is_a_usage_error_naming_the_option(
        tmp_path: Path, option: str, value: str, problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--seconds", "1", f"{option}={value}", "-o", str(tmp_path / "x.wav")])
    assert exit_.value.code == 2 and f"argument {option}: {problem}" in capsys.readouterr().err


def test_a_front_end_failure_reaches_the_caller_and_frees_the_slot(server: RunningServer) -> None:
    """An exception from the frames iterator is raised as itself (gRPC alone would say UNKNOWN and drop it)."""
    class FrontEndDown(Exception):
        pass

    def frames() -> Iterator[np.ndarray]:
        yield np.zeros((8, TINY_MEL.n_mels), np.float32)
        raise FrontEndDown("the front end crashed")

    with WaveNetClient(server.address) as client, pytest.raises(FrontEndDown, match="crashed") as raised:
        for _ in client.synthesize(frames(), seed=1):
            pass
    assert isinstance(raised.value.__cause__, grpc.RpcError)
    wait_for(lambda: server.models["tiny"].scheduler.active == 0)


class EndedCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A call that ended with this status, as grpcio raises it to the reader of its responses."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details
        self.cancelled = False

    def __iter__(self) -> EndedCall:
        return self

    def __next__(self) -> None:
        raise self

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def initial_metadata(self) -> None: ...
    def trailing_metadata(self) -> None: ...
    def is_active(self) -> bool: return False
    def time_remaining(self) -> None: ...
    def add_callback(self, callback: object) -> bool: return False


@pytest.mark.parametrize("details, raised", [(ITERATOR_FAILED, "FrontEndDown"),
                                             ("frames.values: 24 values is not 8 x 8", "EndedCall")])
def test_the_front_ends_exception_replaces_only_the_status_it_caused(details: str, raised: str) -> None:
    """A front end that failed after the server had ended the call (INVALID_ARGUMENT) must not hide that status."""
    class FrontEndDown(Exception):
        pass

    call = EndedCall(grpc.StatusCode.UNKNOWN if details == ITERATOR_FAILED else grpc.StatusCode.INVALID_ARGUMENT,
                     details)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - which one is the point
        list(WaveNetClient._chunks(lambda: call, [FrontEndDown("the front end failed")]))
    assert type(caught.value).__name__ == raised and call.cancelled


def test_blocks_of_any_length_give_the_same_audio(server: RunningServer) -> None:
    """Empty blocks are skipped and one over the message limit is split: the audio is that of small blocks."""
    frames = np.random.default_rng(4).normal(size=(300, TINY_MEL.n_mels)).astype(np.float32)
    limit = 4096  # bytes: 300 frames of 8 bands make one message of about 9,600

    def audio(blocks: list[np.ndarray]) -> np.ndarray:
        with WaveNetClient(server.address, max_message_bytes=limit) as client:
            return np.concatenate([c.audio for c in client.synthesize(blocks, seed=9, chunk_samples=200)])

    whole = audio([frames[:0], frames, frames[:0]])
    assert len(whole) == 300 * TINY_MEL.hop
    assert np.array_equal(whole, audio([frames[i : i + 10] for i in range(0, 300, 10)]))


def test_frames_of_the_wrong_shape_or_size_are_refused_before_they_are_sent(server: RunningServer) -> None:
    with WaveNetClient("127.0.0.1:1", max_message_bytes=4096) as client:  # nothing is listening: no call is made
        with pytest.raises(ValueError, match=r"^features: expected a \(frames, channels\) array, got shape \(8,\)"):
            client.generate(1.0, features=np.zeros(8))
        with pytest.raises(ValueError, match="^features: makes the request .* over the 4,096-byte message limit"):
            client.generate(1.0, features=np.zeros((300, 8)))
    blocks = [np.zeros((4, TINY_MEL.n_mels)), np.zeros((1, 4, TINY_MEL.n_mels))]  # a live feed: found as it comes
    with WaveNetClient(server.address) as client, pytest.raises(
            ValueError, match=r"^frames: expected a \(frames, channels\) array, got shape \(1, 4, 8\)"):
        list(client.synthesize(blocks))
    wait_for(lambda: server.models["tiny"].scheduler.active == 0)


def test_a_recording_is_read_as_samples_by_channels() -> None:
    rate = TINY_MEL.sample_rate
    wav = 0.3 * np.sin(2 * np.pi * 100 * np.arange(20 * TINY_MEL.hop) / rate)
    mono = recording_frames(wav, rate, TINY_MEL)
    assert len(mono) == 20 and np.array_equal(recording_frames(wav[:, None], rate, TINY_MEL), mono)
    with pytest.raises(ValueError, match=r"^audio: expected \(samples,\) or \(samples, channels\), got shape "
                                         r"\(2, 80\) \(channels first\? pass audio.T\)"):
        recording_frames(np.stack([wav, wav]), rate, TINY_MEL)
    with pytest.raises(ValueError, match=f"^audio: 3 samples at {rate} Hz is shorter than one frame"):
        recording_frames(wav[:3], rate, TINY_MEL)


def test_no_progress_lines_when_stderr_is_not_a_terminal(server: RunningServer, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """stderr going to a log (capsys is no terminal): the report line only, no bar; --progress draws it anyway."""
    out = tmp_path / "a.wav"
    assert main(["--server", server.address, "generate", "--seconds", "0.5", "-o", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out}")
    assert main(["--server", server.address, "--progress", "generate", "--seconds", "0.5", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "0.50/0.5 s audio" in err  # the total as it was asked for, not 0.5000000001


def test_a_refused_call_draws_no_progress(server: RunningServer, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", server.address, "--progress", "generate", "--seconds", "0.5", "--speaker", "9",
                 "-o", str(tmp_path / "a.wav")]) == 1  # the server's INVALID_ARGUMENT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "speaker" in err and "audio [" not in err


def test_vocode_says_what_it_did_to_the_input(server: RunningServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.wav"
    sf.write(src, np.zeros((4000, 2)) + 0.1, 8000)
    assert main(["--server", server.address, "vocode", str(src), "-o", str(tmp_path / "out.wav")]) == 0
    assert f"{src}: 2 channels mixed to mono, resampled from 8,000 Hz to 1,600 Hz" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "message"), [(b"", "empty file"), (None, "it holds no audio")])
def test_vocode_an_empty_input_is_named_so(server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           content: bytes | None, message: str) -> None:
    src = tmp_path / "in.wav"
    if content is None:
        sf.write(src, np.zeros(0), 8000)  # a valid WAV with no samples
    else:
        src.write_bytes(content)
    assert main(["--server", server.address, "vocode", str(src), "-o", str(tmp_path / "out.wav")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("parser", ["client", "server"])
def test_every_flag_has_help(parser: str) -> None:
    import argparse

    from client import cli
    from server import service

    captured: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        captured.append(self)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        (cli if parser == "client" else service).parse_args(["models"] if parser == "client" else [])
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]
    parsers = [captured[0]]
    for action in captured[0]._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    missing = [f"{p.prog} {a.option_strings or a.dest}" for p in parsers for a in p._actions if not a.help]
    assert missing == []
