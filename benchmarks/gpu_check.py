"""python benchmarks/gpu_check.py [smoke] [out=FILE.md] — the prepared device check: one GPU, at most 5 minutes.

Prints six sections, each a short header and a markdown table (and writes the same to FILE.md with out=):

1. environment: the device, torch, CUDA, cuDNN, GPU memory, whether CUDA MPS is there, what `auto` turns on.
2. throughput: ms/step, img/s, TFLOP/s and the fraction of 790 TFLOP/s (bf16 dense, H200) of the training
   loop body (loop.RunTraining.step + the log records, a flush every 50 steps) for MLP, CONV-3-64, VGG-8,
   ResNet-18 and CONV-20-400 in fp32, bf16, bf16+channels_last (deterministic kernels, the default) and
   bf16+channels_last with the fastest kernels (deterministic=false).
3. host syncs per training step, per whole run and per analysis of one checkpoint.
4. SIGKILL resume: train.py killed at a counted batch, resumed, compared bitwise with an uninterrupted run,
   with deterministic kernels on and off.
5. the analysis of one checkpoint (metrics.engine.measure) ÷ one plain forward pass over the same images.
6. total img/s of k = 1, 2, 4, 8 runs trained at once (runs_in_parallel's machinery, slurm/parallel.py) for
   equal total work.

`smoke` runs every section's code on the CPU at tiny sizes (under a minute on 2 cores; tests/test_gpu_check.py).
Each section runs in a process of its own under a time limit, its rows saved as they come: a hang, a crash or
a broken CUDA context stays in its section, and a section cut short still shows what it measured. The limits
add up to at most TOTAL_SECONDS (a section that starts late gets less; each keeps a minimum).
Exit codes: 0 every section complete, 1 a section failed or (without smoke) no GPU is visible, 2 bad input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

PEAK_TFLOPS = 790  # the reference: H200, bf16 dense
TOTAL_SECONDS = 290  # every section's limit together, on the GPU machine (the check must end within 5 minutes)
SMOKE_TOTAL_SECONDS = 1500  # smoke: a guard against a hang only (it takes under a minute), never a timing window
STOP_GRACE_SECONDS = 15  # after SIGTERM, a section's processes save and stop (train runs, an MPS daemon) ...
SMOKE_SECTION_SECONDS = 600  # ... and a smoke section is stopped only when it hangs


@dataclass(frozen=True)
class Sizes:
    """What each section trains and measures: the GPU check's sizes, or smoke's tiny ones. Runs are given
    as train.py's words, so every run here is one a user could train."""

    device: str
    models: dict[str, tuple[str, ...]]  # throughput: label -> the model's words (data words included)
    chunk: int  # steps per timed chunk, ending on the log flush's one host sync (loop.LOG_FLUSH_EVERY)
    chunks: int  # timed chunks per cell at most; the cell's ms/step is their median
    loop_run: tuple[str, ...]  # host syncs: the loop body's run
    whole_run: tuple[str, ...]  # host syncs: a short run trained to its end by loop.run
    resume_run: tuple[str, ...]  # the SIGKILL resume check's run
    kill_at_batch: int  # the killed process SIGKILLs itself at its Nth batch (a counted event, not a clock)
    analysis_run: tuple[str, ...]  # the checkpoint's model and data for the analysis cost
    rounds: int  # interleaved rounds of the analysis timing (medians)
    parallel_run: tuple[str, ...]  # each of the runs trained at once
    parallel_runs: int  # runs in all, whatever k: equal total work
    parallel_k: tuple[int, ...]  # runs at once, in the order measured (1 first: the baseline)
    shared_cpu: tuple[str, ...] = ()  # words for training processes that run beside each other on the CPU


GPU = Sizes(
    device="cuda",
    models={"MLP-3-400": ("arch=mlp", "depth=3", "width=400"),
            "CONV-3-64": ("arch=convnet", "depth=3", "width=64"),
            "VGG-8": ("arch=vgg", "depth=8", "width=32"),  # LearnPhase's VGG-8
            "ResNet-18": ("arch=resnet", "depth=2", "width=64"),
            "CONV-20-400": ("arch=convnet", "depth=20", "width=400")},  # IntermediateNC's deepest
    chunk=50, chunks=5,
    loop_run=("arch=convnet", "depth=3", "width=64"),
    whole_run=("arch=convnet", "depth=3", "width=64", "synthetic_train_size=2560", "epochs=2"),
    # 20 iterations per epoch, 80 in all; killed in the step to iteration 51, after the state of iteration 32
    resume_run=("arch=resnet", "depth=1", "width=16", "augment=true", "synthetic_train_size=2560",
                "synthetic_test_size=500", "epochs=4"),
    kill_at_batch=51,
    analysis_run=("arch=convnet", "depth=4", "width=32"), rounds=3,
    parallel_run=("arch=convnet", "depth=3", "width=64", "epochs=20"), parallel_runs=8, parallel_k=(1, 8, 4, 2),
)
TINY_DATA = ("image_size=8", "synthetic_train_size=256", "synthetic_test_size=64", "batch_size=32")
SMOKE = Sizes(
    device="cpu",
    models={"MLP-2-32": ("arch=mlp", "depth=2", "width=32", *TINY_DATA),
            "CONV-2-8": ("arch=convnet", "depth=2", "width=8", *TINY_DATA)},
    chunk=3, chunks=2,
    loop_run=("arch=convnet", "depth=2", "width=8", *TINY_DATA),
    whole_run=("arch=convnet", "depth=2", "width=8", *TINY_DATA, "epochs=1"),
    # 8 iterations per epoch, 24 in all; killed in the step to iteration 14, after the state of iteration 8
    resume_run=("arch=resnet", "depth=1", "width=4", "augment=true", *TINY_DATA, "epochs=3"),
    kill_at_batch=14,
    analysis_run=("arch=convnet", "depth=2", "width=8", *TINY_DATA), rounds=1,
    parallel_run=("arch=mlp", "depth=2", "width=32", *TINY_DATA, "epochs=1"), parallel_runs=2, parallel_k=(1, 2),
    shared_cpu=("threads=1",),  # two processes that each take every core spin-wait on each other (docs/cluster.md, `workers`)
)
PRECISIONS = {  # label -> execution words; bf16 and channels_last `on` force them (auto would skip the MLP)
    "fp32": ("bf16=off", "channels_last=off", "deterministic=true"),
    "bf16": ("bf16=on", "channels_last=off", "deterministic=true"),
    "bf16+channels_last": ("bf16=on", "channels_last=on", "deterministic=true"),
    "bf16+channels_last, fastest kernels": ("bf16=on", "channels_last=on", "deterministic=false"),
}


