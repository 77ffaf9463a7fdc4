"""Pre-emphasis: the inverse filter undoes it, a stream cut anywhere decodes to the same bits, training windows
carry it across their edges, and a = 0 is plain μ-law."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models import emphasis
from models.emphasis import Decoder, deemphasize, emphasize
from models.train import example, load_split, windows
from tests.tiny import CONFIGS, TINY_MEL, random_classes, write_prepared
from wavenet import mulaw
from wavenet.codec import encode_audio
from wavenet.v1 import wavenet_pb2 as pb


def test_the_inverse_filter_undoes_pre_emphasis() -> None:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 1000)
    np.testing.assert_allclose(deemphasize(emphasize(x, 0.85), 0.85), x, atol=1e-12)
    np.testing.assert_allclose(deemphasize(emphasize(x[500:], 0.85, x[499]), 0.85, x[499]), x[500:], atol=1e-12)
    assert not np.allclose(emphasize(x, 0.85), x)


def test_a_stream_decodes_to_the_same_bits_however_it_is_cut() -> None:
    classes = random_classes(3000)
    whole = Decoder(0.85, last=0.2)(classes)
    for cuts in ([1, 2, 700], [64, 128, 129, 2999], list(range(0, 3000, 37))):
        decoder = Decoder(0.85, last=0.2)
        parts = [decoder(part) for part in np.split(classes, cuts)]
        assert np.array_equal(np.concatenate(parts), whole)
    assert whole.dtype == np.float32 and np.abs(whole).max() <= 1.0


def test_output_is_clipped_but_the_filter_runs_on() -> None:
    loud = np.full(40, 255)  # e = 1.0 again and again: x climbs towards 1 / (1 - a)
    decoder = Decoder(0.85)
    out = decoder(loud)
    assert out.max() == 1.0 and decoder.last > 5.0
    np.testing.assert_array_equal(out, np.clip(deemphasize(mulaw.decode(loud), 0.85), -1, 1).astype(np.float32))


def test_without_pre_emphasis_it_is_plain_mu_law() -> None:
    classes = np.arange(256)
    assert np.array_equal(Decoder(0.0)(classes), mulaw.decode(classes))
    assert encode_audio(Decoder(0.0)(classes), pb.MULAW8) == classes.astype(np.uint8).tobytes()  # its own classes
    x = np.random.default_rng(1).uniform(-1, 1, 500).astype(np.float32)
    assert np.array_equal(emphasis.encode(x, 0.0), mulaw.encode(x))


@pytest.mark.parametrize("a", [0.0, 0.85])
def test_training_windows_are_cut_from_the_whole_clips_classes(tmp_path: Path, a: float) -> None:
    """Each clip's classes encoded alone, its first sample's pre-emphasis reading silence: the second clip's do not
    carry over the first's last sample."""
    cfg = dataclasses.replace(CONFIGS["mel"], preemphasis=a)
    rng = np.random.default_rng(2)
    lengths = (TINY_MEL.hop * 40, TINY_MEL.hop * 32)
    wavs = [np.clip(0.5 * np.sin(np.arange(n) / period) + 0.1 * rng.normal(size=n), -1, 1)
            for n, period in zip(lengths, (3.0, 5.0))]
    write_prepared(tmp_path, {"train": [(wav, 0) for wav in wavs]}, TINY_MEL, ["a"])
    split = load_split(tmp_path, "train")
    w = windows(split, cfg)
    assert w.classes.dtype == np.uint8
    hop, n = TINY_MEL.hop, 10
    for clip in split.clips:
        offset = clip["sample_offset"]
        whole = emphasis.encode(split.audio[offset : offset + clip["n_samples"]] / 32768.0, a)
        first = example(w, clip, 0, n)
        assert first["inputs"][0] == mulaw.SILENCE
        assert np.array_equal(first["inputs"][1:], whole[: n * hop - 1])
        assert np.array_equal(first["targets"], whole[: n * hop])
        for start in (1, 7, clip["n_frames"] - n):
            window = example(w, clip, start, n)
            assert np.array_equal(window["inputs"], whole[start * hop - 1 : (start + n) * hop - 1])
            assert np.array_equal(window["targets"], whole[start * hop : (start + n) * hop])
