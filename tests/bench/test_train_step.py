"""bench/train_step.py: runs wavenet-train's step on a model's shape and reports every arm asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.train_step import main
from models.wavenet import save_checkpoint
from tests.tiny import tiny_model


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


def test_unknown_arm_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--quick", "--arms", "eager,jit"])
    assert "--arms: unknown jit" in capsys.readouterr().err


def test_model_without_frames_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "plain.pt", tiny_model("plain"))
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "plain.pt"), "--quick", "--device", "cpu"])
    assert "--model:" in capsys.readouterr().err
