"""wavenet-prepare: fetch Fish Fillets NG speech, assign speakers, clean and split clips, store audio and log-mels."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from wavenet.audio import PEAK_LIMIT, TARGET_DBFS, TRIM_DB, TRIM_MARGIN_S, clean, quantise
from wavenet.features import MelSpec, log_mel, n_frames

PACKAGES = ("fillets-ng-data", "fillets-ng-data-cs", "fillets-ng-data-nl")
GAME_DIR = Path("usr/share/games/fillets-ng")  # inside an unpacked tree: sound/ and script/
LANGS = ("cs", "nl")

# The speaker list: index = speaker id. Main characters (font_big, font_small) are separate speakers per language;
# everyone else in a language (minor characters, both fish in chorus, unlabelled narrator) is pooled as "other".
# The Dutch pack records only the two fish, so there is no "nl-other": such a line would be skipped as unmatched.
SPEAKERS = ("cs-big", "cs-small", "nl-big", "nl-small", "cs-other")
MAIN_FONTS = {"font_big": "big", "font_small": "small"}

SPLITS = ("train", "valid", "test")
HELD_OUT_SPLITS = ("valid", "test")  # the ones with committed key lists
HELD_OUT_FRACTION = 0.05  # of each speaker's clips, for each of valid and test
DEFAULT_SPLITS_DIR = Path(__file__).resolve().parent / "splits"

MIN_SECONDS = 0.5

DIALOG_ID = re.compile(r'dialogId\(\s*"([^"]*)"\s*,\s*"([^"]*)"')
DIALOG_LOAD = re.compile(r'dialogLoad\(\s*"script/([^"]*)"\s*,\s*"sound/([^"]*?)/?"\s*\)')


@dataclass(frozen=True)
class Clip:
    """One sound file with its dialog match: key is <lang>/<level>/<stem>."""

    key: str
    path: Path
    speaker: int
    exact: bool  # False: matched through normalise_id


# ---------------------------------------------------------------- fetching


def fetch(out: Path) -> Path:
    """apt-get download the packages into out/debs (skipping ones already there), dpkg -x them into out/tree."""
    debs, tree = out / "debs", out / "tree"
    debs.mkdir(parents=True, exist_ok=True)
    tree.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        if any(debs.glob(f"{package}_*.deb")):
            print(f"fetch: {package} already in {debs}")
            continue
        print(f"fetch: apt-get download {package} (in {debs})")
        subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
    for package in PACKAGES:
        deb = sorted(debs.glob(f"{package}_*.deb"))[-1]
        print(f"fetch: dpkg -x {deb.name} {tree}")
        subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True)
    return tree


# ---------------------------------------------------------------- dialogs and speakers


def parse_dialogs(text: str) -> dict[str, str]:
    """Dialog id -> font name from the dialogId("id", "font_x", ...) calls of a dialogs_<lang>.lua file."""
    return dict(DIALOG_ID.findall(text))


def parse_dialog_loads(texts: Iterable[str]) -> dict[str, list[str]]:
    """Sound dir (relative to sound/) -> script prefixes, from literal dialogLoad("script/<prefix>", "sound/<dir>/")."""
    loads: dict[str, list[str]] = {}
    for text in texts:
        for prefix, sound_dir in DIALOG_LOAD.findall(text):
            loads.setdefault(sound_dir, [])
            if prefix not in loads[sound_dir]:
                loads[sound_dir].append(prefix)
    return loads


def dialog_files(script: Path, sound_dir: str, lang: str, loads: dict[str, list[str]]) -> list[Path]:
    """Dialog files the game reads for sound/<sound_dir>/<lang>/: the level's *dialogs_<lang>.lua plus extra loads."""
    files = sorted((script / sound_dir).glob(f"*dialogs_{lang}.lua"))
    files += [script / f"{prefix}dialogs_{lang}.lua" for prefix in loads.get(sound_dir, [])]
    return sorted({f for f in files if f.is_file()})


def normalise_id(name: str) -> str:
    """A dialog id or file stem without case, digits or the -/_ difference: how near-miss file names are matched."""
    return re.sub(r"\d+", "", name.lower().replace("_", "-"))