# ---- one section's table, saved as it grows -------------------------------------------------------

@dataclass
class Table:
    """A section's result: columns, rows and notes, written to `path` after every change (atomically), so a
    section stopped by its time limit still reports the rows it measured."""

    path: Path
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def header(self, *columns: str) -> None:
        self.columns = list(columns)
        self.save()

    def add(self, *cells) -> None:
        self.rows.append([str(cell) for cell in cells])
        self.save()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.save()

    def error(self, text: str) -> None:
        self.errors.append(text)
        self.save()

    def save(self) -> None:
        from utils import atomic_write_json
        atomic_write_json(self.path, {"columns": self.columns, "rows": self.rows, "notes": self.notes,
                                      "errors": self.errors})


class Clock:
    """A section's own time limit: the rows still to measure are skipped when it runs short."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def error_text(error: BaseException) -> str:
    """One line: the error's type and first line (an out-of-memory message runs long)."""
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {first}"


def synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan_of(words, root: Path, sizes: Sizes, *, analysis: bool = False):
    """The Plan of a command line of train.py (or analysis.py) words, results under `root`, quiet."""
    from conf import parse_arguments
    return parse_arguments([*words, f"device={sizes.device}", f"out_dir={root}", "progress=off",
                            "log_level=WARNING"], analysis=analysis)


# ---- 1. environment ---------------------------------------------------------------------------------

def environment(sizes: Sizes, table: Table, clock: Clock) -> None:
    """The device, its software, and what the execution options' `auto` means here."""
    import platform

    import torch

    from conf import Execution, Settings
    from training import devices
    device = Execution(device=sizes.device).torch_device()
    recorded = devices.execution_environment(Settings(), Execution(device=sizes.device), device)
    table.header("item", "value")
    table.add("device (as a resume state records it)", recorded["device"])
    table.add("torch", torch.__version__)
    table.add("CUDA (torch built with)", torch.version.cuda)
    table.add("cuDNN", torch.backends.cudnn.version())
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        table.add("GPU memory", f"{properties.total_memory / 2**30:.1f} GiB")
        table.add("compute capability", f"{properties.major}.{properties.minor}")
        table.add("GPUs visible", torch.cuda.device_count())
        table.add("bf16 supported", torch.cuda.is_bf16_supported())
        table.add("driver", nvidia_smi("driver_version"))
    table.add("CUDA MPS (nvidia-cuda-mps-control)", shutil.which("nvidia-cuda-mps-control") or "not found")
    table.add("CPU cores (this process may use)", len(os.sched_getaffinity(0)))
    table.add("Python", platform.python_version())
    table.add("TF32: cuDNN convolutions / matmul", f"{torch.backends.cudnn.allow_tf32} / "
                                                    f"{torch.backends.cuda.matmul.allow_tf32}")
    table.add("auto turns on, on CUDA (devices.AUTO_ON_CUDA)",
              "; ".join(f"{name}: {', '.join(archs)}" for name, archs in devices.AUTO_ON_CUDA.items()))
    table.add("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", "unset (deterministic runs set "
                                                                                    ":4096:8)"))


def nvidia_smi(query: str) -> str:
    """One field of `nvidia-smi --query-gpu` for the first GPU, or why it is not known."""
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown ({error_text(error)})"
    return (result.stdout.strip().splitlines() or [f"unknown (exit code {result.returncode})"])[0]


# ---- 2. throughput ----------------------------------------------------------------------------------

@contextlib.contextmanager
def training_loop(words, root: Path, sizes: Sizes):
    """A loop.RunTraining of the run `words` describe, its folder under `root`, under the run's own
    kernel choice (as loop.run sets it): the real loop body, model, optimizer and batches."""
    from folders import ExperimentFolder
    from training import devices, loop
    plan = plan_of(words, root, sizes)
    settings, execution = plan.grid[0], plan.execution
    folder = ExperimentFolder.of(root, plan.experiment).run(settings.run_id)
    folder.prepare(settings)
    with devices.kernel_choice(execution.torch_device(), execution.deterministic):
        yield loop.RunTraining(settings, folder, execution, [])


def train_chunk(run, steps: int) -> None:
    """`steps` steps of the loop body as RunTraining.train runs them between saves, then the log flush's
    one host synchronisation (StepRecords.take)."""
    from training import devices
    records = devices.StepRecords(steps, run.device)
    for _ in range(steps):
        records.add(run.iteration + 1, *run.step())
    records.take()


