"""wavenet-prepare on a fake unpacked package tree: speakers, trimming, lengths, frames and splits."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.data import GAME_DIR, SPEAKERS, main, match_font, normalise_id
from wavenet.features import MelSpec, log_mel

SPEC = MelSpec()
LEAD_S, TAIL_S = 0.30, 0.40  # silence around the voiced part of every fake clip

DIALOGS = {  # (level, lang) -> dialog id -> font
    ("city", "cs"): {"a-v-ahoj": "font_big", "a-m-cau": "font_small", "a-hs-vitejte": "font_statue",
                     "a-v-jo": "font_big"},
    ("city", "nl"): {"a-v-ahoj": "font_big", "a-m-cau": "font_small", "a-p-papousek": "font_parrot"},
    ("fdto", "cs"): {"ted1-m": "font_small", "b-v-dlouhy": "font_big"},
    ("fdto", "nl"): {"ted1-m": "font_small", "b-v-dlouhy": "font_big", "b-x-kratky": "font_big"},
}

# (level, lang, stem, sample rate, channels, voiced seconds, amplitude)
CLIPS = [
    ("city", "cs", "a-v-ahoj", 44100, 2, 1.0, 0.3),
    ("city", "cs", "a-m-cau", 22050, 1, 0.8, 0.05),
    ("city", "cs", "a-hs-vitejte", 22050, 1, 1.2, 0.5),
    ("city", "cs", "a-v-jo", 22050, 1, 0.9, 0.2),
    ("city", "nl", "a-v-ahoj", 22050, 2, 1.1, 0.3),
    ("city", "nl", "a-m-cau", 22050, 2, 0.7, 0.1),
    ("city", "nl", "a-p-papousek", 44100, 1, 1.0, 0.4),
    ("fdto", "cs", "ted1-m", 22050, 1, 0.9, 0.3),
    ("fdto", "cs", "ted2-m", 22050, 1, 1.0, 0.3),  # no such id: a numbered variant of ted1-m
    ("fdto", "cs", "b-v-dlouhy", 22050, 1, 1.3, 0.2),
    ("fdto", "cs", "neni-v-dialogu", 22050, 1, 1.0, 0.3),  # no dialog entry: skipped
    ("fdto", "nl", "ted1-m", 22050, 1, 0.8, 0.3),
    ("fdto", "nl", "b-v-dlouhy", 22050, 1, 1.0, 0.3),
    ("fdto", "nl", "b-x-kratky", 22050, 1, 0.2, 0.3),  # shorter than 0.5 s: dropped
]

EXPECTED_SPEAKERS = {
    "cs/city/a-v-ahoj": "cs-big", "cs/city/a-m-cau": "cs-small", "cs/city/a-hs-vitejte": "cs-other",
    "cs/city/a-v-jo": "cs-big", "nl/city/a-v-ahoj": "nl-big", "nl/city/a-m-cau": "nl-small",
    "cs/fdto/ted1-m": "cs-small", "cs/fdto/ted2-m": "cs-small",
    "cs/fdto/b-v-dlouhy": "cs-big", "nl/fdto/ted1-m": "nl-small", "nl/fdto/b-v-dlouhy": "nl-big",
}
NO_DIALOG = "cs/fdto/neni-v-dialogu"
NO_SPEAKER = "nl/city/a-p-papousek"  # a Dutch minor character: no such speaker
TOO_SHORT = "nl/fdto/b-x-kratky"


def voiced_signal(seconds: float, rate: int, amplitude: float, seed: int) -> np.ndarray:
    """(samples,) a harmonic tone with 10 ms ramps, framed by LEAD_S and TAIL_S of silence."""
    t = np.arange(round(seconds * rate)) / rate
    f0 = 110.0 + 20.0 * seed
    tone = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 5))
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.010)
    voiced = amplitude * tone * ramp / np.abs(tone).max()
    return np.concatenate([np.zeros(round(LEAD_S * rate)), voiced, np.zeros(round(TAIL_S * rate))])


def dialog_lua(dialogs: dict[str, str]) -> str:
    """A dialogs_<lang>.lua text with dialogId/dialogStr pairs."""
    return "".join(f'\ndialogId("{name}", "{font}", "English {name}")\ndialogStr("text {name}")\n\n'
                   for name, font in dialogs.items())


def build_tree(root: Path) -> Path:
    """A fake unpacked fillets-ng-data{,-cs,-nl} tree under root; returns root."""
    game = root / GAME_DIR
    for (level, lang), dialogs in DIALOGS.items():
        script = game / "script" / level
        script.mkdir(parents=True, exist_ok=True)
        (script / f"dialogs_{lang}.lua").write_text(dialog_lua(dialogs), encoding="utf-8")
        (script / "dialogs.lua").write_text('\ndialogLoad("script/"..codename.."/")\n', encoding="utf-8")
    for seed, (level, lang, stem, rate, channels, seconds, amplitude) in enumerate(CLIPS):
        folder = game / "sound" / level / lang
        folder.mkdir(parents=True, exist_ok=True)
        mono = voiced_signal(seconds, rate, amplitude, seed)
        audio = np.stack([mono, 0.8 * mono], axis=1) if channels == 2 else mono
        sf.write(folder / f"{stem}.ogg", audio, rate, format="OGG", subtype="VORBIS")
    return root


def read_out(out: Path) -> dict[str, list[dict]]:
    """split -> its clips.json."""
    return {s: json.loads((out / s / "clips.json").read_text()) for s in ("train", "valid", "test")}


def clip_audio(out: Path, split: str, clip: dict) -> np.ndarray:
    """The int16 samples of one clip."""
    audio = np.load(out / split / "audio.npy")
    return audio[clip["sample_offset"]:clip["sample_offset"] + clip["n_samples"]]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(tree, out, printed output) of one run with two workers, no split files and --write-splits."""
    root = tmp_path_factory.mktemp("prepare")
    tree = build_tree(root / "tree")
    out = root / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--tree", str(tree), "--out", str(out), "--splits", str(root / "splits"),
                     "--workers", "2", "--write-splits"]) == 0
    return tree, out, printed.getvalue()


