"""bench/soak.py's reading of the server process: a server that died is reported, not a crash or a NaN."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.soak import error_lines, rss_mb


def test_memory_of_a_live_and_of_an_exited_process() -> None:
    assert (rss_mb(os.getpid()) or 0) > 1
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie has no VmRSS
    assert rss_mb(child.pid) is None
    child.wait()
    assert rss_mb(child.pid) is None
    json.dumps({"rss_mb_end": rss_mb(child.pid)}, allow_nan=False)  # the last line stays valid JSON


def test_error_lines_are_the_logs_errors_without_their_time() -> None:
    log = ("2026-11-30 07:00:00,1 INFO server listening\n"
           "2026-11-30 07:00:01,2 ERROR server.service stream 3 failed\n"
           "2026-11-30 07:00:02,3 CRITICAL server.service out of memory\n")
    assert error_lines(log) == ["ERROR server.service stream 3 failed", "CRITICAL server.service out of memory"]
