"""python benchmarks/decide_grid.py [runs=1000] — time to decide what to submit for a finished grid.

Fabricates a finished grid of `runs` runs (settings, nine listed checkpoints, a "done" status and a
job record in each run folder, as a real finished grid leaves them), then times, in one process, what `sh train.sh` does
before it would call sbatch: parse the command line into the grid, pre-flight the datasets, read
every run's state and that its checkpoints are intact (plus one squeue call when there is one) and decide. Target: <= 5 s and 0 jobs.
Also prints the whole command's wall time (Python start and `import torch` included).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

import train  # noqa: E402
from conf import parse_arguments  # noqa: E402
from folders import ExperimentFolder  # noqa: E402

TARGET_SECONDS = 5.0
CHECKPOINTS = (0, 1, 2, 4, 8, 16, 32, 64, 100)


def grid_words(runs: int, out_dir: Path) -> list[str]:
    """A Cartesian grid of exactly `runs` runs: seeds x widths (x depths when runs > 100)."""
    depths = max(1, runs // 100)
    per_depth = runs // depths
    seeds = max(1, per_depth // 10)
    widths = per_depth // seeds
    return [f"depth={','.join(str(d) for d in range(1, depths + 1))}",
            f"width={','.join(str(w) for w in range(8, 8 + widths))}",
            f"seed={','.join(str(s) for s in range(seeds))}",
            "launcher=slurm", f"out_dir={out_dir}", "log_level=WARNING"]


def fabricate_finished(words: list[str]) -> int:
    plan = parse_arguments(words)
    experiment = ExperimentFolder.of(plan.execution.out_dir, plan.experiment)
    for index, settings in enumerate(plan.grid):
        folder = experiment.run(settings.run_id)
        folder.prepare(settings)
        folder.start_manifest(list(CHECKPOINTS), iterations_per_epoch=10)
        for iteration in CHECKPOINTS:  # listed checkpoints: the launcher checks they are intact
            folder.save_checkpoint(iteration=iteration, epoch=0.0, stage=1, settings=settings, input_shape=(1, 1, 1),
                                   num_classes=2, model_state={}, metrics={})
        folder.write_job(f"900_{index}")
        folder.write_status("done", iteration=100, total_iterations=100)
    return len(plan.grid)


def main(arguments: list[str]) -> int:
    options = dict(argument.split("=", 1) for argument in arguments)
    with tempfile.TemporaryDirectory() as folder:
        words = grid_words(int(options.get("runs", 1000)), Path(folder))
        runs = fabricate_finished(words)
        output = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(output):
            code = train.main(words)
        seconds = time.perf_counter() - start
        submitted = "submitted 0 jobs" in output.getvalue()
        start = time.perf_counter()
        command = subprocess.run([sys.executable, str(REPOSITORY / "train.py"), *words], capture_output=True, text=True)
        command_seconds = time.perf_counter() - start
    print(f"{'benchmark':<52} {'seconds':>8} {'target':>8}")
    print(f"{f'decide a finished {runs}-run grid (in process)':<52} {seconds:>8.2f} {TARGET_SECONDS:>7.1f}s"
          f"  {'0 jobs submitted' if submitted and code == 0 else 'SUBMITTED JOBS OR FAILED: ' + output.getvalue()}")
    print(f"{'the same, whole command (python start, import torch)':<52} {command_seconds:>8.2f}        -"
          f"  exit {command.returncode}")
    return 0 if submitted and code == 0 and seconds <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