def match_font(stem: str, dialogs: dict[str, str]) -> tuple[str | None, bool]:
    """(font, exact) of a clip stem: its exact dialog id, else the one font of all ids equal under normalise_id."""
    if stem in dialogs:
        return dialogs[stem], True
    fonts = {font for name, font in dialogs.items() if normalise_id(name) == normalise_id(stem)}
    return (fonts.pop(), False) if len(fonts) == 1 else (None, False)


def speaker_id(lang: str, font: str) -> int | None:
    """Speaker id of a line in a language said in a font: big/small fish are their own speakers, the rest pooled."""
    name = f"{lang}-{MAIN_FONTS.get(font, 'other')}"
    return SPEAKERS.index(name) if name in SPEAKERS else None


def find_clips(game: Path) -> tuple[list[Clip], list[str]]:
    """(clips with a dialog entry, keys of clips without one), both sorted, for every <lang>/*.ogg under game/sound."""
    sound, script = game / "sound", game / "script"
    loads = parse_dialog_loads(p.read_text(encoding="utf-8", errors="replace") for p in sorted(script.rglob("*.lua")))
    clips: list[Clip] = []
    unmatched: list[str] = []
    seen: set[str] = set()
    for lang_dir in sorted(d for d in sound.rglob("*") if d.is_dir() and d.name in LANGS):
        lang, sound_dir = lang_dir.name, lang_dir.parent.relative_to(sound).as_posix()
        dialogs: dict[str, str] = {}
        for path in dialog_files(script, sound_dir, lang, loads):
            dialogs.update(parse_dialogs(path.read_text(encoding="utf-8", errors="replace")))
        for path in sorted(lang_dir.glob("*.ogg")):
            key = f"{lang}/{lang_dir.parent.name}/{path.stem}"  # share/border -> border: keys keep three parts
            if key in seen:
                raise ValueError(f"two clips have the key {key}")
            seen.add(key)
            font, exact = match_font(path.stem, dialogs)
            speaker = None if font is None else speaker_id(lang, font)
            if speaker is None:
                unmatched.append(key)
            else:
                clips.append(Clip(key, path, speaker, exact))
    return sorted(clips, key=lambda c: c.key), sorted(unmatched)


def load_clip(path: Path, spec: MelSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """(int16 samples, (frames, n_mels) float32 log-mel of those samples) of a sound file, None if unreadable."""
    try:
        audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except RuntimeError as error:  # soundfile.LibsndfileError
        print(f"unreadable: {path}: {error}")
        return None
    samples = quantise(clean(audio, rate, spec))
    return samples, log_mel(samples / 32768.0, spec)


# ---------------------------------------------------------------- splits


def seeded_split(keys_by_speaker: dict[int, list[str]], seed: int) -> dict[str, str]:
    """Key -> split: each speaker's sorted keys shuffled with (seed, speaker); about 5 % each to test and valid."""
    split: dict[str, str] = {}
    for speaker, keys in sorted(keys_by_speaker.items()):
        keys = sorted(keys)
        held = round(len(keys) * HELD_OUT_FRACTION)
        order = np.random.default_rng([seed, speaker]).permutation(len(keys))
        for rank, index in enumerate(order):
            split[keys[index]] = "test" if rank < held else "valid" if rank < 2 * held else "train"
    return split


def read_split_files(folder: Path) -> dict[str, str] | None:
    """Key -> split from folder/{valid,test}.txt (one key a line); None when neither file exists."""
    paths = {name: folder / f"{name}.txt" for name in HELD_OUT_SPLITS}
    if not any(p.exists() for p in paths.values()):
        return None
    split: dict[str, str] = {}
    for name, path in paths.items():
        if path.exists():
            for key in path.read_text(encoding="utf-8").split():
                if split.setdefault(key, name) != name:
                    raise ValueError(f"{key} is in more than one split file in {folder}")
    return split


def write_split_files(folder: Path, split: dict[str, str]) -> None:
    """folder/{valid,test}.txt: the sorted keys of each held-out split."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in HELD_OUT_SPLITS:
        keys = sorted(k for k, s in split.items() if s == name)
        (folder / f"{name}.txt").write_text("".join(f"{k}\n" for k in keys), encoding="utf-8")


def assign_splits(keys: list[str], committed: dict[str, str] | None, seeded: dict[str, str]) -> dict[str, str]:
    """Key -> split of the kept keys: the committed lists if any (the rest to train), else the seeded split."""
    if committed is None:
        return {k: seeded[k] for k in keys}
    return {k: committed.get(k, "train") for k in keys}


# ---------------------------------------------------------------- writing


def write_split(folder: Path, clips: list[Clip], data: dict[str, tuple[np.ndarray, np.ndarray]], spec: MelSpec) -> None:
    """folder/{audio.npy, frames.npy, clips.json}: the clips' samples and frames concatenated, with their offsets."""
    folder.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, object]] = []
    sample_offset = frame_offset = 0
    for clip in clips:
        samples, frames = data[clip.key]
        assert len(frames) == n_frames(len(samples), spec) and len(samples) == len(frames) * spec.hop
        index.append({"key": clip.key, "speaker": clip.speaker, "sample_offset": sample_offset,
                      "n_samples": len(samples), "frame_offset": frame_offset, "n_frames": len(frames)})
        sample_offset += len(samples)
        frame_offset += len(frames)
    audio = np.concatenate([data[c.key][0] for c in clips] or [np.zeros(0, np.int16)])  # (total_samples,) int16
    frames = np.concatenate([data[c.key][1] for c in clips] or [np.zeros((0, spec.n_mels), np.float32)])
    np.save(folder / "audio.npy", audio)
    np.save(folder / "frames.npy", frames)  # (total_frames, n_mels) float32
    (folder / "clips.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")