def seconds_per_step(run, sizes: Sizes) -> float:
    """The median over timed chunks of seconds per step, after one chunk of warm-up (cuDNN's autotuning,
    the first epoch's plan, the allocator); fewer chunks when one takes long."""
    start = time.perf_counter()
    train_chunk(run, sizes.chunk)
    synchronize(run.device)
    warm = time.perf_counter() - start
    chunks = max(2, min(sizes.chunks, int(2.0 / max(warm, 1e-6))))  # about 2 s of timing per cell
    times = []
    for _ in range(chunks):
        start = time.perf_counter()
        train_chunk(run, sizes.chunk)
        synchronize(run.device)
        times.append((time.perf_counter() - start) / sizes.chunk)
    return statistics.median(times)


def flops_per_step(run) -> int:
    """FLOPs of one training step as torch's FlopCounterMode counts them: the forward and backward
    convolutions and matrix products (the backward counted directly, not as 2 × forward); elementwise
    ops, batch norm and the optimizer are not counted."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        run.step()
    return counter.get_total_flops()


def throughput(sizes: Sizes, table: Table, clock: Clock) -> None:
    """ms/step, img/s, TFLOP/s and % of PEAK_TFLOPS per model and precision."""
    table.header("model", "precision", "GFLOP/step", "ms/step", "img/s", "TFLOP/s", f"% of {PEAK_TFLOPS}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-throughput-") as root:
        for label, words in sizes.models.items():
            flops = None
            for precision, execution_words in PRECISIONS.items():
                if clock.left() < 15:
                    table.add(label, precision, "", "skipped: the section's time limit", "", "", "")
                    continue
                try:
                    flops, seconds, batch = throughput_cell([*words, *execution_words], Path(root), sizes, flops)
                except Exception as error:  # out of memory, say: the other cells still count
                    table.add(label, precision, "", f"error: {error_text(error)}", "", "", "")
                    table.error(f"{label} {precision}: {error_text(error)}")
                    release_memory()
                    continue
                achieved = flops / seconds / 1e12
                table.add(label, precision, f"{flops / 1e9:.3g}", f"{seconds * 1e3:.2f}", f"{batch / seconds:,.0f}",
                          f"{achieved:.1f}", f"{100 * achieved / PEAK_TFLOPS:.1f}")
                release_memory()
    table.note("Batch as train.py's default (128; smoke: 32), synthetic 3×32×32 data (smoke: 3×8×8) on the device, "
               f"no augmentation. ms/step: the median of up to {sizes.chunks} chunks of {sizes.chunk} steps after one "
               "chunk of warm-up, each chunk ending on the log flush's host sync and a device synchronisation. GFLOP/step: "
               "forward + backward convolutions and matrix products as torch.utils.flop_counter.FlopCounterMode "
               "counts them on one step (not the forward × 3); the optimizer and elementwise ops are not counted. "
               "fp32 convolutions run as TF32 where cuDNN allows it (see the environment). The first three "
               "precisions use deterministic kernels (the default); the last, the fastest (deterministic=false).")


def throughput_cell(words, root: Path, sizes: Sizes, flops: int | None) -> tuple[int, float, int]:
    """(FLOPs per step, counted once per model; seconds per step; the batch size) of one model at one precision."""
    with training_loop(words, root, sizes) as run:
        if flops is None:
            flops = flops_per_step(run)
        return flops, seconds_per_step(run, sizes), run.settings.batch_size


def release_memory() -> None:
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- 3. host syncs ----------------------------------------------------------------------------------

# Ops that make the host wait for the device: a scalar read (.item(), bool(), int()) and ops whose output
# size depends on the data. Copies to the host are counted apart (copies_to_host).
READS_DEVICE_DATA = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2",
                     "aten::unique_dim", "aten::unique_consecutive"}


def copies_to_host(name: str, arguments, keywords) -> bool:
    """Whether this op copies a CUDA tensor to the CPU (a `.cpu()`, `.tolist()`, torch.save's storage copy)."""
    import torch
    if name == "aten::_to_copy" and arguments and isinstance(arguments[0], torch.Tensor):
        target = keywords.get("device")
        return arguments[0].is_cuda and target is not None and torch.device(target).type == "cpu"
    if name == "aten::copy_" and len(arguments) >= 2 and all(isinstance(item, torch.Tensor) for item in arguments[:2]):
        return arguments[0].device.type == "cpu" and arguments[1].is_cuda
    return False


def host_sync_counter():
    """A TorchDispatchMode that counts, by op name, every op that reads device data on the host: the host
    syncs on CUDA. On the CPU the same ops are counted (nothing waits there, but the code paths are the
    same); a CPU `.tolist()` reaches no op and is not seen."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostSyncs(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.by_op = Counter()

        def __torch_dispatch__(self, function, types, arguments=(), keywords=None):
            keywords = keywords or {}
            name = function._schema.name
            if name in READS_DEVICE_DATA or copies_to_host(name, arguments, keywords):
                self.by_op[name.removeprefix("aten::")] += 1
            return function(*arguments, **keywords)

    return HostSyncs()


@contextlib.contextmanager
def counting_syncs(device):
    """Yields {"ops": Counter of the dispatch count, "cuda": the CUDA sync-debug count or None}, filled
    when the block ends. On CUDA torch.cuda.set_sync_debug_mode("warn") warns at every real synchronisation
    (the ground truth); the warnings are caught and counted, others left alone."""
    import warnings

    import torch
    counts = {"ops": Counter(), "cuda": None}
    counter = host_sync_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with counter:
                yield counts
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    counts["ops"].update(counter.by_op)
    if device.type == "cuda":
        counts["cuda"] = sum("synchroniz" in str(warning.message) for warning in caught)
    for warning in caught:
        if "synchroniz" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def host_syncs(sizes: Sizes, table: Table, clock: Clock) -> None:
    """Host syncs per step of the loop, per iteration of a whole run, per batch of one checkpoint's analysis."""
    table.header("what", "units", "host reads (dispatch count)", "by op", "CUDA syncs (sync debug mode)", "per unit")
    with tempfile.TemporaryDirectory(prefix="gpu-check-syncs-") as root:
        for what, measure in (("training loop between saves", loop_syncs), ("a whole short run", whole_run_syncs),
                              ("analysis of one checkpoint", analysis_syncs)):
            if clock.left() < 10:
                table.add(what, "", "skipped: the section's time limit", "", "", "")
                continue
            try:
                detail, units, unit, counts = measure(sizes, Path(root))
            except Exception as error:
                table.add(what, "", f"error: {error_text(error)}", "", "", "")
                table.error(f"{what}: {error_text(error)}")
                continue
            dispatched = sum(counts["ops"].values())
            by_op = ", ".join(f"{name} {count}" for name, count in counts["ops"].most_common(4)) or "none"
            best = counts["cuda"] if counts["cuda"] is not None else dispatched
            table.add(f"{what}: {detail}", f"{units} {unit}", dispatched, by_op,
                      "n/a (CPU)" if counts["cuda"] is None else counts["cuda"], f"{best / max(units, 1):.3f}")
    table.note("A host sync leaves the GPU idle until the host has its answer. The dispatch count sees the ops that "
               "read device data (scalar reads, data-dependent shapes, copies to the host); on CUDA the sync debug "
               "mode counts every real synchronisation (also cuDNN's and cuBLAS's own, and the epoch plan's copy to "
               "the device), and its count is the one divided per unit. The training loop should need one per log "
               "flush (1/50 = 0.02 per step) plus one per epoch for the epoch's plan.")


def loop_syncs(sizes: Sizes, root: Path):
    """(what was counted, units, their name, the counts) over two log flushes of the loop body, after one of warm-up."""
    with training_loop(sizes.loop_run, root, sizes) as run:
        train_chunk(run, sizes.chunk)
        with counting_syncs(run.device) as counts:
            for _ in range(2):
                train_chunk(run, sizes.chunk)
    return f"step + log records, a flush every {sizes.chunk} steps", 2 * sizes.chunk, "steps", counts


def whole_run_syncs(sizes: Sizes, root: Path):
    """(what was counted, units, their name, the counts) of a short run trained by loop.run from its start to
    its end: steps, checkpoints (test evaluation, saves) and resume states."""
    from folders import ExperimentFolder
    from training import loop
    plan = plan_of(sizes.whole_run, root, sizes)
    settings = plan.grid[0]
    folder = ExperimentFolder.of(root, plan.experiment).run(settings.run_id)
    with counting_syncs(plan.execution.torch_device()) as counts:
        state = loop.run(settings, folder.path, plan.execution, handle_signals=False)
    iterations = folder.read_status().get("iteration", 0)
    detail = f"loop.run, its steps, {len(folder.checkpoint_entries())} checkpoints and their saves ({state})"
    return detail, iterations, "iterations", counts


def analysis_syncs(sizes: Sizes, root: Path):
    """(what was counted, units, their name, the counts) of metrics.engine.measure on one checkpoint."""
    inputs = analysis_inputs(sizes, root)
    with counting_syncs(inputs.device) as counts:
        inputs.measure()
    batches = sum(-(-len(split.labels) // inputs.batch_size) for split in (inputs.train, inputs.test))
    return "metrics.engine.measure, every default metric, train and test splits", batches, "batches", counts


# ---- 4. SIGKILL resume ------------------------------------------------------------------------------

# train.py in a process that SIGKILLs itself at its Nth training batch: the kill lands mid-step at the same
# iteration on any machine, after the last saved state and before the next (a counted event, not a clock).
KILL_AT_BATCH = """
import os, signal, sys
sys.path.insert(0, {repository!r})
import data.stream
real, calls = data.stream.TrainingStream.batch, [0]
def batch(self, iteration):
    calls[0] += 1
    if calls[0] == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, iteration)
data.stream.TrainingStream.batch = batch
import train
sys.exit(train.main({words!r}))
"""


def start(arguments: list[str], log: Path) -> subprocess.Popen:
    """A process in the repository, its output in `log` (files, not pipes: several run at once)."""
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, *arguments], cwd=REPOSITORY, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_all(processes: dict, clock: Clock) -> dict:
    """{name: exit code} once every process ended; TimeoutError past the section's limit. Whatever ends the
    wait, no process is left running."""
    try:
        return {name: process.wait(timeout=max(1.0, clock.left())) for name, process in processes.items()}
    except subprocess.TimeoutExpired:
        raise TimeoutError("the section's time limit passed while training") from None
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def resume_words(sizes: Sizes, out_dir: Path, deterministic: bool) -> list[str]:
    return [*sizes.resume_run, *sizes.shared_cpu, f"deterministic={str(deterministic).lower()}",
            f"device={sizes.device}", f"out_dir={out_dir}", "progress=off", "log_level=WARNING"]


def resume_check(sizes: Sizes, table: Table, clock: Clock) -> None:
    """Per kernel choice: an uninterrupted run, and a run killed by SIGKILL then resumed, compared bitwise."""
    table.header("deterministic", "killed", "resumed from (last saved state)", "checkpoints identical",
                 "final weights bitwise equal", "max abs difference", "non-deterministic ops warned")
    with tempfile.TemporaryDirectory(prefix="gpu-check-resume-") as root:
        root = Path(root)
        flags = (True, False)
        processes = {}
        for flag in flags:  # all four at once: the runs are small, the device has room
            reference, interrupted = root / f"reference-{flag}", root / f"interrupted-{flag}"
            processes[f"reference-{flag}"] = start(
                [str(REPOSITORY / "train.py"), *resume_words(sizes, reference, flag)], root / f"reference-{flag}.log")
            script = KILL_AT_BATCH.format(repository=str(REPOSITORY), n=sizes.kill_at_batch,
                                          words=resume_words(sizes, interrupted, flag))
            processes[f"killed-{flag}"] = start(["-c", script], root / f"killed-{flag}.log")
        codes = wait_all(processes, clock)
        killed = {flag: killed_at(sizes, root / f"interrupted-{flag}", codes[f"killed-{flag}"]) for flag in flags}
        resumed = {}
        for flag in flags:  # the same command as the killed one's: it resumes from the newest good state
            resumed[f"resumed-{flag}"] = start([str(REPOSITORY / "train.py"),
                                                *resume_words(sizes, root / f"interrupted-{flag}", flag)],
                                               root / f"resumed-{flag}.log")
        codes.update(wait_all(resumed, clock))
        for flag in flags:
            resume_row(sizes, table, root, flag, codes, killed[flag])
    table.note(f"The run: {' '.join(sizes.resume_run)} (bf16 and channels_last auto: on for this conv net on CUDA). "
               f"The killed train.py SIGKILLs itself in its batch {sizes.kill_at_batch} (a counted event), after the "
               "newest saved state and before the next; the same command then resumes it to the end. Compared with "
               "an uninterrupted run of the same command: every checkpoint's sha256 and the final weights, tensor by "
               "tensor. With deterministic=false cuDNN picks the fastest kernels, which may differ: that is the point.")


def killed_at(sizes: Sizes, out_dir: Path, code: int) -> tuple[str, str]:
    """(how the killed process ended, the iteration of the state it left) from its run folder's status."""
    from folders import ExperimentFolder
    plan = plan_of(sizes.resume_run, out_dir, sizes)
    status = ExperimentFolder.of(out_dir, plan.experiment).run(plan.grid[0].run_id).read_status()
    how = "by SIGKILL" if code == -signal.SIGKILL else f"NOT killed (exit code {code})"
    where = f"{status.get('iteration', '?')} of {status.get('total_iterations', '?')} ({status.get('state', 'new')})"
    return f"{how}, in batch {sizes.kill_at_batch}", where


def resume_row(sizes: Sizes, table: Table, root: Path, flag: bool, codes: dict, killed: tuple[str, str]) -> None:
    """One kernel choice's row, and the line `deterministic=...: bitwise equal: yes|no`."""
    from folders import ExperimentFolder
    expected = {"reference": 0, "killed": -signal.SIGKILL, "resumed": 0}
    failed = {name: code for name, code in codes.items()
              if name.endswith(f"-{flag}") and code != expected[name.split("-")[0]]}
    if failed:
        table.add(str(flag).lower(), *killed, "", f"error: exit codes {failed}", "", "")
        table.error(f"deterministic={str(flag).lower()}: a train.py ended with {failed}; its log: "
                    + log_tail(root / f"{next(iter(failed))}.log"))
        return
    plan = plan_of(sizes.resume_run, root, sizes)
    folders = [ExperimentFolder.of(root / f"{copy}-{flag}", plan.experiment).run(plan.grid[0].run_id)
               for copy in ("reference", "interrupted")]
    identical, total, equal, difference = compare_runs(*folders)
    warned = sorted({line.split(" does not have a deterministic")[0].split()[-1]
                     for copy in ("reference", "killed", "resumed")
                     for line in (root / f"{copy}-{flag}.log").read_text().splitlines()
                     if "does not have a deterministic" in line})
    table.add(str(flag).lower(), *killed, f"{identical}/{total}", "yes" if equal else "no", f"{difference:.3g}",
              ", ".join(warned) or "none")
    table.note(f"deterministic={str(flag).lower()}: bitwise equal: {'yes' if equal else 'no'} "
               f"({identical}/{total} checkpoints identical)")


def compare_runs(reference, resumed) -> tuple[int, int, bool, float]:
    """(checkpoints with the same sha256, checkpoints of the reference, final weights bitwise equal, the largest
    absolute difference of the final weights)."""
    import torch
    expected, found = reference.checkpoint_entries(), resumed.checkpoint_entries()
    identical = sum(found.get(iteration, {}).get("sha256") == entry["sha256"] for iteration, entry in expected.items())
    last = max(expected)
    weights, other = reference.load_checkpoint(last)["model"], resumed.load_checkpoint(last)["model"]
    equal = weights.keys() == other.keys() and all(torch.equal(weights[name], other[name]) for name in weights)
    difference = max(((weights[name].double() - other[name].double()).abs().max().item()
                      for name in weights if weights[name].is_floating_point() and weights[name].numel()), default=0.0)
    return identical, len(expected), equal, difference


def log_tail(path: Path, lines: int = 8, separator: str = " | ") -> str:
    """The last lines of a process's output, joined by `separator`."""
    try:
        return separator.join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error_text(error)})"


