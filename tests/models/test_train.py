"""Training: the loss falls, resume is exact, the config survives the checkpoint, the CLI runs end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.train import PREEMPHASIS, TrainConfig, Trainer, main, model_config_from
from models.wavenet import WaveNet, config_to_dict, load_checkpoint
from tests.tiny import CONFIGS, TINY_MEL, write_prepared

CFG = dataclasses.replace(CONFIGS["both"], speakers=2, preemphasis=0.85)
TC = TrainConfig(steps=40, batch_size=4, window=64, lr=3e-3, lr_min=1e-3, warmup=5, valid_every=10,
                 valid_examples=4, checkpoint_minutes=60)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "data"

    def clip(i: int) -> tuple[np.ndarray, int]:
        t = np.arange(TINY_MEL.hop * int(rng.integers(30, 60))) / TINY_MEL.sample_rate
        f0 = 60.0 + 15 * (i % 5)
        return 0.5 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.normal(size=len(t)), i % 2

    splits = {"train": [clip(i) for i in range(12)], "valid": [clip(i) for i in range(4)]}
    write_prepared(root, splits, TINY_MEL, ["a", "b"])
    return root


def test_a_few_steps_lower_the_loss(data: Path, tmp_path: Path) -> None:
    trainer = Trainer(CFG, TC, data, tmp_path / "run", torch.device("cpu"))
    losses = trainer.run(40, [False], show=False)
    assert [step for step, _ in trainer.progress.valid] == [10, 20, 30, 40]
    assert [step for step, _ in trainer.progress.valid_free] == [10, 20, 30, 40]  # the same windows without frames
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    assert trainer.progress.valid[-1][1] < trainer.progress.valid[0][1]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000


def test_validation_is_fp32_when_training_in_bf16(data: Path, tmp_path: Path) -> None:
    from models.train import loss_bits, to_device

    trainer = Trainer(CFG, dataclasses.replace(TC, bf16=True), data, tmp_path / "run", torch.device("cpu"))
    trainer.run(10, [False], show=False)  # validates at step 10

    def mean_loss(bf16: bool) -> float:
        batches = [to_device(b, torch.device("cpu")) for b in trainer.valid]
        with torch.no_grad():
            return sum(float(loss_bits(trainer.ema, CFG, b, torch.zeros(len(b["inputs"]), dtype=torch.bool), bf16))
                       for b in batches) / len(batches)

    assert trainer.progress.valid == [(10, mean_loss(bf16=False))]
    assert mean_loss(bf16=True) != mean_loss(bf16=False)  # the precision would show


def test_the_validation_windows_do_not_depend_on_the_training_batch_size(data: Path) -> None:
    from models.train import load_split, validation_batches, windows

    valid = windows(load_split(data, "valid"), CFG)

    def drawn(batch_size: int) -> torch.Tensor:
        tc = dataclasses.replace(TC, batch_size=batch_size, valid_examples=8)
        return torch.cat([b["inputs"] for b in validation_batches(valid, tc)])

    assert drawn(4).shape[0] == 8 and torch.equal(drawn(4), drawn(8)) and torch.equal(drawn(4), drawn(1))


def test_a_new_run_standardises_frames_with_the_training_data(data: Path, tmp_path: Path) -> None:
    from models.train import load_split
    from models.wavenet import frame_stats

    trainer = Trainer(CFG, TC, data, tmp_path / "run", torch.device("cpu"))
    mean, std = frame_stats(load_split(data, "train").frames)
    for model in (trainer.model, trainer.ema):
        assert model.frame_net is not None
        np.testing.assert_allclose(model.frame_net.mean.numpy(), mean, rtol=1e-6)
        np.testing.assert_allclose(model.frame_net.std.numpy(), std, rtol=1e-6)
    assert float(std.min()) > 0.01 and abs(float(mean.mean())) > 0.5  # real log-mel statistics, not the identity


def test_resume_is_exact(data: Path, tmp_path: Path) -> None:
    one = Trainer(CFG, TC, data, tmp_path / "a", torch.device("cpu"))
    straight = one.run(12, [False], show=False)

    first = Trainer(CFG, TC, data, tmp_path / "b", torch.device("cpu"))
    part1 = first.run(5, [False], show=False)
    resumed = Trainer(CFG, TC, data, tmp_path / "b", torch.device("cpu"))
    resumed.resume(tmp_path / "b" / "checkpoint.pt")
    part2 = resumed.run(12, [False], show=False)
    assert part1 + part2 == straight  # bit-identical losses
    # and the same record of them: the loss curve has no extra point where the run was stopped
    assert dataclasses.replace(resumed.progress, seconds=0) == dataclasses.replace(one.progress, seconds=0)


def test_cli_trains_resumes_and_keeps_the_config(data: Path, tmp_path: Path) -> None:
    plain = dataclasses.replace(CFG, preemphasis=0.0)  # not a new run's default: resume must keep the saved one
    config = tmp_path / "model.json"
    raw = config_to_dict(plain)
    del raw["mel"], raw["speakers"]  # both come from the data
    config.write_text(json.dumps(raw))
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--batch-size", "2", "--window", "64", "--valid-every", "3",
              "--valid-examples", "2", "--warmup", "2"]
    assert main([*common, "--config", str(config), "--steps", "3"]) == 0
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    del payload["config"]["preemphasis"]  # as checkpoints from before pre-emphasis existed
    torch.save(payload, out / "checkpoint.pt")
    assert main([*common, "--steps", "6"]) == 0  # resumes from out/checkpoint.pt
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["progress"]["step"] == 6
    assert load_checkpoint(out / "checkpoint.pt").cfg == plain
    assert load_checkpoint(out / "checkpoint.pt", key="ema").cfg == plain
    served = tmp_path / "served.pt"
    assert main(["export", str(served), "--data", str(data), "--out", str(out), "--temperature", "0.7"]) == 0
    exported = load_checkpoint(served)
    ema = load_checkpoint(out / "checkpoint.pt", key="ema")
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(), ema.state_dict().values()))
    meta = torch.load(served, weights_only=True)
    assert meta["speakers"] == ["a", "b"] and meta["trained"]["step"] == 6 and meta["temperature"] == 0.7


def test_evaluate_reports_the_raw_and_the_ema_weights(data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--batch-size", "2", "--window", "64", "--valid-every", "4",
              "--valid-examples", "4", "--steps", "4"]
    assert main(common) == 0
    capsys.readouterr()
    assert main(["evaluate", "--data", str(data), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["step"] == 4
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    # the EMA's figure with frames is the one the run itself recorded at its last validation
    assert tuple(payload["progress"]["valid"][-1]) == (4, report["valid_bits"]["ema"]["frames"])
    assert tuple(payload["progress"]["valid_free"][-1]) == (4, report["valid_bits"]["ema"]["free"])
    assert report["valid_bits"]["model"]["frames"] != report["valid_bits"]["ema"]["frames"]  # other weights

    # the older flags still work, with a warning, and so do the training flags such lines carried
    assert main([*common, "--evaluate"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1]) == report
    assert "warning: --evaluate is now the command `wavenet-train evaluate`" in captured.err
    legacy, current = tmp_path / "legacy.pt", tmp_path / "current.pt"
    assert main([*common, "--export", str(legacy), "--export-weights=model", "--export-temperature", "0.5"]) == 0
    assert "warning: --export is now the command `wavenet-train export`" in capsys.readouterr().err
    assert main(["export", str(current), "--data", str(data), "--out", str(out), "--weights", "model",
                 "--temperature", "0.5"]) == 0
    a, b = torch.load(legacy, weights_only=True), torch.load(current, weights_only=True)
    assert a["temperature"] == b["temperature"] == 0.5
    assert all(torch.equal(x, y) for x, y in zip(a["model"].values(), b["model"].values()))


def test_a_new_model_learns_pre_emphasised_audio_unless_its_config_says_otherwise(data: Path, tmp_path: Path) -> None:
    meta = json.loads((data / "meta.json").read_text())
    assert PREEMPHASIS > 0
    assert model_config_from(argparse.Namespace(config=None), meta).preemphasis == PREEMPHASIS
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"preemphasis": 0.0}))
    assert model_config_from(argparse.Namespace(config=str(plain)), meta).preemphasis == 0.0


def test_cli_without_data_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    assert "wavenet-prepare" in capsys.readouterr().err


def test_ema_decay_warms_up() -> None:
    from models.train import ema_decay

    assert ema_decay(0, 0.9995) == pytest.approx(0.1)  # early on the average follows the weights
    assert ema_decay(100, 0.9995) < 0.95 and ema_decay(10**6, 0.9995) == 0.9995


def test_batches_depend_only_on_seed_rank_and_step(data: Path) -> None:
    from models.train import load_split, training_batch, windows

    split = windows(load_split(data, "train"), CFG)
    again = [training_batch(split, TC, 0, step) for step in (3, 1)]  # any order, any time
    first = training_batch(split, TC, 0, 1)
    assert all(torch.equal(first[k], again[1][k]) for k in first)
    assert not torch.equal(first["inputs"], again[0]["inputs"])
    assert not torch.equal(first["inputs"], training_batch(split, TC, 1, 1)["inputs"])  # ranks differ


def test_budget_ends_the_schedule_inside_the_time_left() -> None:
    from models.train import budget_steps

    assert budget_steps(1000, steps_per_second=10.0, seconds_left=60.0) == 1570  # 95 % of 600 steps
    assert budget_steps(5, steps_per_second=0.001, seconds_left=1.0) == 6  # always at least one step


def test_budget_probe_fits_the_schedule_to_the_deadline(data: Path, tmp_path: Path) -> None:
    import time

    from models.train import fit_schedule_to_budget

    trainer = Trainer(CFG, TC, data, tmp_path / "run", torch.device("cpu"))
    fit_schedule_to_budget(trainer, [False], deadline=time.monotonic() + 3600, probe=3)
    assert trainer.progress.step == 6  # warm-up and timed probe
    assert trainer.tc.steps > 6 and trainer.tc.steps != TC.steps  # the schedule now ends at the measured deadline
    trainer.run(8, [False], show=False)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["train_config"]["steps"] == trainer.tc.steps


def test_the_schedule_warms_up_from_its_start_then_decays_to_its_end() -> None:
    from models.train import learning_rate

    tc = TrainConfig(lr=1.0, lr_min=0.1, warmup=10, start=100, steps=200)
    assert learning_rate(100, tc) == pytest.approx(0.1)  # the first warm-up step
    assert learning_rate(109, tc) == pytest.approx(1.0) and learning_rate(110, tc) == pytest.approx(1.0)
    assert learning_rate(155, tc) == pytest.approx(0.55)  # half way down the cosine
    assert learning_rate(200, tc) == pytest.approx(0.1) and learning_rate(250, tc) == pytest.approx(0.1)
    assert learning_rate(9, dataclasses.replace(tc, start=0)) == pytest.approx(1.0)  # a new run's: from step 0


def test_a_resumed_budget_run_restarts_its_schedule_inside_the_budget(data: Path, tmp_path: Path) -> None:
    import time

    from models.train import fit_schedule_to_budget, learning_rate

    cut = dataclasses.replace(TC, warmup=2)  # as an earlier fit to a short budget may have left it
    trainer = Trainer(CFG, cut, data, tmp_path / "run", torch.device("cpu"))
    trainer.run(TC.steps, [False], show=False)  # a finished schedule: its learning rate is down at lr_min
    assert learning_rate(trainer.progress.step, trainer.tc) == pytest.approx(TC.lr_min)
    fit_schedule_to_budget(trainer, [False], deadline=time.monotonic() + 3600, probe=3, warmup=TC.warmup)
    tc = trainer.tc
    assert tc.start == TC.steps and tc.steps > TC.steps + 6
    assert tc.warmup == TC.warmup  # the ceiling given, not the earlier fit's 2 (a tenth of the budget is more)
    assert learning_rate(tc.start, tc) == pytest.approx(TC.lr / tc.warmup)  # warm-up again from the start
    assert learning_rate(tc.start + tc.warmup, tc) == pytest.approx(TC.lr)  # the peak, inside the budget
    assert learning_rate(tc.steps, tc) == pytest.approx(TC.lr_min)
    trainer.run(tc.start + 8, [False], show=False)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["train_config"]["start"] == tc.start


def test_a_stop_during_the_budget_probe_keeps_the_schedule(data: Path, tmp_path: Path) -> None:
    import time

    from models.train import fit_schedule_to_budget

    trainer = Trainer(CFG, TC, data, tmp_path / "run", torch.device("cpu"))
    fit_schedule_to_budget(trainer, [True], deadline=time.monotonic() + 3600, probe=3)  # Ctrl-C before it ends
    assert trainer.tc == TC  # not a schedule fitted to a rate of 0 steps/s


def test_the_budget_probe_saves_no_checkpoint_however_long_it_takes(data: Path, tmp_path: Path) -> None:
    """Its steps run with the new start and the old end: a checkpoint then, and a kill, would resume that mix."""
    import time

    from models.train import fit_schedule_to_budget

    trainer = Trainer(CFG, dataclasses.replace(TC, checkpoint_minutes=0), data, tmp_path / "run", torch.device("cpu"))
    fit_schedule_to_budget(trainer, [False], deadline=time.monotonic() + 3600, probe=3)
    assert trainer.progress.step == 6 and not (tmp_path / "run" / "checkpoint.pt").exists()
    trainer.run(8, [False], show=False)  # the fitted schedule's steps do save
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["train_config"]["steps"] == trainer.tc.steps


@pytest.mark.parametrize("emulated", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(data: Path, tmp_path: Path, emulated: bool,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import models.train

    monkeypatch.setattr(models.train, "cpu_bf16_is_emulated", lambda: emulated)
    config = tmp_path / "config.json"
    raw = config_to_dict(CFG)
    del raw["mel"], raw["speakers"]  # both come from the data
    config.write_text(json.dumps(raw))
    common = ["--data", str(data), "--out", str(tmp_path / "run"), "--config", str(config), "--device", "cpu",
              "--batch-size", "2", "--window", "64", "--steps", "1", "--valid-examples", "2"]
    assert main([*common, "--bf16"]) == 0
    assert ("bf16 on this CPU is emulated" in capsys.readouterr().err) == emulated
    assert main([*common, "--steps", "2", "--no-bf16"]) == 0
    err = capsys.readouterr().err
    assert "emulated" not in err
    assert "at step 2; waited for batches " in err  # the input pipeline's share of the run


def test_resume_without_options_keeps_the_runs_own_settings(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["--data", str(data), "--out", str(out), "--batch-size", "2", "--window", "64", "--valid-examples", "2"]
    assert main([*common, "--lr", "0.002", "--lr-min", "0.0005", "--steps", "3", "--warmup", "1"]) == 0
    assert main([*common, "--steps", "5"]) == 0  # only the end moves
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["train_config"]
    assert (saved["lr"], saved["lr_min"], saved["warmup"], saved["steps"], saved["start"]) == (0.002, 0.0005, 1, 5, 0)


@pytest.fixture
def process_group(tmp_path: Path) -> Iterator[None]:
    """A one-process gloo group: the code path torchrun takes, DistributedDataParallel included."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_distributed_training_and_budget_agree_across_processes(data: Path, tmp_path: Path,
                                                               process_group: None) -> None:
    import time

    from models.train import fit_schedule_to_budget

    trainer = Trainer(CFG, TC, data, tmp_path / "run", torch.device("cpu"))
    assert isinstance(trainer.ddp, torch.nn.parallel.DistributedDataParallel)
    fit_schedule_to_budget(trainer, [False], deadline=time.monotonic() + 3600, probe=2)
    assert trainer.progress.step == 4 and trainer.tc.steps > 4
    losses = trainer.run(8, [False], show=False)
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert trainer.tc.warmup == min(TC.warmup, max(4, trainer.tc.steps // 10))


def file_with(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_run_that_cannot_start_says_why_in_one_line(data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Bad options, config files, checkpoints and data: exit 2 and one line naming the cause, no traceback."""
    from models.wavenet import save_checkpoint

    run = ["--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "2", "--window", "64",
           "--valid-examples", "4", "--steps", "2"]
    served = tmp_path / "served"
    served.mkdir()
    save_checkpoint(served / "checkpoint.pt", WaveNet(CFG))
    other = tmp_path / "other"
    write_prepared(other, {"train": [(np.zeros(400), 0)], "valid": [(np.zeros(400), 0)]},
                   dataclasses.replace(TINY_MEL, n_mels=5), ["x", "y", "z"])
    (tmp_path / "half").mkdir()  # meta.json alone
    (tmp_path / "half" / "meta.json").write_text((data / "meta.json").read_text())
    typo = file_with(tmp_path / "typo.json", '{"residual_chanels": 8}')
    wrong = file_with(tmp_path / "type.json", '{"residual_channels": "8"}')
    cases = {
        "valid_every (--valid-every) must be >= 1, got 0": [*run, "--valid-every", "0"],
        "lr_min (--lr-min) must be in [0, lr] (lr 0.01), got 0.1": [*run, "--lr", "0.01", "--lr-min", "0.1"],
        f"window (--window) must be at least one hop ({TINY_MEL.hop} samples), got 3": [*run, "--window", "3"],
        f"--config {typo}: unknown config fields: ['residual_chanels']": [*run, "--config", typo],
        f"--config {wrong}: residual_channels must be a whole number >= 1, got '8'": [*run, "--config", wrong],
        "cannot read --config /missing.json: No such file or directory": [*run, "--config", "/missing.json"],
        "is not JSON": [*run, "--config", file_with(tmp_path / "bad.json", "{")],
        "mel is the data's": [*run, "--config", file_with(tmp_path / "mel.json", '{"mel": null}')],
        "is a serving model, not a training checkpoint": [*run, "--out", str(served)],
        "none of the 4 clips of the valid split is as long as the window (4000 samples, --window)":
            [*run, "--window", "4000"],
        "cannot read the train split of": ["--data", str(tmp_path / "half"), "--out", str(tmp_path / "r2")],
        "checkpoint not found": ["evaluate", "--data", str(data), "--out", str(tmp_path / "none")],
    }
    for message, argv in cases.items():
        assert main(argv) == 2, message
        err = capsys.readouterr().err
        assert message in err and err.startswith("wavenet-train: ") and err.count("\n") == 1, err

    assert main(run) == 0  # a real run; then the data it did not train on
    capsys.readouterr()
    assert main(["--data", str(other), "--out", str(tmp_path / "run"), "--steps", "3"]) == 2
    assert "was trained on other data" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "x.pt"), "--data", str(other), "--out", str(tmp_path / "run")]) == 2
    assert "the data names 3 speakers, the model in" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(SystemExit):
        main([*run, "--budget-minutes", "-1"])
    assert "argument --budget-minutes: must be >= 0, got -1" in capsys.readouterr().err


def test_a_timed_run_leaves_no_alarm_and_the_signals_as_they_were(data: Path, tmp_path: Path) -> None:
    """Under torchrun a process's alarm still armed after the others stopped the run killed it on its way out."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "2", "--window", "64",
                 "--valid-examples", "4", "--steps", "2", "--minutes", "30"]) == 0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_resuming_with_a_config_file_warns_that_it_is_ignored(data: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = ["--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "2", "--window", "64",
           "--valid-examples", "4", "--steps", "2"]
    assert main(run) == 0
    capsys.readouterr()
    assert main([*run, "--steps", "3", "--config", file_with(tmp_path / "c.json", '{"preemphasis": 0}')]) == 0
    assert "--config ignored: resuming" in capsys.readouterr().err


@pytest.mark.parametrize("examples", [1, 4, 6])
def test_validation_draws_as_many_windows_as_asked(data: Path, examples: int) -> None:
    from models.train import load_split, validation_batches, windows

    tc = dataclasses.replace(TC, valid_examples=examples)
    batches = validation_batches(windows(load_split(data, "valid"), CFG), tc)
    assert sum(len(b["targets"]) for b in batches) == examples


def test_a_model_grown_with_pitch_input_trains_from_another_runs_weights(data: Path, tmp_path: Path) -> None:
    """--init: a new run with pitch input starts from a run without it; its pitch rows are tracked once and
    kept beside the data; the head and the excitation weights learn."""
    common = ["--data", str(data), "--batch-size", "2", "--window", "64", "--valid-every", "3", "--valid-examples",
              "2", "--warmup", "2", "--lr", "3e-3"]
    assert main([*common, "--out", str(tmp_path / "base"), "--steps", "3"]) == 0
    config = tmp_path / "pitch.json"
    config.write_text(json.dumps({"pitch_harmonics": 2}))
    base = tmp_path / "base" / "checkpoint.pt"
    out = tmp_path / "pitch"
    assert main([*common, "--out", str(out), "--config", str(config), "--init", str(base), "--steps", "4",
                 "--pitch-head-steps", "20"]) == 0
    assert (data / "train" / "pitch.npy").is_file() and (data / "valid" / "pitch.npy").is_file()
    rows = np.load(data / "train" / "pitch.npy")
    assert rows.shape == (len(np.load(data / "train" / "frames.npy")), 2) and (rows[:, 0] > 0).any()
    grown, source = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(base)
    assert grown.cfg.pitch_harmonics == 2 and grown.excitation_proj is not None
    assert grown.excitation_proj.weight.abs().max() > 0  # moved from its zero start
    assert torch.equal(grown.frame_net.mean, source.frame_net.mean)  # type: ignore[union-attr]


def test_input_noise_changes_the_inputs_only(data: Path) -> None:
    from models.train import load_split, training_batch, windows

    w = windows(load_split(data, "train"), CFG)
    clean = training_batch(w, TC, 0, 5)
    noisy = training_batch(w, dataclasses.replace(TC, input_noise=4.0), 0, 5)
    assert torch.equal(clean["targets"], noisy["targets"]) and torch.equal(clean["frames"], noisy["frames"])
    assert not torch.equal(clean["inputs"], noisy["inputs"])
    assert int(noisy["inputs"].min()) >= 0 and int(noisy["inputs"].max()) < CFG.classes


def test_self_inputs_are_the_models_own_one_step_picks(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chosen example's input at position t is what the model picks for position t - 1 from the true past; the
    first input, the targets and the examples not chosen stay true; the same step draws the same."""
    import models.train as train
    from models.train import load_split, to_device, training_batch, windows

    w = windows(load_split(data, "train"), CFG)
    batch = to_device(training_batch(w, TC, 0, 5), torch.device("cpu"))
    torch.manual_seed(0)
    model = WaveNet(CFG)
    every = dataclasses.replace(TC, self_inputs=1.0)
    monkeypatch.setattr(train, "SELF_INPUT_TEMPERATURE", 0.0)  # the likeliest class: comparable with argmax
    picked = train.self_sampled_inputs(model, CFG, batch, every, 5)
    with torch.no_grad():
        logits = model(batch["inputs"], batch["frames"], batch["speaker"], batch["free"], batch.get("excitation"))
    assert torch.equal(picked[:, 0], batch["inputs"][:, 0])
    assert torch.equal(picked[:, 1:], logits.argmax(dim=1)[:, :-1])
    assert not torch.equal(picked, batch["inputs"])
    monkeypatch.setattr(train, "SELF_INPUT_TEMPERATURE", 0.7)
    half = dataclasses.replace(TC, self_inputs=0.5)
    drawn = [train.self_sampled_inputs(model, CFG, batch, half, step) for step in (5, 5, 6, 7, 8)]
    assert torch.equal(drawn[0], drawn[1])  # a pure function of (seed, step): a resumed run redraws the same
    kept = [(d == batch["inputs"]).all(dim=1) for d in drawn]
    assert any(k.any() and not k.all() for k in kept)  # some examples chosen, some left true
    assert torch.equal(train.self_sampled_inputs(model, CFG, batch, TC, 5), batch["inputs"])  # 0: none


def test_a_run_with_self_inputs_trains(data: Path, tmp_path: Path) -> None:
    tc = dataclasses.replace(TC, steps=6, self_inputs=0.5, valid_every=3)
    trainer = Trainer(CFG, tc, data, tmp_path / "run", torch.device("cpu"))
    losses = trainer.run(tc.steps, [False], show=False)
    assert len(losses) == 6 and all(np.isfinite(losses))


def test_the_pitch_head_fitted_alone_follows_the_tracker(data: Path) -> None:
    from models.train import fit_pitch_head, load_split

    split = load_split(data, "train", with_pitch=True)
    torch.manual_seed(0)
    model = WaveNet(dataclasses.replace(CFG, pitch_harmonics=2))
    voiced = split.pitch[:, 0] > 0  # type: ignore[index]
    frames = torch.as_tensor(np.array(split.frames)).T[None]
    from models.wavenet import pad_frames

    def f0_error() -> float:  # mean |log2| error of the head's F0 on the voiced rows (whole split as one signal)
        with torch.no_grad():
            f0 = model.pitch_rows(pad_frames(frames, model.cfg))[0, 0, : len(voiced)].numpy()
        return float(np.abs(np.log2(f0[voiced] / split.pitch[voiced, 0])).mean())  # type: ignore[index]

    before = f0_error()
    fit_pitch_head(model, split, 300, seed=0)
    assert f0_error() < 0.75 * before  # 0.50 -> 0.31 (log2 units) in 300 steps on these 8-band frames