def test_speakers_assigned(prepared: tuple[Path, Path, str]) -> None:
    _, out, _ = prepared
    got = {c["key"]: SPEAKERS[c["speaker"]] for clips in read_out(out).values() for c in clips}
    assert got == EXPECTED_SPEAKERS
    meta = json.loads((out / "meta.json").read_text())
    assert meta["speakers"] == list(SPEAKERS) and meta["sample_rate"] == SPEC.sample_rate
    assert meta["mel"]["hop"] == SPEC.hop and meta["mel"]["n_mels"] == SPEC.n_mels


def test_skipped_clips_reported(prepared: tuple[Path, Path, str]) -> None:
    _, out, printed = prepared
    summary = json.loads((out / "meta.json").read_text())["summary"]
    assert summary["skipped_no_dialog"] == sorted([NO_DIALOG, NO_SPEAKER])
    assert summary["skipped_short"] == [TOO_SHORT]
    assert summary["matched_approximate"] == ["cs/fdto/ted2-m"]
    assert NO_DIALOG in printed and "2 have no dialog entry" in printed
    assert "cs-big" in printed and "total" in printed  # the summary table


def test_silence_trimmed(prepared: tuple[Path, Path, str]) -> None:
    _, out, _ = prepared
    voiced = {f"{lang}/{level}/{stem}": seconds for level, lang, stem, _, _, seconds, _ in CLIPS}
    margin = round(0.040 * SPEC.sample_rate)
    for split, clips in read_out(out).items():
        for clip in clips:
            x = clip_audio(out, split, clip) / 32768.0
            seconds = voiced[clip["key"]]
            assert len(x) < (LEAD_S + seconds + TAIL_S) * SPEC.sample_rate * 0.8
            assert seconds * SPEC.sample_rate - 2 * SPEC.hop <= len(x) <= (seconds + 0.15) * SPEC.sample_rate
            onset = np.flatnonzero(np.abs(x) > 0.1 * np.abs(x).max())[0]
            assert margin // 2 <= onset <= 2 * margin, clip["key"]  # starts a margin before the voiced part


