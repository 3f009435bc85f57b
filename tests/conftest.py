"""Shared test helpers: tiny synthetic runs and a subprocess runner for the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))


def pytest_configure(config):
    """One torch thread in this process, for every test alike: tiny tensors gain nothing from two, on a busy
    2-CPU machine two threads spin-wait on each other, and a test's numbers must not depend on which test
    ran before it (training.run restores the count it found; each run's own count is its record's)."""
    import torch

    torch.set_num_threads(1)

# A run that trains in about a second on a CPU: 8 iterations per epoch, 3 epochs.
TINY = ["synthetic_train_size=256", "synthetic_test_size=64", "image_size=16", "batch_size=32", "epochs=3",
        "arch=convnet", "depth=2", "width=8", "lr=0.05"]


def tiny_words(out_dir: Path, *extra: str) -> list[str]:
    return [*TINY, f"out_dir={out_dir}", "progress=off", "threads=1", *extra]


def run_cli(script: str, words: list[str], *, timeout: float = 300, **options) -> subprocess.CompletedProcess:
    """`python <script> <words>` in the repository, as a user would type it."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPOSITORY / script), *words], cwd=REPOSITORY, env=environment,
                          capture_output=True, text=True, timeout=timeout, **options)


def trained_and_measured(out_dir: Path, run: list[str], analysis: list[str]) -> Path:
    """`out_dir` after `train.py` (tiny_words with `run`) and `analysis.py` (with `analysis`), both asserted to
    succeed: a measured experiment that a module's tests each copy (shutil.copytree keeps its stamps)."""
    trained = run_cli("train.py", tiny_words(out_dir, *run))
    assert trained.returncode == 0, trained.stderr
    analysed = run_cli("analysis.py", [f"out_dir={out_dir}", *analysis])
    assert analysed.returncode == 0, analysed.stderr
    return out_dir


def copied(out_dir: Path, tmp_path: Path) -> Path:
    """A test's own copy of a module's measured out_dir (stamps kept, as the original's)."""
    import shutil

    return Path(shutil.copytree(out_dir, tmp_path / "out"))


def refusal_lines(stderr: str) -> list[str]:
    """stderr's lines but the notices naming a user's module file as it is imported (models/user_module.py says
    it every time, before the refusal or the work): a refusal is one line besides them."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("importing ")]


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def only_run_dir(out_dir: Path, experiment: str = "default") -> Path:
    (run_dir,) = (out_dir / experiment / "runs").iterdir()
    return run_dir


@pytest.fixture
def one_thread():
    """Tiny tensors: on a busy 2-CPU machine two torch threads spin-wait on each other (20 s vs 2 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_settings():
    from conf import parse_arguments

    def make(*extra: str):
        plan = parse_arguments([*TINY, "progress=off", "threads=1", *extra])  # one thread: see one_thread
        return plan.grid[0], plan.execution

    return make
