"""python benchmarks/threads_under_load.py [rounds=3] [load=3] — training and the analysis on one thread vs the
default threads, idle and beside `load` busy processes, under each way idle threads can wait.

Two workloads, each a whole command in a child process (Python start and `import torch` included):
training (`train.py`, CONV-3-32, 2,048 synthetic 32×32 images, 2 epochs) and the analysis of a trained run
(`analysis.py figures=false`, every metric of its 7 checkpoints, on a fresh copy each time). Each is run
with threads=1 and with the default threads (the CPUs this process was given) under three waiting policies of
torch's OpenMP runtime (conf/cpu_waiting.py): libgomp's own default (spin about 3 ms: GOMP_SPINCOUNT=300000),
PASSIVE (sleep at once) and a short spin (GOMP_SPINCOUNT=1000, about 10 µs: the lab's default). "Under load" runs
`load` processes that spin on the CPU beside it, started before the command and stopped after it.
Conditions and configurations are interleaved within each round; medians over the rounds. Prints wall and
CPU seconds (the command's own, from wait4) and the ratios with their targets:

- default threads under load ÷ one thread under load, the lab's default: target ≤ 1.2×;
- default threads idle ÷ one thread idle, the lab's default: target ≤ 1.0× (free cores must not be lost).
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

from folders import ExperimentFolder  # noqa: E402  (torch loads here, in this process only: its children choose)

TARGET_UNDER_LOAD, TARGET_IDLE = 1.2, 1.0
RUN = ["arch=convnet", "depth=3", "width=32", "image_size=32", "synthetic_train_size=2048", "synthetic_test_size=512",
       "batch_size=128", "epochs=2", "progress=off", "log_level=WARNING"]
# name -> (threads=, the environment's waiting policy); the lab's default is a short spin (conf/cpu_waiting.py)
CONFIGURATIONS = {
    "one thread": ("1", {"GOMP_SPINCOUNT": "1000"}),
    "default threads, libgomp's spin": ("0", {"GOMP_SPINCOUNT": "300000"}),
    "default threads, PASSIVE": ("0", {"OMP_WAIT_POLICY": "PASSIVE"}),
    "default threads, short spin (the lab's default)": ("0", {"GOMP_SPINCOUNT": "1000"}),
}
LAB_DEFAULT = "default threads, short spin (the lab's default)"


def timed(command: list[str], policy: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command itself) of one run of `command` under `policy`."""
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPOSITORY, env={**environment, **policy}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {process.stderr.read().decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


class BusyProcesses:
    """`count` processes that spin on the CPU while the context is open (the other users of a shared machine)."""

    def __init__(self, count: int):
        self.count, self.processes = count, []

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        time.sleep(0.5)  # scheduled and spinning before the command starts
        return self

    def __exit__(self, *_):
        for process in self.processes:
            process.kill()
            process.wait()


def workloads(folder: Path) -> dict:
    """{name: a function (threads) -> the command}: training a fresh run, analysing a fresh copy of a trained one."""
    trained = folder / "trained"
    subprocess.run([sys.executable, "train.py", *RUN, f"out_dir={trained}", "threads=1"], cwd=REPOSITORY, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counter = iter(range(10**6))

    def training(threads: str) -> list[str]:
        return [sys.executable, "train.py", *RUN, f"out_dir={folder / f'train{next(counter)}'}", f"threads={threads}"]

    def analysing(threads: str) -> list[str]:
        copy = folder / f"analyse{next(counter)}"
        shutil.copytree(ExperimentFolder.of(trained, "default").runs_path, ExperimentFolder.of(copy, "default").runs_path)
        return [sys.executable, "analysis.py", f"out_dir={copy}", "figures=false", "log_level=WARNING",
                f"threads={threads}"]

    return {"training": training, "analysis": analysing}


def measure(rounds: int, load: int) -> dict:
    """{(workload, condition, configuration): [(wall, cpu) per round]}, interleaved."""
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as folder:
        commands = workloads(Path(folder))
        for round_number in range(rounds):
            for workload, command_of in commands.items():
                for condition, busy in (("idle", 0), ("under load", load)):
                    for name, (threads, policy) in CONFIGURATIONS.items():
                        command = command_of(threads)
                        with BusyProcesses(busy):
                            results.setdefault((workload, condition, name), []).append(timed(command, policy))
                        print(f"  round {round_number + 1}: {workload}, {condition}, {name}: "
                              f"{results[workload, condition, name][-1][0]:.1f} s", file=sys.stderr, flush=True)
    return results


def median(values: list[tuple[float, float]], index: int) -> float:
    return statistics.median(value[index] for value in values)


def report(results: dict, rounds: int, load: int) -> bool:
    print(f"medians of {rounds} rounds; under load = {load} spinning processes beside the command; "
          f"{os.cpu_count()} CPUs")
    print(f"{'workload':<10} {'configuration':<46} {'idle wall':>10} {'idle CPU':>9} {'load wall':>10} {'load CPU':>9}")
    for workload in ("training", "analysis"):
        for name in CONFIGURATIONS:
            idle, loaded = results[workload, "idle", name], results[workload, "under load", name]
            print(f"{workload:<10} {name:<46} {median(idle, 0):>9.1f}s {median(idle, 1):>8.1f}s "
                  f"{median(loaded, 0):>9.1f}s {median(loaded, 1):>8.1f}s")
    print(f"\n{'ratio (wall, medians)':<78} {'value':>7} {'target':>8}  verdict")
    met = True
    for workload in ("training", "analysis"):
        for name in CONFIGURATIONS:
            if name == "one thread":
                continue
            for condition, target in (("under load", TARGET_UNDER_LOAD), ("idle", TARGET_IDLE)):
                ratio = (median(results[workload, condition, name], 0) /
                         median(results[workload, condition, "one thread"], 0))
                label = f"{workload}: {name.split(' (')[0]} {condition} ÷ one thread {condition}"
                if name == LAB_DEFAULT:
                    verdict = "met" if ratio <= target else "below"
                    met &= verdict == "met"
                    print(f"{label:<78} {ratio:>6.2f}x {'≤ ' + str(target) + 'x':>8}  {verdict}")
                else:
                    print(f"{label:<78} {ratio:>6.2f}x {'—':>8}  (for comparison)")
    return met


def main(arguments: list[str]) -> int:
    options = dict(argument.split("=", 1) for argument in arguments)
    rounds, load = int(options.get("rounds", 3)), int(options.get("load", 3))
    return 0 if report(measure(rounds, load), rounds, load) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