# ---- 5. analysis of one checkpoint ÷ one forward pass ----------------------------------------------------

@dataclass
class AnalysisInputs:
    """A checkpoint's model and the splits the analysis measures it on, as analysis.py prepares them."""

    model: object
    train: object
    test: object
    num_classes: int
    plan: object
    transfer: object
    device: object

    @property
    def batch_size(self) -> int:
        return self.plan.analysis.analysis_batch_size

    def measure(self, metrics=None) -> list[dict]:
        from metrics import engine
        return engine.measure(self.model, self.train, self.test, self.num_classes, self.plan.analysis,
                              seed=self.plan.grid[0].seed, transfer=self.transfer, metrics=metrics)

    def forward(self) -> None:
        """One plain forward pass of the model over both splits at the analysis's batch size (float32)."""
        import torch
        with torch.no_grad():
            for split in (self.train, self.test):
                for _, _, images, _, _ in split.batches(self.batch_size):
                    self.model(images)


def analysis_inputs(sizes: Sizes, root: Path) -> AnalysisInputs:
    """The analysis run's model at its initialisation (the cost of a checkpoint does not depend on its
    weights), in eval mode, and its splits and transfer task (the default: colour dominance) on the device."""
    import torch

    import data
    import models
    from measuring.inputs import transfer_probe
    from metrics.engine import SplitData
    plan = plan_of(sizes.analysis_run, root, sizes, analysis=True)
    settings, device = plan.grid[0], plan.execution.torch_device()
    dataset = data.load_dataset(settings, data_root=Path(plan.execution.data_root), download=False).to(device)
    train = SplitData(dataset.train_images, dataset.train_labels, dataset.mean, dataset.std)
    test = SplitData(dataset.test_images, dataset.test_labels, dataset.mean, dataset.std)
    probe, _ = transfer_probe(settings, plan, train, test, dataset.num_classes, device)
    torch.manual_seed(settings.seed)
    model = models.build(settings, input_shape=tuple(dataset.train_images.shape[1:]), num_classes=dataset.num_classes)
    return AnalysisInputs(model.to(device).eval(), train, test, dataset.num_classes, plan, probe, device)


