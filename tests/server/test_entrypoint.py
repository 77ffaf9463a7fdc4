"""deploy/entrypoint.sh: the container's WAVENET_* variables and models folder become wavenet-server's flags."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "entrypoint.sh"
BUNDLED = "/opt/wavenet/models/default.pt"


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


def models(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--model"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    for name in ("alto.pt", "default.pt", "notes.txt"):
        (path / name).touch()
    return path


def test_the_bundled_model_by_default_and_flags_from_variables(tmp_path: Path) -> None:
    args, _ = server_args(tmp_path, {"WAVENET_MAX_STREAMS": "4", "WAVENET_GRACE": ""}, "--idle-seconds", "9")
    assert models(args) == [BUNDLED]
    assert args[args.index("--max-streams") + 1] == "4" and "--grace" not in args  # empty: the server's default
    assert args[-2:] == ["--idle-seconds", "9"]


def test_a_default_pt_in_the_folder_replaces_the_bundled_model(tmp_path: Path, folder: Path) -> None:
    """It was added beside the bundled one under the same name: the server refused both, a restart loop."""
    args, err = server_args(tmp_path, {"WAVENET_MODEL_DIR": str(folder)})
    assert models(args) == [f"default={folder}/default.pt", f"alto={folder}/alto.pt"] and err == ""


def test_a_folder_model_whose_name_is_taken_is_left_out_with_a_note(tmp_path: Path, folder: Path) -> None:
    args, err = server_args(tmp_path, {"WAVENET_MODEL_DIR": str(folder), "WAVENET_MODEL": "/x/default.pt b=/y/z.pt"})
    assert models(args) == ["/x/default.pt", "b=/y/z.pt", f"alto={folder}/alto.pt"]
    assert err == f"entrypoint: {folder}/default.pt not served: WAVENET_MODEL already names a model 'default'\n"


def test_spaces_in_the_folder_or_its_file_names_and_an_equals_sign_in_a_path(tmp_path: Path) -> None:
    folder = tmp_path / "my models"
    folder.mkdir()
    for name in ("default.pt", "a b.pt", "b.pt"):
        (folder / name).touch()
    args, err = server_args(tmp_path, {"WAVENET_MODEL_DIR": str(folder)})
    assert models(args) == [f"default={folder}/default.pt", f"a b={folder}/a b.pt", f"b={folder}/b.pt"]
    assert err == ""
    run = tmp_path / "lr=1e-3"  # a path with '=' that exists: the server names it by its stem, 'default'
    run.mkdir()
    (run / "default.pt").touch()
    args, err = server_args(tmp_path, {"WAVENET_MODEL_DIR": str(folder), "WAVENET_MODEL": f"{run}/default.pt"})
    assert models(args) == [f"{run}/default.pt", f"a b={folder}/a b.pt", f"b={folder}/b.pt"]
    assert "default.pt not served: WAVENET_MODEL already names a model 'default'" in err


def test_the_entrypoint_names_a_spec_as_the_server_does(tmp_path: Path) -> None:
    from server.service import model_spec

    existing = tmp_path / "lr=1e-3" / "m.v2.pt"
    existing.parent.mkdir()
    existing.touch()
    for spec in ["/x/default.pt", "b=/y/z.pt", "=/y/z.pt", str(existing), "/x/noext", "c=d=/e.pt"]:
        named = subprocess.run(["bash", "-c", f'source <(sed -n "/^spec_name()/,/^}}/p" {ENTRYPOINT}); '
                                'spec_name "$1"', "-", spec], capture_output=True, text=True, check=True)
        assert named.stdout.strip() == model_spec(spec)[0], spec
