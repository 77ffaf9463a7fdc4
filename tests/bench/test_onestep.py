"""bench/onestep.py: one step ahead from the true past, against running free."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bench.onestep import RULES, main, one_step_audio
from models import emphasis
from models.wavenet import save_checkpoint
from tests.bench.test_quality import voiced
from tests.tiny import TINY_MEL, tiny_model, write_prepared


def test_true_classes_one_step_ahead_give_back_the_signal() -> None:
    """Picks equal to the signal's own classes rebuild it, to within the 8-bit classes' step: the one-step audio
    carries only the error of the step itself."""
    x = voiced(0.5, 120.0, 16000, seed=1)
    classes = emphasis.encode(x, 0.85, 256)
    rebuilt = one_step_audio(classes, x, 0.85, 256)
    assert np.max(np.abs(rebuilt - x)) < 0.01 and np.corrcoef(rebuilt, x)[0, 1] > 0.999


def test_report_on_a_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rate = TINY_MEL.sample_rate
    write_prepared(tmp_path / "data", {"test": [(voiced(1.0, 100.0, rate, seed=i), i % 2) for i in range(2)]},
                   TINY_MEL, ["a", "b"])
    model = tiny_model("both")
    model.cfg = dataclasses.replace(model.cfg, preemphasis=0.85)
    save_checkpoint(tmp_path / "tiny.pt", model)
    assert main(["--data", str(tmp_path / "data"), "--model", str(tmp_path / "tiny.pt"), "--clips", "2",
                 "--max-seconds", "0.5"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["one_step"]) == set(result["free_running"]) == set(RULES) and result["clips"] == 2
