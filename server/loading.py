"""Models to serve: checkpoint files named on the command line, loaded with their schedulers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.generate.compiled import Precision, make_generator
from models.wavenet import WaveNetConfig, checkpoint_temperature, load_checkpoint, read_checkpoint
from server import convert
from server.scheduler import Scheduler
from server.settings import DEFAULT_MODEL
from wavenet.v1 import wavenet_pb2 as pb


@dataclass
class LoadedModel:
    name: str
    cfg: WaveNetConfig
    info: pb.ModelInfo
    scheduler: Scheduler


def load_model(spec: str, max_streams: int, precision: Precision | None = None) -> LoadedModel:
    """'PATH' or 'NAME=PATH' to a loaded model with its scheduler (not yet started); precision: see make_generator."""
    name, path = model_spec(spec)
    model = load_checkpoint(path, key="model")
    raw = read_checkpoint(path)
    speakers = [str(s) for s in raw.get("speakers", [])] or [f"speaker{i}" for i in range(model.cfg.speakers)]
    info = convert.model_info(name, model.cfg, speakers[: model.cfg.speakers], checkpoint_temperature(raw))
    return LoadedModel(name, model.cfg, info, Scheduler(make_generator(model, precision=precision), max_streams))


def model_spec(spec: str) -> tuple[str, str]:
    """'PATH' or 'NAME=PATH' to (name, path). A spec naming an existing file is a path, '=' and all (runs/lr=1e-3/m.pt);
    otherwise the name ends at the first '='. Without a name, the file's stem names the model."""
    if "=" not in spec or Path(spec).is_file():
        return _stem(spec), spec
    name, _, path = spec.partition("=")
    return name or _stem(path), path


def model_specs(given: list[str] | None, folder: str | None) -> tuple[list[str], list[str]]:
    """The --model specs to load, and notes on what was left out. Given specs come first (none: the bundled model,
    or the folder's default.pt in its place); then every other *.pt in folder, named by its file name, unless a
    given spec already has that name."""
    if folder and not Path(folder).is_dir():
        raise ValueError(f"--model-dir {folder}: not a folder")
    files = sorted(p for p in Path(folder).glob("*.pt") if p.is_file()) if folder else []
    own_default = next((p for p in files if p.name == "default.pt"), None)
    specs = list(given) if given else [f"default={own_default}" if own_default else str(DEFAULT_MODEL)]
    named = dict(model_spec(spec) for spec in specs)  # name -> path
    notes = []
    for path in files:
        if path.stem not in named:
            specs.append(f"{path.stem}={path}")
            named[path.stem] = str(path)
        elif named[path.stem] != str(path):
            notes.append(f"--model-dir: {path} not served: a model named {path.stem!r} is given by --model")
    return specs, notes


def _stem(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] or base
