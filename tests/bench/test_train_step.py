"""bench/train_step.py: runs wavenet-train's step on a model's shape and reports every arm asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.train_step import main
from models.wavenet import save_checkpoint
from tests.tiny import TINY_MEL, tiny_model, write_prepared


def test_reports_each_arm_against_eager(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "tiny.pt", tiny_model("both"))
    assert main(["--model", str(tmp_path / "tiny.pt"), "--quick", "--device", "cpu",
                 "--arms", "eager,forward-backward"]) == 0
    out = capsys.readouterr().out.splitlines()
    result = json.loads(out[-1])
    assert set(result["step_ms"]) == {"eager", "forward-backward"}
    assert result["speed_vs_eager"]["eager"] == 1.0
    assert (result["batch"], result["window"]) == (2, 1600)
    assert any(line.startswith("forward-backward") for line in out)
    assert result["batch_ms"] is None and not any(line.startswith("a batch") for line in out)


def test_times_making_a_batch_from_prepared_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = tiny_model("both")
    assert model.cfg.mel == TINY_MEL
    save_checkpoint(tmp_path / "tiny.pt", model)
    clips = [(np.sin(np.arange(2400) / (3.0 + i)) * 0.5, i % 2) for i in range(3)]  # 1,600-sample windows fit
    write_prepared(tmp_path / "data", {"train": clips}, TINY_MEL, ["a", "b"])
    assert main(["--model", str(tmp_path / "tiny.pt"), "--quick", "--device", "cpu", "--arms", "eager",
                 "--data", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1])["batch_ms"] > 0
    assert any(line.startswith("a batch (host)") for line in out)


def test_unknown_arm_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--quick", "--arms", "eager,jit"])
    assert "--arms: unknown jit" in capsys.readouterr().err


def test_model_without_frames_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "plain.pt", tiny_model("plain"))
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "plain.pt"), "--quick", "--device", "cpu"])
    assert "--model:" in capsys.readouterr().err


def test_without_an_eager_arm_there_is_no_ratio_to_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Given explicitly, --batch and --window win over --quick's, and a window is whole hops as in wavenet-train."""
    save_checkpoint(tmp_path / "tiny.pt", tiny_model("both"))
    assert main(["--model", str(tmp_path / "tiny.pt"), "--quick", "--device", "cpu", "--arms", "forward-backward",
                 "--batch", "1", "--window", str(100 * TINY_MEL.hop + 1)]) == 0
    out = capsys.readouterr().out.splitlines()
    result = json.loads(out[-1])
    assert result["speed_vs_eager"] is None and out[-2].startswith("forward-backward") and out[-2].endswith(" -")
    assert (result["batch"], result["window"]) == (1, 100 * TINY_MEL.hop)