def analysis_cost(sizes: Sizes, table: Table, clock: Clock) -> None:
    """Seconds of metrics.engine.measure on one checkpoint ÷ seconds of one forward pass over the same images."""
    table.header("measured", "seconds (median)", "÷ one forward pass")
    with tempfile.TemporaryDirectory(prefix="gpu-check-analysis-") as root:
        inputs = analysis_inputs(sizes, Path(root))
        timed = {"one plain forward pass, train + test (float32, eval)": inputs.forward,
                 "metrics.engine.measure, every default metric": inputs.measure,
                 "metrics.engine.measure, metrics=ncc_accuracy,cdnv": lambda: inputs.measure(("ncc_accuracy", "cdnv"))}
        for function in timed.values():  # warm-up: cuBLAS and cuSOLVER set themselves up once per process
            function()
        seconds = {name: [] for name in timed}
        for _ in range(sizes.rounds):  # interleaved: a drift of the machine's speed touches every row alike
            if seconds[next(iter(timed))] and clock.left() < 10:
                break
            for name, function in timed.items():
                synchronize(inputs.device)
                begin = time.perf_counter()
                function()
                synchronize(inputs.device)
                seconds[name].append(time.perf_counter() - begin)
        forward = statistics.median(seconds[next(iter(timed))])
        for name, values in seconds.items():
            table.add(name, f"{statistics.median(values):.3f}", f"{statistics.median(values) / forward:.2f}×")
    table.note(f"The model: {' '.join(sizes.analysis_run)} at initialisation, on the device with its synthetic "
               f"train and test splits, as analysis.py measures a checkpoint (default options, the transfer task "
               f"bound); medians of {sizes.rounds} interleaved round(s) after a warm-up call of each.")


