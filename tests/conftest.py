"""Shared test helpers: tiny synthetic runs and a subprocess runner for the CLI."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
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


# The tiny experiments several modules read, trained (and measured) once per session; each test works on its own
# copy (`copied`), so no test sees another's changes. 8x8 images: 5 checkpoints a run (iterations 0 1 2 4 8).
SMALL_RUN = ["image_size=8", "depth=1", "width=4", "epochs=2", "synthetic_train_size=128"]
SMALL_QUICK = ["probe_dimensions=32", "log_level=WARNING", "threads=1"]  # threads is in no recipe: the cells are
# fresh for a call without it (tests/test_analysis.py's QUICK)


def trained_only(out_dir: Path, run: list[str]) -> Path:
    trained = run_cli("train.py", tiny_words(out_dir, *run))
    assert trained.returncode == 0, trained.stderr
    return out_dir


def measured_copy(trained: Path, tmp_path_factory, name: str) -> Path:
    """A copy of the trained out_dir, measured under SMALL_QUICK: every figure, the report and phases.csv drawn."""
    out_dir = copied(trained, tmp_path_factory.mktemp(name))
    analysed = run_cli("analysis.py", [f"out_dir={out_dir}", *SMALL_QUICK])
    assert analysed.returncode == 0, analysed.stderr
    return out_dir


def pytest_collection_modifyitems(items) -> None:
    """Every test on the Slurm cluster in one xdist group: `make test` runs two workers (-n 2 --dist loadgroup), and
    the Slurm lane, mostly waiting on Slurm's own clock, runs on one of them beside the CPU work on the other; its
    tests share the one cluster's queue one at a time, as in a single process."""
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))


def slurm_answers() -> bool:
    """Whether a Slurm controller answers with a usable node (`scontrol ping` first: it answers at once, where sinfo
    against a configured controller that is down waits ~9 s to give up)."""
    try:
        if subprocess.run(["scontrol", "ping"], capture_output=True, timeout=20).returncode != 0:
            return False
        listing = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(state in listing for state in ("idle", "mix", "alloc"))


@pytest.fixture(scope="session", autouse=True)
def slurm_cluster() -> str:
    """'' once a Slurm answers — the one already up, or the one-node cluster slurm/local_cluster.sh starts as root —
    else why there is none. Started first, for the whole session: every train.py asks squeue which jobs are queued
    before it launches (slurm/runs.py), and a squeue whose configured controller is down waits about 9 s to give up,
    in every train.py of every test that runs before the Slurm tests start it."""
    if slurm_answers():
        return ""
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        return "no Slurm here: install slurm-wlm and munge and run as root (CI does) to run these tests"
    with open(Path(tempfile.gettempdir()) / "lab-tests-slurm-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # `make test`'s two workers start it once (local_cluster.sh: already running)
        started = subprocess.run(["sh", str(REPOSITORY / "slurm" / "local_cluster.sh"), "start"],
                                 capture_output=True, text=True, timeout=120)
    if started.returncode != 0 or not slurm_answers():
        return f"Slurm could not be started here: {started.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="session")
def one_run_trained(tmp_path_factory) -> Path:
    """One SMALL_RUN run (seed 0, no label noise), trained, not measured."""
    return trained_only(tmp_path_factory.mktemp("one_run_trained"), SMALL_RUN)


@pytest.fixture(scope="session")
def one_run_measured(one_run_trained, tmp_path_factory) -> Path:
    """one_run_trained measured (a copy): every checkpoint, figures, report and phases."""
    return measured_copy(one_run_trained, tmp_path_factory, "one_run_measured")


@pytest.fixture(scope="session")
def two_runs_trained(tmp_path_factory) -> Path:
    """Two SMALL_RUN runs, label_noise=0 (one_run_trained's run) and 0.25, trained, not measured."""
    return trained_only(tmp_path_factory.mktemp("two_runs_trained"), [*SMALL_RUN, "label_noise=0,0.25"])


@pytest.fixture(scope="session")
def two_runs_measured(two_runs_trained, tmp_path_factory) -> Path:
    """two_runs_trained measured (a copy): every checkpoint of both runs, figures, report and phases."""
    return measured_copy(two_runs_trained, tmp_path_factory, "two_runs_measured")


@pytest.fixture
def in_process(capsys):
    """`in_process("analysis.py", words)`: the script's main(words) in this process, read as run_cli's result
    (returncode, stdout, stderr) without starting an interpreter (seconds each on a busy 2-CPU machine). Its
    stderr holds what the subprocess would print there: the log records at the command line's log_level
    (setup_logging's basicConfig configures logging as in a fresh interpreter: pytest's own log handlers are
    set aside during the call) and Python's warnings under the interpreter's default filters. The output
    printed before the call is dropped; the working folder (the repository, as run_cli's), the logging set-up,
    the warning filters and torch's thread count are restored after each call."""
    import logging
    import warnings

    import torch

    import analysis
    import train

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    def run(script: str, words: list[str]) -> subprocess.CompletedProcess:
        main = {"analysis.py": analysis.main, "train.py": train.main}[script]
        capsys.readouterr()
        root, folder, threads = logging.getLogger(), os.getcwd(), torch.get_num_threads()
        handlers, level = root.handlers[:], root.level
        root.handlers = []
        os.chdir(REPOSITORY)
        try:
            with warnings.catch_warnings():
                warnings.resetwarnings()
                warnings.simplefilter("default")
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                    warnings.simplefilter("ignore", category)
                warnings.showwarning = show
                returncode = main(list(words))
        finally:
            for handler in root.handlers:
                handler.close()
            root.handlers = handlers
            root.setLevel(level)
            os.chdir(folder)
            torch.set_num_threads(threads)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess([script, *words], returncode, out, err)

    return run


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
