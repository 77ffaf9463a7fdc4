"""bench/ab.py: paired scores of arms on the same clips, and the bootstrap interval of their differences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.ab import bootstrap, main, parse_arm
from models.wavenet import save_checkpoint
from tests.bench.test_quality import voiced
from tests.tiny import TINY_MEL, tiny_model, write_prepared


def test_an_arm_compared_with_itself_differs_by_nothing_and_another_model_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rate = TINY_MEL.sample_rate
    clips = [(voiced(1.0, 90.0 + 15 * i, rate, seed=i), i % 2) for i in range(4)]
    write_prepared(tmp_path / "data", {"test": clips}, TINY_MEL, ["a", "b"])
    for name, seed in (("a", 0), ("b", 1)):
        save_checkpoint(tmp_path / f"{name}.pt", tiny_model("pitch", seed=seed))
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    assert main([a, a + "@1", b, "--data", str(tmp_path / "data"), "--clips", "3", "--seeds", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["control"] == "a" and result["clips"] == 3 and result["seeds"] == 2
    same, other = result["difference_from_control"]["a@1"], result["difference_from_control"]["b"]
    assert same["mcd_db"] == [0.0, 0.0, 0.0]  # the same model, temperature and seeds: the same audio
    assert other["mcd_db"][0] != 0.0
    assert set(result["means"]) == {"a", "a@1", "b", "griffin-lim"}


def test_bootstrap_interval_brackets_the_mean_and_leaves_nan_clips_out() -> None:
    d = np.array([0.1, 0.3, np.nan, 0.2, 0.4])
    mean, lo, hi = bootstrap(d)
    assert mean == pytest.approx(0.25) and 0.1 <= lo < mean < hi <= 0.4


def test_an_arm_is_named_by_its_run_and_temperature() -> None:
    arm = parse_arm("runs/ab/pitch/checkpoint.pt@0.7", 1.0)
    assert (arm.name, arm.temperature) == ("pitch@0.7", 0.7)
    assert parse_arm("models/default.pt", 0.9).name == "default"
