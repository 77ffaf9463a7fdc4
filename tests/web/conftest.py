"""The playground (wavenet-web) on a loopback port, relaying to a real server on the bundled model; and the system's
chromium, driven by playwright by its executable path (no browser download)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator

import pytest

from client.web.app import Upstream, build_app
from server.settings import DEFAULT_MODEL, Limits
from tests.serving import RunningServer

BROWSER_ENV = "WAVENET_REQUIRE_BROWSER"  # .ci/run sets it: a missing chromium fails the run instead of skipping
LIMITS = Limits(max_seconds=20.0, max_frames=4000, max_message_bytes=4 * 1024 * 1024)


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.fixture(scope="session")
def bundled_server() -> Iterator[RunningServer]:
    running = RunningServer([f"default={DEFAULT_MODEL}"], 4, LIMITS)
    yield running
    running.stop()


class RunningWeb:
    """wavenet-web's app under uvicorn in a thread."""

    def __init__(self, upstream: Upstream):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(build_app(upstream), host="127.0.0.1", port=0,
                                                    log_level="warning", ws="websockets-sansio"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "wavenet-web did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def web(bundled_server: RunningServer) -> Iterator[RunningWeb]:
    running = RunningWeb(Upstream(bundled_server.address))
    yield running
    running.stop()


@pytest.fixture(scope="module")  # not longer: playwright's sync API holds an event loop in the test thread while open
def browser() -> Iterator[object]:
    path = chromium_path()
    if path is None:
        if os.environ.get(BROWSER_ENV) == "1":
            pytest.fail(f"{BROWSER_ENV}=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True,
                                    args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        yield browser
        browser.close()
