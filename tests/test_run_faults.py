"""Faults a user can hit in training, each reproduced: damaged files, group folders, full or read-only disks."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from folders import RunFolder, RunFolderError
from tests.conftest import REPOSITORY, copied, only_run_dir, read_json, run_cli, tiny_words
from training import loop

pytestmark = pytest.mark.usefixtures("one_thread")


def folder_bytes(run_dir: Path) -> dict[str, bytes]:
    """What must come out the same whatever happened on the way: every checkpoint, the log, the manifest."""
    paths = [*sorted((run_dir / "checkpoints").glob("*.pt")), run_dir / "log.jsonl", run_dir / "manifest.json"]
    return {path.relative_to(run_dir).as_posix(): path.read_bytes() for path in paths}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The out_dir of an uninterrupted run of the tiny grid, trained by train.py's main in this process (as
    `python train.py`, less the interpreter's start); tests that change it work on a copy (conftest's `copied`)."""
    out_dir = tmp_path_factory.mktemp("reference")
    assert train.main(tiny_words(out_dir)) == 0
    return out_dir


@pytest.fixture(scope="module")
def reference(trained) -> dict[str, bytes]:
    """What an uninterrupted run of the tiny grid writes."""
    return folder_bytes(only_run_dir(trained))


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A small file system of our own (root only: a full disk or a read-only one, for real)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The command said what is wrong in one line (no traceback), naming each fragment."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:") or " ERROR " in line]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), result.stderr


@pytest.mark.parametrize("damage", ["overwritten", "deleted"])
def test_a_finished_runs_damaged_checkpoint_is_remade_on_the_next_launch(tmp_path, trained, reference, damage,
                                                                         in_process):
    """Fault 1: "skipping 1 done run" left a corrupt checkpoint for ever; now the launch re-makes it, bit for bit."""
    out_dir = copied(trained, tmp_path)  # the finished run
    victim = only_run_dir(out_dir) / "checkpoints" / "iteration_00000004.pt"
    if damage == "overwritten":  # same size, other bytes: only the hash tells
        victim.write_bytes(b"garbage" + victim.read_bytes()[7:])
    else:
        victim.unlink()
    status = in_process("train.py", ["status", *tiny_words(out_dir)])
    assert "damaged" in status.stdout
    relaunched = in_process("train.py", tiny_words(out_dir))
    assert relaunched.returncode == 0 and "1 done" in relaunched.stdout, relaunched.stdout + relaunched.stderr
    assert folder_bytes(only_run_dir(out_dir)) == reference
    assert "skipping 1 done" in in_process("train.py", tiny_words(out_dir)).stdout


def test_files_follow_the_umask_so_a_group_can_share_the_runs(tmp_path, in_process):
    """Fault 2: mkstemp made every file 0600; under umask 002 the group must read and write them."""
    previous = os.umask(0o002)  # this process's, for the call only
    try:
        result = in_process("train.py", tiny_words(tmp_path))
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    files = [path for path in (tmp_path / "default").rglob("*") if path.is_file()]
    assert len(files) > 10
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
    assert {mode & 0o664 for mode in modes.values()} == {0o664}, modes  # owner and group read+write
    assert all(mode & 0o002 == 0 for mode in modes.values())  # what the umask takes away stays away


def _state(folder: RunFolder, iteration: int) -> Path:
    return folder.resume_state_path(iteration)


def test_a_resume_state_that_passes_its_hash_but_does_not_load_falls_back(tmp_path, tiny_settings, reference, caplog):
    """Fault 4: a state whose sha256 matches but that torch cannot load failed the run for good."""
    settings, execution = tiny_settings("resume_every_seconds=0")
    folder = RunFolder(tmp_path)
    with pytest.raises(loop.Interrupted):  # stop after a few saves, as a kill would
        _train_until(settings, folder, execution, iteration=12)
    newest = max(folder.resume.glob("state_*.pt"))
    newest.write_bytes(b"not a torch file at all")
    newest.with_suffix(".sha256").write_text(__import__("hashlib").sha256(newest.read_bytes()).hexdigest() + "\n")
    assert loop.run(settings, tmp_path, execution) == "done"
    assert "unusable" in caplog.text
    assert folder_bytes(tmp_path) == reference


def test_a_resume_state_that_loads_but_does_not_fit_falls_back(tmp_path, tiny_settings, reference, caplog):
    """A state that loads but whose weights do not fit the model (another tool's file) is skipped too."""
    settings, execution = tiny_settings("resume_every_seconds=0")
    folder = RunFolder(tmp_path)
    with pytest.raises(loop.Interrupted):
        _train_until(settings, folder, execution, iteration=12)
    newest = max(folder.resume.glob("state_*.pt"))
    iteration = int(newest.stem.split("_")[1])
    folder.save_resume_state({"iteration": iteration, "model": {"nonsense": torch.zeros(3)}, "optimizer": {},
                              "torch_rng": torch.get_rng_state()})
    assert loop.run(settings, tmp_path, execution) == "done"
    assert "does not fit" in caplog.text
    assert folder_bytes(tmp_path) == reference


