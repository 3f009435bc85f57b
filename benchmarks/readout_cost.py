"""python benchmarks/readout_cost.py [rounds=3] [compare=all] — what the read-out costs: a transfer grid's
analysis against its training, and redrawing the demo's figures and report.

Two rows, each a whole command in a child process (Python start and its imports included), wall seconds:

- transfer grid: analysis / training. `train.py` trains a parent (CONV-3-16 on 5 of the 10 synthetic classes,
  16 px, 2,000 images, 20 epochs, as the demo's transfer story) and its 20 children (all 10 classes, 3 epochs,
  from its checkpoints at 10 starts, fine-tuning all or the head only); then `analysis.py` measures the grid and
  draws its figures and report, with the defaults (child_checkpoints=ends: a transfer child at its first and
  last checkpoints). Target ≤ 1.5×. `compare=all` also times `analysis.py child_checkpoints=all` on a fresh copy
  of the runs (every checkpoint, as before the option), printed for comparison.
- demo: figures and report (s). `analysis.py figures experiment=demo` on outputs/demo, after removing its
  publication record (figures/.published.json) so every figure is drawn again (PNGs, the default); outputs/demo
  is trained and measured first when its metrics.parquet is missing (untimed). Target ≤ 10 s. The same with
  `figure_formats=png,pdf` (a PDF beside each PNG) is printed for comparison.

Each row is the median of `rounds` rounds (a fresh grid trained and measured in each): a single round moved
by up to 2× on the shared 2-core machine. Run it alone: any other work beside it moves both rows. Exit 1 when a
target is missed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from folders import ExperimentFolder  # noqa: E402

TARGET_RATIO, TARGET_SECONDS = 1.5, 10.0
# The demo's transfer story (conf/experiments.py DEMO_TRANSFER) with 10 starts: a parent and 20 short children.
GRID = ["dataset=synthetic", "arch=convnet", "depth=3", "width=16", "image_size=16", "synthetic_train_size=2000",
        "optimizer=adam", "lr=0.001", "batch_size=64", "lr_schedule=constant", "pretrain_fraction=0.5",
        "pretrain_subset=classes", "pretrain_epochs=20", "epochs=3", "seed=0", "stage2_train=all,head",
        "start_from_iteration=0,4,8,16,32,64,96,128,192,256"]
QUIET = ["progress=off", "log_level=WARNING"]


def timed(command: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one run of `command` in the repository; RuntimeError naming it when it fails."""
    start = time.perf_counter()
    process = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {process.stderr[-500:]}")
    return wall, process.stdout


def python(script: str, *words: str) -> list[str]:
    return [sys.executable, script, *words]


def transfer_grid(folder: Path, compare: bool) -> dict:
    """{"training", "analysis" (and "analysis, every checkpoint" with `compare`): wall seconds, "summary": the
    analysis's line of what it measured} of the transfer grid trained into `folder` (one round)."""
    trained = folder / "trained"
    times = {"training": timed(python("train.py", *GRID, *QUIET, f"out_dir={trained}"))[0]}
    runs = ExperimentFolder.of(trained, "default").runs_path
    measured = folder / "measured"
    shutil.copytree(runs, ExperimentFolder.of(measured, "default").runs_path)  # the trained runs stay unmeasured
    times["analysis"], output = timed(python("analysis.py", *QUIET, f"out_dir={measured}"))
    times["summary"] = next((line for line in output.splitlines() if "checkpoint(s) measured" in line), "")
    if compare:
        every = folder / "every"
        shutil.copytree(runs, ExperimentFolder.of(every, "default").runs_path)
        times["analysis, every checkpoint"] = timed(python("analysis.py", *QUIET, f"out_dir={every}",
                                                           "child_checkpoints=all"))[0]
    return times


def demo_figures(*words: str) -> float:
    """Wall seconds of `analysis.py figures experiment=demo [words]` drawing everything again (the demo measured
    first when its table is missing)."""
    experiment = ExperimentFolder.of(REPOSITORY / "outputs", "demo")
    if not experiment.table_path.exists():
        print(f"{experiment.table_path} is missing: training and measuring the demo first (untimed, minutes)",
              file=sys.stderr, flush=True)
        timed(python("train.py", "experiment=demo", *QUIET))
        timed(python("analysis.py", "experiment=demo", *QUIET))
    experiment.publication_path.unlink(missing_ok=True)  # no record: every figure and the report are drawn again
    return timed(python("analysis.py", "figures", "experiment=demo", *words, *QUIET))[0]


def measure(rounds: int, compare: bool) -> tuple[dict, str]:
    """({row: [seconds per round]}, the last analysis's summary line), the grid and the demo interleaved."""
    results: dict = {}
    for round_number in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-readout-") as folder:
            times = transfer_grid(Path(folder), compare)
        times["demo figures"] = demo_figures()
        times["demo figures and PDFs"] = demo_figures("figure_formats=png,pdf")
        summary = times.pop("summary")
        for name, seconds in times.items():
            results.setdefault(name, []).append(seconds)
        print(f"  round {round_number + 1}: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items()),
              file=sys.stderr, flush=True)
    return results, summary


def verdict_row(label: str, value: float, unit: str, target: float) -> bool:
    met = value <= target
    print(f"{label:<50} {value:>7.2f}{unit} {'≤ ' + f'{target:g}' + unit:>8}  {'met' if met else 'below'}")
    return met


def main(arguments: list[str]) -> int:
    options = dict(argument.split("=", 1) for argument in arguments)
    rounds, compare = int(options.get("rounds", 3)), options.get("compare", "") == "all"
    results, summary = measure(rounds, compare)
    times = {name: statistics.median(values) for name, values in results.items()}
    print(f"medians of {rounds} rounds; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
          f"transfer grid (a parent and 20 children): training {times['training']:.1f} s, analysis "
          f"{times['analysis']:.1f} s")
    print(f"analysis: {summary}")
    print(f"\n{'row':<50} {'value':>8} {'target':>8}  verdict")
    met = verdict_row("transfer grid: analysis / training", times["analysis"] / times["training"], "x", TARGET_RATIO)
    if compare:
        ratio = times["analysis, every checkpoint"] / times["training"]
        print(f"{'the same with child_checkpoints=all (before)':<50} {ratio:>7.2f}x {'—':>8}  (for comparison)")
    met &= verdict_row("demo: figures and report (s)", times["demo figures"], "s", TARGET_SECONDS)
    print(f"{'the same with figure_formats=png,pdf':<50} {times['demo figures and PDFs']:>7.2f}s {'—':>8}  (for comparison)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