# ---- 6. runs in parallel ----------------------------------------------------------------------------

@contextlib.contextmanager
def mps_messages():
    """Yields the list of slurm.parallel's log lines about CUDA MPS while the block runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            if "MPS" in record.getMessage():
                lines.append(record.getMessage())

    logger = logging.getLogger("slurm.parallel")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # its "daemon started" line is INFO; the runs log at WARNING
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def parallel_runs(sizes: Sizes, table: Table, clock: Clock) -> None:
    """Total img/s of the same runs trained k at once (runs_in_parallel=k: slurm.job.train_pack_in_parallel)."""
    table.header("runs at once (k)", "processes × runs each", "wall s", "total img/s", "÷ k=1", "CUDA MPS", "runs done")
    from training import loop
    baseline, longest = None, 0.0  # k=1's img/s; the longest wall time so far (the next k should take less)
    for k in sizes.parallel_k:
        if clock.left() < 1.2 * longest + 10:
            table.add(k, "", "skipped: the section's time limit", "", "", "", "")
            continue
        try:
            wall, images, mps, outcomes = train_at_once(sizes, k)
        except loop.Interrupted as error:  # the section's time limit, forwarded to the runs: they saved
            raise SectionStopped(f"stopped by the section's time limit while k={k} trained ({error})") from None
        except Exception as error:
            table.add(k, "", f"error: {error_text(error)}", "", "", "", "")
            table.error(f"k={k}: {error_text(error)}")
            continue
        longest, baseline = max(longest, wall), images / wall if k == 1 else baseline
        done = sum(state == "done" for state in outcomes.values())
        runs_each = -(-sizes.parallel_runs // k)
        table.add(k, f"{min(k, sizes.parallel_runs)} × {runs_each}", f"{wall:.1f}", f"{images / wall:,.0f}",
                  f"{images / wall / baseline:.2f}×" if baseline else "n/a", mps, f"{done}/{len(outcomes)}")
        if done < len(outcomes):
            table.error(f"k={k}: runs not done: {dict(Counter(outcomes.values()))}")
    table.note(f"{sizes.parallel_runs} runs of {' '.join(sizes.parallel_run)} (seeds 0..{sizes.parallel_runs - 1}), "
               "whatever k: equal total work, shared round-robin among k processes, each with cores ÷ k torch threads. "
               "Wall time from the start of the processes to the end of the last run, each paying its own start "
               "(Python, torch, a CUDA context, the data), as in a job.")


def train_at_once(sizes: Sizes, k: int) -> tuple[float, int, str, dict]:
    """(wall seconds, training images in all, what CUDA MPS did, {run_id: outcome}) of the runs in k processes."""
    from folders import ExperimentFolder
    from slurm.job import train_pack_in_parallel
    seeds = ",".join(str(seed) for seed in range(sizes.parallel_runs))
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-parallel-{k}-") as root:
        plan = plan_of([*sizes.parallel_run, f"seed={seeds}"], Path(root), sizes)
        records = [settings.to_record() for settings in plan.grid]
        experiment = ExperimentFolder.of(root, plan.experiment)
        with mps_messages() as lines:
            begin = time.perf_counter()
            outcomes = train_pack_in_parallel(experiment.path, records, dataclasses.asdict(plan.execution), k)
            wall = time.perf_counter() - begin
    images = sum(settings.epochs * (settings.synthetic_train_size // settings.batch_size) * settings.batch_size
                 for settings in plan.grid)
    return wall, images, "; ".join(lines) or "not used", outcomes


# ---- the sections, each in a process of its own -------------------------------------------------------

@dataclass(frozen=True)
class Section:
    name: str  # section=NAME
    title: str
    about: str  # the short header
    function: object
    budget: float  # seconds at most on the GPU machine
    minimum: float  # seconds kept for it however long the sections before it took


SECTIONS = (
    Section("environment", "1. Environment", "The device and its software, as the runs see them.", environment, 30, 10),
    Section("throughput", "2. Training throughput", f"The training loop body per model and precision: ms/step, img/s, "
            f"and the FLOP rate against {PEAK_TFLOPS} TFLOP/s (bf16 dense, H200).", throughput, 100, 30),
    Section("syncs", "3. Host syncs", "Where the host waits for the device: per training step, per iteration of a "
            "whole run, per batch of one checkpoint's analysis.", host_syncs, 45, 15),
    Section("resume", "4. SIGKILL resume", "train.py killed by SIGKILL mid-run, resumed, compared bitwise with an "
            "uninterrupted run; deterministic kernels on and off.", resume_check, 90, 40),
    Section("analysis", "5. Analysis ÷ forward pass", "The analysis of one checkpoint against one plain forward pass "
            "over the same images.", analysis_cost, 45, 15),
    Section("parallel", "6. Runs in parallel", "Total img/s of k runs trained at once on the device "
            "(runs_in_parallel=k, slurm/parallel.py) for the same total work.", parallel_runs, 110, 30),
)


class SectionStopped(BaseException):
    """The parent's SIGTERM at the section's time limit: not an Exception, so no row's handler swallows it."""