def split_summary(clips: list[Clip], split: dict[str, str], data: dict[str, tuple[np.ndarray, np.ndarray]],
                  rate: int) -> dict[str, dict[str, dict[str, float]]]:
    """split -> speaker name -> {"clips", "seconds"} of the kept clips."""
    table = {s: {name: {"clips": 0, "seconds": 0.0} for name in SPEAKERS} for s in SPLITS}
    for clip in clips:
        cell = table[split[clip.key]][SPEAKERS[clip.speaker]]
        cell["clips"] += 1
        cell["seconds"] += len(data[clip.key][0]) / rate
    return table


def format_table(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """The summary as text: one row per speaker plus a total, clips and minutes per split."""
    columns = [*SPLITS, "all"]
    lines = [f"{'speaker':<10}" + "".join(f"{c + ' clips':>13}{'min':>8}" for c in columns)]
    for name in [*SPEAKERS, "total"]:
        cells = []
        for column in columns:
            splits = SPLITS if column == "all" else (column,)
            names = SPEAKERS if name == "total" else (name,)
            count = sum(table[s][n]["clips"] for s in splits for n in names)
            minutes = sum(table[s][n]["seconds"] for s in splits for n in names) / 60.0
            cells.append(f"{count:>13.0f}{minutes:>8.1f}")
        lines.append(f"{name:<10}" + "".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------- command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command's options."""
    parser = argparse.ArgumentParser(prog="wavenet-prepare", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("data/fillets"), help="output folder (default data/fillets)")
    parser.add_argument("--tree", type=Path, help="use this already unpacked package tree instead of fetching")
    parser.add_argument("--sample-rate", type=int, default=MelSpec().sample_rate, help="target rate (default 16000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--write-splits", action="store_true", help="(re)write the valid/test key lists from the seed")
    parser.add_argument("--splits", type=Path, default=DEFAULT_SPLITS_DIR,
                        help=f"folder of valid.txt and test.txt (default {DEFAULT_SPLITS_DIR})")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (default 2; 1: no pool)")
    return parser.parse_args(argv)


BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # read when numpy loads its BLAS


@contextmanager
def one_blas_thread_each() -> Iterator[None]:
    """Processes started inside this block give their BLAS one thread (unless the user set these): each worker
    already has a core, and a BLAS thread per core in each worker oversubscribes the machine (the whole data on
    2 cores, 2 workers: 47.5 s with numpy's default, 24.0 s with one thread each, the same bytes out)."""
    saved = {name: os.environ.get(name) for name in BLAS_THREADS}
    os.environ.update({name: "1" for name, value in saved.items() if value is None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def load_all(clips: list[Clip], spec: MelSpec, workers: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """load_clip of every clip, in order, in a pool of `workers` fresh processes (spawned, so that their numpy
    loads its BLAS under one_blas_thread_each), or in this process if 1."""
    load = partial(load_clip, spec=spec)
    paths = [c.path for c in clips]
    if workers <= 1:
        return [load(p) for p in paths]
    with one_blas_thread_each(), ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(load, paths, chunksize=16))


def main(argv: list[str] | None = None) -> int:
    """Run the preparation; returns the exit status."""
    args = parse_args(argv)
    started = time.monotonic()
    spec = MelSpec(sample_rate=args.sample_rate, fmax=min(MelSpec.fmax, args.sample_rate / 2))
    tree = args.tree if args.tree is not None else fetch(args.out)
    game = tree / GAME_DIR
    if not (game / "sound").is_dir() or not (game / "script").is_dir():
        raise SystemExit(f"no {GAME_DIR}/sound and script in {tree}")

    clips, unmatched = find_clips(game)
    approximate = [c.key for c in clips if not c.exact]
    print(f"clips: {len(clips) + len(unmatched)} found, {len(clips) - len(approximate)} matched a dialog id exactly, "
          f"{len(approximate)} approximately ({', '.join(approximate) or '-'}), "
          f"{len(unmatched)} have no dialog entry and are skipped ({', '.join(unmatched) or '-'})")

    print(f"decoding {len(clips)} clips to {spec.sample_rate} Hz with {args.workers} workers")
    min_samples = round(MIN_SECONDS * spec.sample_rate)
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    unreadable, short = [], []
    for clip, result in zip(clips, load_all(clips, spec, args.workers), strict=True):
        if result is None:
            unreadable.append(clip.key)
        elif len(result[0]) < min_samples:
            short.append(clip.key)
        else:
            data[clip.key] = result
    kept = [c for c in clips if c.key in data]
    print(f"kept {len(kept)} clips; skipped {len(short)} shorter than {MIN_SECONDS} s after trimming, "
          f"{len(unreadable)} unreadable")

    keys_by_speaker: dict[int, list[str]] = {}
    for clip in kept:
        keys_by_speaker.setdefault(clip.speaker, []).append(clip.key)
    seeded = seeded_split(keys_by_speaker, args.seed)
    committed = None if args.write_splits else read_split_files(args.splits)
    split = assign_splits([c.key for c in kept], committed, seeded)
    source = f"split files in {args.splits}" if committed is not None else f"seed {args.seed}"
    if committed is not None:
        missing = sorted(set(committed) - set(split))
        print(f"split: from {source}; {len(missing)} listed keys are not among the kept clips")
    else:
        print(f"split: from {source}")
    if args.write_splits:
        write_split_files(args.splits, split)
        print(f"split: wrote {args.splits / 'valid.txt'} and {args.splits / 'test.txt'}")

    for name in SPLITS:
        members = [c for c in kept if split[c.key] == name]
        write_split(args.out / name, members, data, spec)
        print(f"wrote {args.out / name}: {len(members)} clips")

    table = split_summary(kept, split, data, spec.sample_rate)
    summary = {
        "clips_found": len(clips) + len(unmatched),
        "matched_exact": len(clips) - len(approximate), "matched_approximate": approximate,
        "skipped_no_dialog": unmatched, "skipped_short": short, "skipped_unreadable": unreadable,
        "kept": len(kept), "split_source": source, "seed": args.seed, "splits": table,
        "cleaning": {"trim_db": TRIM_DB, "trim_margin_s": TRIM_MARGIN_S, "target_dbfs": TARGET_DBFS,
                     "peak_limit": PEAK_LIMIT, "min_seconds": MIN_SECONDS},
    }
    meta = {"mel": asdict(spec), "sample_rate": spec.sample_rate, "speakers": list(SPEAKERS), "summary": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    print(format_table(table))
    print(f"skipped: {len(unmatched)} without dialog entry, {len(short)} too short, {len(unreadable)} unreadable; "
          f"{len(approximate)} matched approximately; {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
