"""deploy/entrypoint.sh: the container's WAVENET_* variables and models folder become wavenet-server's flags."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "entrypoint.sh"


def server_args(tmp_path: Path, env: dict[str, str], *extra: str) -> tuple[list[str], str]:
    """The arguments the entrypoint gives wavenet-server (a stand-in that prints them), and what it says."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "wavenet-server"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "WAVENET_MODEL_DIR": str(tmp_path / "none"), **env}
    done = subprocess.run(["bash", str(ENTRYPOINT), "serve", *extra], env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout.splitlines(), done.stderr


def test_variables_become_flags(tmp_path: Path) -> None:
    args, _ = server_args(tmp_path, {"WAVENET_MAX_STREAMS": "4", "WAVENET_GRACE": ""}, "--idle-seconds", "9")
    assert "--model" not in args and "--model-dir" not in args  # the server's own default: the bundled model
    assert args[args.index("--max-streams") + 1] == "4" and "--grace" not in args  # empty: the server's default
    assert args[-2:] == ["--idle-seconds", "9"]


def test_models_and_a_folder_with_spaces_pass_whole(tmp_path: Path) -> None:
    folder = tmp_path / "my models"
    folder.mkdir()
    args, _ = server_args(tmp_path, {"WAVENET_MODEL_DIR": str(folder), "WAVENET_MODEL": "/x/default.pt b=/y/z.pt"})
    assert args[4:] == ["--model", "/x/default.pt", "--model", "b=/y/z.pt", "--model-dir", str(folder)]