def run_section(name: str, result: Path, seconds: float, smoke: bool) -> int:
    """`section=NAME result=PATH seconds=S`: one section in this process; 0, or 1 when it stopped with an error."""
    table = Table(result)
    table.save()

    def stop(number, _frame):  # finally blocks still run (a training process is waited for, MPS stopped)
        raise SectionStopped(f"stopped by the section's time limit ({seconds:.0f} s)")

    signal.signal(signal.SIGTERM, stop)
    if smoke:  # on a busy small CPU, torch's threads spin-wait on the other work's (docs/cluster.md, `workers`)
        import torch
        torch.set_num_threads(1)
    section = next(section for section in SECTIONS if section.name == name)
    try:
        section.function(SMOKE if smoke else GPU, table, Clock(seconds * 0.9 - 3))
    except BaseException as error:  # the section's own failure: said in its section, the others go on
        table.error(error_text(error))
        traceback.print_exc()
        return 1
    return 0  # a row's error is in the table: the parent counts it


# ---- the parent: run, print, write --------------------------------------------------------------------

def section_limits(started: float, index: int, total: float, smoke: bool) -> float:
    """Seconds for section `index`: its budget, cut so the sections after it keep their minimum."""
    if smoke:
        return SMOKE_SECTION_SECONDS
    later = sum(section.minimum for section in SECTIONS[index + 1:])
    return min(SECTIONS[index].budget, total - (time.monotonic() - started) - later)


