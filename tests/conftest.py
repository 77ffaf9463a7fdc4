"""Fixtures: the tiny models of tests/tiny.py, and a live server (tests/serving.py)."""

from __future__ import annotations

import pytest

from models.wavenet import WaveNet
from tests.tiny import CONFIGS, tiny_model

pytest_plugins = ["tests.serving"]


@pytest.fixture(params=sorted(CONFIGS))
def model(request: pytest.FixtureRequest) -> WaveNet:
    return tiny_model(request.param)
