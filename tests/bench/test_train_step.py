"""bench/train_step.py: runs wavenet-train's step (here on a tiny model's shape) and reports every arm asked for."""

from __future__ import annotations

import json

import pytest

import bench.train_step
from bench.train_step import main
from tests.tiny import CONFIGS


def test_reports_each_arm_against_eager(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.train_step, "DEFAULT", CONFIGS["both"])
    assert main(["--quick", "--device", "cpu", "--arms", "eager,forward-backward"]) == 0
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
