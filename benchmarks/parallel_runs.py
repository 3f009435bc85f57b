"""python benchmarks/parallel_runs.py [runs=2] [epochs=10] [device=cpu] — k runs at once in one job vs one after another.

Trains the same k runs (seeds 0..k-1; synthetic 3×32×32, 5,000 images, batch 128) two ways, each
timed in this process from start to the last run's end (`slurm.job.train_pack_in_parallel`):

- one after another: one child process trains the k runs, every core to each (as a job with
  runs_in_parallel=1 does, its Python start included);
- at once: k child processes share the cores, and the GPU under CUDA MPS where the machine has it
  (runs_in_parallel=k).

This process never touches CUDA itself, so an MPS daemon always starts before any context.

Prints the total img/s of each and the ratio at once ÷ one after another. Target ≥ 0.9×, i.e. no
loss. On a CPU k processes only split the same cores, so expect about 1× there; the point is a GPU
that one small run leaves mostly idle. device=cuda measures the issue's models (CONV-3-64, VGG-8)
instead of the CPU's.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conf import parse_arguments  # noqa: E402
from slurm.job import train_pack_in_parallel  # noqa: E402

TARGET = 0.9
BATCH_SIZE = 128
TRAIN_SIZE = 5000
MODELS = {  # label -> model settings, by device
    "cpu": {"mlp (depth 3, width 256)": ["arch=mlp", "depth=3", "width=256"],
            "convnet (CONV-3-16)": ["arch=convnet", "depth=3", "width=16"]},
    "cuda": {"convnet (CONV-3-64)": ["arch=convnet", "depth=3", "width=64"],
             "vgg (VGG-8, width 64)": ["arch=vgg", "depth=8", "width=64"]},
}


def plan_of(model: list[str], runs: int, epochs: int, device: str, out_dir: str):
    seeds = ",".join(str(seed) for seed in range(runs))
    return parse_arguments([*model, f"seed={seeds}", f"epochs={epochs}", f"batch_size={BATCH_SIZE}",
                            f"synthetic_train_size={TRAIN_SIZE}", f"device={device}", f"out_dir={out_dir}",
                            "progress=off", "log_level=WARNING"])


def time_training(model: list[str], runs: int, epochs: int, device: str, at_once: bool) -> float:
    """Total training images per second of the `runs` runs, trained at once or one after another."""
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as out_dir:
        plan = plan_of(model, runs, epochs, device, out_dir)
        records = [settings.to_record() for settings in plan.grid]
        execution = dataclasses.asdict(plan.execution)
        experiment_dir = Path(out_dir) / plan.experiment
        start = time.perf_counter()
        outcomes = train_pack_in_parallel(experiment_dir, records, execution, runs if at_once else 1)
        seconds = time.perf_counter() - start
    assert set(outcomes.values()) == {"done"}, outcomes
    return runs * epochs * (TRAIN_SIZE // BATCH_SIZE) * BATCH_SIZE / seconds


def main(arguments: list[str]) -> int:
    options = dict(argument.split("=", 1) for argument in arguments)
    runs, epochs = int(options.get("runs", 2)), int(options.get("epochs", 10))
    device = options.get("device", "cpu")
    print(f"{runs} runs of {epochs} epochs on {device}: at once (runs_in_parallel={runs}: {runs} processes) vs one "
          f"after another (runs_in_parallel=1: one process, all cores to each run); batch {BATCH_SIZE}, synthetic 3x32x32, {TRAIN_SIZE} images")
    print(f"{'model':<26} {'one after another':>18} {'at once':>12} {'ratio':>7}  target")
    verdicts = []
    for label, model in MODELS["cuda" if device == "cuda" else "cpu"].items():
        sequential = time_training(model, runs, epochs, device, at_once=False)
        parallel = time_training(model, runs, epochs, device, at_once=True)
        ratio = parallel / sequential
        verdict = "met" if ratio >= TARGET else "below"
        print(f"{label:<26} {sequential:>12.0f} img/s {parallel:>8.0f} img/s {ratio:>6.2f}x  >= {TARGET}x {verdict}")
        verdicts.append(f"{label}: {ratio:.2f}x ({verdict})")
    print("at once / one after another: " + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