def test_loudness_normalised(prepared: tuple[Path, Path, str]) -> None:
    _, out, _ = prepared
    for split, clips in read_out(out).items():
        for clip in clips:
            x = clip_audio(out, split, clip) / 32768.0
            middle = x[len(x) // 4:3 * len(x) // 4]
            assert np.abs(x).max() <= 0.95 + 1e-4
            assert 20 * np.log10(np.sqrt(np.mean(middle**2))) == pytest.approx(-20.0, abs=1.0), clip["key"]


def test_lengths_and_frames(prepared: tuple[Path, Path, str]) -> None:
    _, out, _ = prepared
    for split, clips in read_out(out).items():
        audio = np.load(out / split / "audio.npy")
        frames = np.load(out / split / "frames.npy")
        assert audio.dtype == np.int16 and frames.dtype == np.float32 and frames.shape[1] == SPEC.n_mels
        assert len(audio) == sum(c["n_samples"] for c in clips) and len(frames) == sum(c["n_frames"] for c in clips)
        sample_offset = frame_offset = 0
        for clip in clips:
            assert clip["sample_offset"] == sample_offset and clip["frame_offset"] == frame_offset
            assert clip["n_samples"] % SPEC.hop == 0 and clip["n_samples"] == clip["n_frames"] * SPEC.hop
            x = clip_audio(out, split, clip)
            expected = log_mel(x / 32768.0, SPEC)
            np.testing.assert_array_equal(frames[frame_offset:frame_offset + clip["n_frames"]], expected)
            sample_offset += clip["n_samples"]
            frame_offset += clip["n_frames"]


def test_splits_disjoint_and_covering(prepared: tuple[Path, Path, str]) -> None:
    _, out, _ = prepared
    keys = {s: [c["key"] for c in clips] for s, clips in read_out(out).items()}
    all_keys = [k for ks in keys.values() for k in ks]
    assert len(all_keys) == len(set(all_keys))
    assert set(all_keys) == set(EXPECTED_SPEAKERS)


def test_rerun_gives_identical_splits(prepared: tuple[Path, Path, str], tmp_path: Path) -> None:
    tree, out, _ = prepared
    again = tmp_path / "again"
    assert main(["--tree", str(tree), "--out", str(again), "--splits", str(tmp_path / "none"), "--workers", "1"]) == 0
    assert not (tmp_path / "none").exists()  # split files are only written with --write-splits
    assert read_out(again) == read_out(out)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(np.load(again / split / "audio.npy"), np.load(out / split / "audio.npy"))


def test_written_split_files_match_and_are_used(prepared: tuple[Path, Path, str], tmp_path: Path) -> None:
    tree, out, _ = prepared
    written = {s: {c["key"] for c in clips} for s, clips in read_out(out).items()}
    splits_dir = out.parent / "splits"
    for name in ("valid", "test"):
        assert set((splits_dir / f"{name}.txt").read_text().split()) == written[name]

    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.txt").write_text("cs/city/a-v-ahoj\nnl/fdto/ted1-m\ncs/gone/missing\n")
    (tmp_path / "splits" / "valid.txt").write_text("cs/fdto/ted2-m\n")
    committed = tmp_path / "committed"
    assert main(["--tree", str(tree), "--out", str(committed), "--splits", str(tmp_path / "splits"),
                 "--workers", "1"]) == 0
    got = {s: {c["key"] for c in clips} for s, clips in read_out(committed).items()}
    assert got["test"] == {"cs/city/a-v-ahoj", "nl/fdto/ted1-m"}
    assert got["valid"] == {"cs/fdto/ted2-m"}
    assert got["train"] == set(EXPECTED_SPEAKERS) - got["test"] - got["valid"]


def test_name_matching() -> None:
    dialogs = {"ted1-m": "font_small", "ted2-m": "font_small", "bar-v-fotka": "font_big", "x1": "font_big",
               "x2": "font_small"}
    assert match_font("ted1-m", dialogs) == ("font_small", True)
    assert match_font("ted5-m", dialogs) == ("font_small", False)
    assert match_font("bar_v_fotka", dialogs) == ("font_big", False)
    assert match_font("x3", dialogs) == (None, False)  # ambiguous: two fonts
    assert match_font("other", dialogs) == (None, False)
    assert normalise_id("Vit_HS-dite0") == "vit-hs-dite"


def _blas_env(_: int) -> dict[str, str | None]:
    import os

    from models.data import BLAS_THREADS

    return {name: os.environ.get(name) for name in BLAS_THREADS}


def test_decoding_workers_run_one_blas_thread_each_and_the_env_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from models.data import BLAS_THREADS, one_blas_thread_each

    for name in BLAS_THREADS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # a user's own choice is kept
    with one_blas_thread_each(), ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        seen = pool.submit(_blas_env, 0).result()
    assert seen == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "3"}
    assert _blas_env(0) == {"OMP_NUM_THREADS": None, "OPENBLAS_NUM_THREADS": None, "MKL_NUM_THREADS": "3"}
