"""loop.run(): schedule and manifest, self-describing checkpoints, divergence, corrupt files, bad input."""

import dataclasses
import json

import pytest
import torch

import models
from conf import Settings
from folders import RunFolder, RunFolderError
from training.stages import checkpoint_schedule
from tests.conftest import read_json, run_cli, tiny_words
from training import loop
from utils import sha256_file


def test_schedule_is_zero_powers_of_two_final_and_extras():
    assert checkpoint_schedule(total_iterations=24, iterations_per_epoch=8) == [0, 1, 2, 4, 8, 16, 24]
    assert checkpoint_schedule(total_iterations=16, iterations_per_epoch=8) == [0, 1, 2, 4, 8, 16]
    assert checkpoint_schedule(total_iterations=24, iterations_per_epoch=8, every_epochs=1, extra=(3, 5)) == \
        [0, 1, 2, 3, 4, 5, 8, 16, 24]


def test_learning_rate_schedules():
    settings = Settings(lr=1.0, lr_schedule="multistep", lr_milestones=(2, 4), lr_gamma=0.1, epochs=6)
    assert [loop.learning_rate(settings, epoch * 10, 10) for epoch in range(6)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    warm = dataclasses.replace(settings, warmup_iterations=4)
    assert [loop.learning_rate(warm, i, 10) for i in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    cosine = dataclasses.replace(settings, lr_schedule="cosine", lr_milestones=())
    assert loop.learning_rate(cosine, 0, 10) == 1 and loop.learning_rate(cosine, 30, 10) == pytest.approx(0.5)
    constant = dataclasses.replace(settings, lr_schedule="constant")
    assert loop.learning_rate(constant, 59, 10) == 1


def test_a_run_writes_its_schedule_manifest_log_and_status(tmp_path, tiny_settings):
    settings, execution = tiny_settings()
    assert loop.run(settings, tmp_path, execution) == "done"
    folder = RunFolder(tmp_path)
    manifest = read_json(folder.manifest_path)
    assert manifest["schedule"] == [0, 1, 2, 4, 8, 16, 24]
    assert sorted(path.name for path in folder.checkpoints.iterdir()) == \
        [f"iteration_{i:08d}.pt" for i in manifest["schedule"]]
    for name, entry in manifest["files"].items():
        assert sha256_file(folder.checkpoints / name) == entry["sha256"]
        assert 0 <= entry["test_accuracy"] <= 1
    status = read_json(folder.status_path)
    assert status["state"] == "done" and status["iteration"] == status["total_iterations"] == 24
    log = [json.loads(line) for line in folder.log_path.read_text().splitlines()]
    assert [record["iteration"] for record in log] == list(range(1, 25))
    assert all({"train_loss", "train_accuracy", "lr", "epoch"} <= set(record) for record in log)
    assert all("test_accuracy" in record for record in log if record["iteration"] in manifest["schedule"])
    assert read_json(folder.settings_path) == {"run_id": settings.run_id, "settings": settings.to_record()}
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_a_checkpoint_alone_rebuilds_the_model(tmp_path, tiny_settings):
    settings, execution = tiny_settings()
    loop.run(settings, tmp_path, execution)
    checkpoint = torch.load(tmp_path / "checkpoints" / "iteration_00000024.pt", weights_only=True)
    assert checkpoint["iteration"] == 24 and checkpoint["epoch"] == 3.0 and checkpoint["run_id"] == settings.run_id
    rebuilt_settings = Settings.from_record(checkpoint["settings"])
    assert rebuilt_settings == settings
    model = models.build(rebuilt_settings, input_shape=(3, 16, 16), num_classes=10)
    model.load_state_dict(checkpoint["model"])


def test_training_learns_the_synthetic_task(tmp_path, tiny_settings, one_thread):
    """Ten classes (chance 0.1): test accuracy ends far above chance, and the training loss falls tenfold."""
    # 640 SGD steps, ~4 s on one thread. Measured on 512 test images (seeds 0-7, one and two threads):
    # 0.08-0.11 untrained, 0.78-0.93 at the end (0.92 for seed 0); the mean training loss of the last
    # epoch is 0.003-0.021, 100-800 times below the first epoch's (~2.3 = ln 10). The thresholds sit
    # far from both chance and what is reached, so another CPU's rounding cannot cross them.
    settings, execution = tiny_settings("epochs=20", "synthetic_train_size=1024", "synthetic_test_size=512",
                                        "width=16")
    assert loop.run(settings, tmp_path, execution) == "done"
    manifest = read_json(tmp_path / "manifest.json")
    accuracies = [entry["test_accuracy"] for entry in sorted(manifest["files"].values(), key=lambda e: e["iteration"])]
    assert accuracies[0] < 0.25 and accuracies[-1] > 0.5, accuracies
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    first_epoch, last_epoch = losses[:32], losses[-32:]  # 1024 / 32 = 32 iterations per epoch
    assert sum(last_epoch) < sum(first_epoch) / 10, (sum(first_epoch) / 32, sum(last_epoch) / 32)


def test_a_done_run_is_skipped(tmp_path, tiny_settings):
    settings, execution = tiny_settings()
    loop.run(settings, tmp_path, execution)
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")}
    assert loop.run(settings, tmp_path, execution) == "done"
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")} == before


def test_a_folder_with_other_settings_is_refused(tmp_path, tiny_settings):
    settings, execution = tiny_settings()
    other, _ = tiny_settings("seed=7")
    RunFolder(tmp_path).prepare(other)
    with pytest.raises(RunFolderError, match="other settings"):
        loop.run(settings, tmp_path, execution)


def test_label_noise_is_exact_and_recorded(tmp_path, tiny_settings):
    settings, execution = tiny_settings("label_noise=0.25")
    loop.run(settings, tmp_path, execution)
    record = read_json(tmp_path / "label_noise.json")
    assert len(record["indices"]) == round(0.25 * 256)
    assert all(original != noisy for original, noisy in zip(record["original"], record["noisy"]))


def test_divergence_stops_the_run_with_its_iteration(tmp_path, tiny_settings):
    settings, execution = tiny_settings("lr=1e30", "batch_norm=false", "loss=mse")
    assert loop.run(settings, tmp_path, execution) == "diverged"
    status = read_json(tmp_path / "status.json")
    assert status["state"] == "diverged" and "non-finite" in status["reason"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["iteration"] == status["iteration"]
    assert all(value == value and abs(value) != float("inf") for value in (r["train_loss"] for r in log[:-1]))


def test_a_diverging_run_does_not_stop_the_grid(tmp_path, in_process):
    result = in_process("train.py", tiny_words(tmp_path, "lr=1e30,0.05", "batch_norm=false", "loss=mse"))
    assert result.returncode == 0, result.stderr
    states = sorted(read_json(run / "status.json")["state"] for run in (tmp_path / "default" / "runs").iterdir())
    assert states == ["diverged", "done"]
    assert "1 diverged" in result.stdout and "1 done" in result.stdout


def test_a_corrupt_resume_state_is_reported_and_the_previous_one_used(tmp_path, caplog):
    folder = RunFolder(tmp_path)
    for iteration in (5, 9):
        folder.save_resume_state({"iteration": iteration, "model": {"w": torch.full((3,), float(iteration))}})
    newest = tmp_path / "resume" / "state_00000009.pt"
    newest.write_bytes(newest.read_bytes()[:-7])  # truncated, as by a full disk
    state = folder.load_resume_state()
    assert state["iteration"] == 5
    assert "state_00000009.pt" in caplog.text and "sha256 mismatch" in caplog.text


def test_a_resume_state_that_loads_but_fails_its_sha256_is_skipped(tmp_path, caplog):
    """A valid torch file written over the newest state (it loads, but is not the bytes its .sha256 names) is not used."""
    folder = RunFolder(tmp_path)
    for iteration in (5, 9):
        folder.save_resume_state({"iteration": iteration, "model": {"w": torch.full((3,), float(iteration))}})
    newest = tmp_path / "resume" / "state_00000009.pt"
    torch.save({"iteration": 9, "model": {"w": torch.full((3,), -1.0)}}, newest)
    state = folder.load_resume_state()
    assert state["iteration"] == 5 and torch.equal(state["model"]["w"], torch.full((3,), 5.0))
    assert "state_00000009.pt" in caplog.text and "sha256 mismatch" in caplog.text


def test_a_corrupt_checkpoint_is_reported_and_remade_identically(tmp_path, tiny_settings, caplog):
    settings, execution = tiny_settings()
    loop.run(settings, tmp_path, execution)
    folder = RunFolder(tmp_path)
    original = read_json(folder.manifest_path)["files"]
    victim = folder.checkpoint_path(4)
    victim.write_bytes(b"garbage" + victim.read_bytes()[7:])
    folder.write_status("interrupted")
    assert loop.run(settings, tmp_path, execution) == "done"
    assert "iteration_00000004.pt is missing or corrupt" in caplog.text
    assert read_json(folder.manifest_path)["files"] == original
    assert sha256_file(victim) == original[victim.name]["sha256"]


@pytest.mark.parametrize("words, needle", [
    (["depth=0"], "depth=0 is out of range"),
    (["arch=transformer"], "arch='transformer' is unknown; accepted values: convnet, convresnet, mlp, resnet, vgg, vit"),
    (["dataset=cifar10", "download=false"], "python -m data download cifar10"),
    (["checkpoint_extra=[100000]"], "checkpoint_extra=[100000] goes past the last iteration"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, in_process, words, needle):
    out_dir = tmp_path / "outputs"
    result = in_process("train.py", [*tiny_words(out_dir), f"data_root={tmp_path / 'datasets'}", *words])
    assert result.returncode == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out_dir.exists()


def test_bad_input_on_the_real_command_line_exits_2_with_one_line(tmp_path):
    """The refusal above through `python train.py` itself (its `sys.exit(main(...))`), once."""
    out_dir = tmp_path / "outputs"
    result = run_cli("train.py", [*tiny_words(out_dir), "depth=0"])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["error: depth=0 is out of range; accepted: an integer >= 1"]
    assert not out_dir.exists()


def test_help_exits_0(in_process):
    result = in_process("train.py", ["--help"])
    assert result.returncode == 0 and "label_noise=0.0" in result.stdout


def test_a_run_another_process_is_training_is_left_alone(tmp_path, tiny_settings):
    from utils import exclusive_lock

    settings, execution = tiny_settings()
    with exclusive_lock(tmp_path / ".lock") as mine:  # as another process training this run holds it
        assert mine
        assert loop.run(settings, tmp_path, execution) == "busy"
        assert sorted(path.name for path in tmp_path.iterdir()) == [".lock"]  # nothing touched
    assert loop.run(settings, tmp_path, execution) == "done"