def launch_section(section: Section, seconds: float, smoke: bool, folder: Path) -> tuple[dict, float, str]:
    """(the section's table, seconds it took, its failure or "") from a process of its own, in a session of its
    own: on its time limit the whole group gets SIGTERM (runs save, an MPS daemon stops), then SIGKILL."""
    result, log = folder / f"{section.name}.json", folder / f"{section.name}.log"
    arguments = [sys.executable, str(Path(__file__).resolve()), f"section={section.name}", f"result={result}",
                 f"seconds={seconds:.0f}", *(["smoke"] if smoke else [])]
    begin = time.monotonic()
    with open(log, "w") as handle:
        process = subprocess.Popen(arguments, cwd=REPOSITORY, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    failure = ""
    try:
        code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        code, failure = None, f"stopped at its time limit of {seconds:.0f} s"
        stop_group(process)
    except BaseException:  # the check itself was stopped (SIGTERM, Ctrl-C): the running section goes with it
        stop_group(process)
        raise
    if code:
        output = log_tail(log, 15, "\n")
        failure = f"its process ended with exit code {code}; the end of its output:\n```\n{output}\n```"
    try:
        table = json.loads(result.read_text())
    except (OSError, ValueError):
        table = {"columns": [], "rows": [], "notes": [], "errors": []}
    return table, time.monotonic() - begin, failure


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the section's process group (its own session): its runs save and an MPS daemon stops; then,
    after STOP_GRACE_SECONDS or once its leader ended, SIGKILL to whatever of the group is left."""
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    signal_group(process.pid, signal.SIGKILL)
    process.wait()


def signal_group(group: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, number)


def markdown_row(cells) -> str:
    return "| " + " | ".join(str(cell).replace("|", "/").replace("\n", " ") for cell in cells) + " |"


def render(section: Section, table: dict, seconds: float, failure: str) -> str:
    """The section as markdown: a header with its time, the short header, the table, notes, errors."""
    lines = [f"## {section.title} ({seconds:.1f} s)", "", section.about, ""]
    if table["columns"]:
        lines += [markdown_row(table["columns"]), "|" + "---|" * len(table["columns"])]
        lines += [markdown_row(row) for row in table["rows"]]
    else:
        lines += ["(no table: the section stopped before its first row)"]
    lines += [""] + [f"{note}  " for note in table["notes"]]
    lines += [f"**error:** {text}  " for text in [*table["errors"], *([failure] if failure else [])]]
    return "\n".join(lines).rstrip() + "\n"


def run_all(smoke: bool, out: Path | None) -> int:
    """Every section in turn, printed as it ends and written to `out` (the whole report each time); the
    exit code: 0 when every section completed without an error."""
    from utils import atomic_write_text
    started, total = time.monotonic(), SMOKE_TOTAL_SECONDS if smoke else TOTAL_SECONDS
    mode = "smoke: the CPU, tiny sizes (the code paths, not the numbers)" if smoke else "the GPU check"
    report, failed = [f"# Device check: {mode}\n"], []
    signal.signal(signal.SIGTERM, lambda number, _frame: sys.exit(128 + number))  # a section is stopped with it
    if out is not None:
        atomic_write_text(out, report[0])  # an out= that cannot be written fails now, not after five minutes
    print(report[0], flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        for index, section in enumerate(SECTIONS):
            seconds = section_limits(started, index, total, smoke)
            if seconds < section.minimum / 2:
                table, took, failure = {"columns": [], "rows": [], "notes": [], "errors": []}, 0.0, \
                    "skipped: the check's total time is spent"
            else:
                table, took, failure = launch_section(section, seconds, smoke, Path(folder))
            if failure or table["errors"]:
                failed.append(section.title)
            report.append(render(section, table, took, failure))
            print(report[-1], flush=True)
            if out is not None:
                atomic_write_text(out, "\n".join(report))
    ending = (f"total {time.monotonic() - started:.0f} s; " +
              (f"{len(failed)} of {len(SECTIONS)} sections reported errors: {', '.join(failed)}" if failed
               else f"all {len(SECTIONS)} sections completed"))
    report.append(ending + "\n")
    print(ending, flush=True)
    if out is not None:
        atomic_write_text(out, "\n".join(report))
    return 1 if failed else 0


def parse(arguments: list[str]) -> dict:
    """{"smoke": bool, "out": Path | None, and a section child's section/result/seconds}; ValueError: the bad word."""
    options = {"smoke": False, "out": None}
    for word in arguments:
        key, _, value = word.partition("=")
        if word == "smoke":
            options["smoke"] = True
        elif key in ("out", "result") and value:
            options[key] = Path(value)
        elif key == "section" and value in {section.name for section in SECTIONS}:
            options[key] = value
        elif key == "seconds" and value.replace(".", "", 1).isdigit():
            options[key] = float(value)
        else:
            raise ValueError(f"unknown argument {word!r}; accepted: smoke, out=FILE.md")
    if "section" in options and not {"result", "seconds"} <= options.keys():
        raise ValueError("section=NAME needs result=PATH and seconds=S (the check starts its sections itself)")
    if options["out"] is not None and options["out"].is_dir():
        raise ValueError(f"out={options['out']} is a folder; name a file, e.g. out=gpu_check.md")
    if options["out"] is not None and not options["out"].parent.is_dir():
        raise ValueError(f"out={options['out']}: the folder {options['out'].parent} does not exist; create it or "
                         "choose another")
    return options


def main(arguments: list[str]) -> int:
    """`python benchmarks/gpu_check.py [smoke] [out=FILE.md]`; see the module's docstring."""
    try:
        options = parse(arguments)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if "section" in options:
        return run_section(options["section"], options["result"], options["seconds"], options["smoke"])
    if not options["smoke"]:
        import torch
        if not torch.cuda.is_available():
            print("error: no CUDA device is visible; run this on the GPU machine, or `python benchmarks/gpu_check.py "
                  "smoke` for the CPU code paths", file=sys.stderr)
            return 1
    try:
        return run_all(options["smoke"], options["out"])
    except OSError as error:  # out= not writable, a full disk
        from utils import describe_environment_error
        print(f"error: {describe_environment_error(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
