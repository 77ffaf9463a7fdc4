"""The playground page in a real (headless) chromium against a real server on the bundled model."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.serving import RunningServer
from tests.web.conftest import RunningWeb

SCREENSHOT_ENV = "WAVENET_WEB_SCREENSHOT"  # a path: the generation test saves its screenshot there (docs/web.png)


@pytest.fixture
def page(browser: Any, web: RunningWeb) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web.url)
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    yield page
    context.close()
    assert errors == []  # no JavaScript error on the page


def state(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.playground")  # type: ignore[no-any-return]


def test_the_page_lists_the_models_speakers(page: Any, bundled_server: RunningServer) -> None:
    speakers = list(bundled_server.models["default"].info.speakers)
    assert len(speakers) == 5
    options = page.locator("#speaker option").all_inner_texts()
    assert options == [f"{i}: {name}" for i, name in enumerate(speakers)]
    assert page.locator("#model option").count() == 1


def test_a_generation_plays_to_its_end(page: Any, tmp_path: Path) -> None:
    page.fill("#seconds", "1")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_selector("body[data-state=played]", timeout=60_000)
    got = state(page)
    assert got["samples"] == 16000 and got["summary"]["samples"] == 16000 and got["summary"]["seed"] == "7"
    assert got["error"] is None
    assert page.locator("#download").is_visible() and page.locator("#result").get_attribute("src")
    assert page.locator("#ttfa").inner_text().endswith(" ms")
    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copy(shot, os.environ[SCREENSHOT_ENV])


def test_a_recording_is_revoiced_to_its_own_length(page: Any, tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate) / rate  # 1 s
    recording = 0.2 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    src = tmp_path / "speech.wav"
    sf.write(src, recording, rate, subtype="PCM_16")
    page.set_input_files("#file", str(src))
    page.wait_for_function("() => !document.getElementById('vocode').disabled", timeout=10_000)
    page.click("#vocode")
    page.wait_for_selector("body[data-state=played]", timeout=60_000)
    got = state(page)
    assert got["error"] is None and got["samples"] == 16000 == got["summary"]["samples"]
    assert page.locator("#original").get_attribute("src")


def test_a_bad_upload_shows_its_error(page: Any, tmp_path: Path) -> None:
    src = tmp_path / "notes.wav"
    src.write_text("this is not audio")
    page.set_input_files("#file", str(src))
    page.wait_for_selector("body[data-state=error]", timeout=10_000)
    assert page.locator("#error").is_visible()
    assert "notes.wav: not audio this browser can decode" in page.locator("#error").inner_text()
    assert page.locator("#vocode").is_disabled()


def test_a_refused_request_shows_the_servers_reason(page: Any) -> None:
    page.fill("#seconds", "30")  # over the server's --max-seconds (20 here)
    page.click("#generate")
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    text = page.locator("#error").inner_text()
    assert text.startswith("INVALID_ARGUMENT: ") and "seconds" in text