def _train_until(settings, folder: RunFolder, execution, iteration: int) -> None:
    """Train until `iteration` has been saved, then stop as SIGTERM would (the state is saved first)."""
    original = RunFolder.save_resume_state

    def save_then_stop(self, state):
        original(self, state)
        if state["iteration"] >= iteration:
            raise loop.Interrupted(15)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunFolder, "save_resume_state", save_then_stop)
        loop.run(settings, folder.path, execution)


def test_an_edited_settings_file_is_refused_not_mislabelled(tmp_path, tiny_settings):
    """Fault 10: an edited settings.json would label results with settings they were not trained with."""
    settings, execution = tiny_settings()
    assert loop.run(settings, tmp_path, execution) == "done"
    record = read_json(tmp_path / "settings.json")
    record["settings"]["lr"] = 0.5
    (tmp_path / "settings.json").write_text(__import__("json").dumps(record))
    with pytest.raises(RunFolderError, match="was edited"):
        RunFolder(tmp_path).read_settings()
    with pytest.raises(RunFolderError, match="other settings"):
        loop.run(settings, tmp_path, execution)


@pytest.mark.parametrize("broken, message", [("{not json", "not valid JSON"),
                                             ('{"run_id": "x", "settings": {"no_such_key": 1}}', "valid settings")])
def test_an_unreadable_settings_file_is_named(tmp_path, broken, message):
    (tmp_path / "settings.json").write_text(broken)
    with pytest.raises(RunFolderError, match=message) as caught:
        RunFolder(tmp_path).read_settings()
    assert "settings.json" in str(caught.value) and "\n" not in str(caught.value)


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path):
    """Fault 6: out_dir naming a file ended in a traceback."""
    (tmp_path / "taken").write_text("a file")
    result = run_cli("train.py", tiny_words(tmp_path / "taken"))
    assert result.returncode == 1
    one_error_line(result, str(tmp_path / "taken"), "not a folder")


def test_a_read_only_out_dir_is_one_line(tmp_path, in_process):
    with mounted_tmpfs(tmp_path / "read_only", "ro,size=1m") as read_only:
        result = in_process("train.py", tiny_words(read_only))
    assert result.returncode == 1
    one_error_line(result, "Read-only file system", str(read_only))


def test_a_read_only_data_root_for_a_download_is_one_line(tmp_path, in_process):
    with mounted_tmpfs(tmp_path / "read_only", "ro,size=1m") as read_only:
        result = in_process("train.py", [*tiny_words(tmp_path / "out"), "dataset=cifar10", "download=true",
                                      f"data_root={read_only / 'datasets'}"])
        download = subprocess.run([sys.executable, "-m", "data", "download", "mnist", f"data_root={read_only}"],
                                  cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and download.returncode == 1
    one_error_line(result, "Read-only file system")
    one_error_line(download, "Read-only file system")


def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes_bitwise(tmp_path, reference, in_process):
    """A full disk mid-run: one line naming the file and the fix, exit 1, nothing half-written; once
    there is room the same command finishes the run, bit for bit as if nothing had happened."""
    with mounted_tmpfs(tmp_path / "small", "size=96k") as small:
        full = in_process("train.py", tiny_words(small))
        assert full.returncode == 1, full.stdout + full.stderr
        one_error_line(full, "No space left on device", str(small), "free space")
        assert not [path for path in small.rglob("*.tmp-*")], "a temporary was left behind"
        run_dir = only_run_dir(small)
        assert read_json(run_dir / "settings.json")["run_id"] == run_dir.name  # what was written is whole
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        resumed = in_process("train.py", tiny_words(small))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert folder_bytes(run_dir) == reference
    assert os.path.ismount(small) is False


def test_a_large_grid_is_announced_before_its_pre_flight_and_a_huge_one_refused(tmp_path, in_process):
    """Fault 9: a 10⁶-run grid was silent for 150 s and 2.5 GB; now its size comes first (or a refusal)."""
    seeds = "seed=" + ",".join(str(seed) for seed in range(1000))
    missing = [f"out_dir={tmp_path}", "dataset=cifar10", "download=false", f"data_root={tmp_path / 'none'}"]
    announced = in_process("train.py", [seeds, *missing])
    assert announced.returncode == 2
    lines = announced.stderr.strip().splitlines()
    assert lines[0].startswith("building and checking a grid of up to 1,000 runs") and "cifar10" in lines[-1]
    refused = in_process("train.py", [seeds, "depth=" + ",".join(str(depth) for depth in range(1, 12)), *missing])
    assert refused.returncode == 2 and "11,000 runs, over max_runs=10000" in refused.stderr
    assert not (tmp_path / "default").exists()
