"""Exact resume (DESIGN.md contract 4): a run killed at any moment — including in the middle of a
save — and restarted ends with the same bytes as one never interrupted."""

import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPOSITORY, read_json, run_cli, tiny_words

pytestmark = pytest.mark.slow

# 32 iterations per epoch, 128 in all; a resumable state after every iteration, so kills land in saves.
WORDS = ["synthetic_train_size=1024", "epochs=4", "augment=true", "label_noise=0.1", "lr_milestones=[2]",
         "resume_every_seconds=0"]

# Runs train.py in a process that SIGKILLs itself at its Nth atomic rename: after a temporary is
# fully written but before it replaces the real file — the worst moment of a save.
KILL_AT_RENAME = """
import os, signal, sys
sys.path.insert(0, {repository!r})
real_replace, count = os.replace, [0]
def replace(source, target):
    count[0] += 1
    if count[0] == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(source, target)
os.replace = replace
import train
sys.exit(train.main({words!r}))
"""


def checkpoint_digests(out_dir):
    (run_dir,) = (out_dir / "default" / "runs").iterdir()
    manifest = read_json(run_dir / "manifest.json")
    return run_dir, {name: entry["sha256"] for name, entry in manifest["files"].items()}


def state_of(run_dir):
    return status_of(run_dir).get("state", "new")


def status_of(run_dir):
    path = run_dir / "status.json"
    return read_json(path) if path.exists() else {}


def wait_until_training(process, run_dir):
    """Until this process itself reports progress (an earlier, killed one may have left "running")."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        status = status_of(run_dir)
        if status.get("pid") == process.pid and status.get("state") == "running" and status.get("iteration", 0) > 0:
            return
        time.sleep(0.01)


def test_sigkill_at_random_moments_resumes_bitwise(tmp_path):
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    assert run_cli("train.py", tiny_words(reference_dir, *WORDS)).returncode == 0
    reference_run, reference = checkpoint_digests(reference_dir)

    words = tiny_words(interrupted_dir, *WORDS)
    generator = random.Random(0)
    kills = 0
    # Kills inside saves: the Nth rename of a fresh process (settings, manifest, checkpoint, resume state, hash, status...).
    for rename in (3, 7, 12, 20, 33):
        script = KILL_AT_RENAME.format(repository=str(REPOSITORY), n=rename, words=words)
        result = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True, timeout=300)
        kills += result.returncode == -signal.SIGKILL
    # Kills at random moments while training runs.
    run_dir = interrupted_dir / "default" / "runs" / reference_run.name
    for _ in range(3):
        process = subprocess.Popen([sys.executable, str(REPOSITORY / "train.py"), *words], cwd=REPOSITORY,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_training(process, run_dir)
        time.sleep(generator.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 5, "the test must actually interrupt the run"
    assert state_of(run_dir) != "done", "the last kill should leave a partial run"
    final = run_cli("train.py", words)
    assert final.returncode == 0, final.stderr
    assert state_of(run_dir) == "done"
    _, resumed = checkpoint_digests(interrupted_dir)
    assert resumed == reference  # every checkpoint, byte for byte: weights, iteration, settings
    last = max(reference)
    weights = torch.load(run_dir / "checkpoints" / last, weights_only=True)["model"]
    expected = torch.load(reference_run / "checkpoints" / last, weights_only=True)["model"]
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    assert (run_dir / "log.jsonl").read_text() == (reference_run / "log.jsonl").read_text()
    assert not list(run_dir.rglob("*.tmp-*"))


def test_sigterm_saves_then_stops_and_resumes_bitwise(tmp_path):
    reference_dir, stopped_dir = tmp_path / "reference", tmp_path / "stopped"
    slow = [*WORDS, "resume_every_seconds=3600", "epochs=40"]  # no periodic saves: the signal must cause one
    assert run_cli("train.py", tiny_words(reference_dir, *slow)).returncode == 0
    reference_run, reference = checkpoint_digests(reference_dir)
    run_dir = stopped_dir / "default" / "runs" / reference_run.name
    process = subprocess.Popen([sys.executable, str(REPOSITORY / "train.py"), *tiny_words(stopped_dir, *slow)],
                               cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_training(process, run_dir)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    status = read_json(run_dir / "status.json")
    assert status["state"] == "interrupted" and 0 < status["iteration"] < status["total_iterations"]
    saved = sorted((run_dir / "resume").glob("state_*.pt"))[-1]
    assert saved.name == f"state_{status['iteration']:08d}.pt"
    assert run_cli("train.py", tiny_words(stopped_dir, *slow)).returncode == 0
    assert checkpoint_digests(stopped_dir)[1] == reference
