"""How a training run uses its device: its CPU threads (fixed at the run's first start), the execution
environment each resume state records, the kernel choice on CUDA (deterministic by default), the CUDA-only
options bf16 and channels_last, and the per-step numbers kept on the device until the log reads them; the
optimizer (fused kernels on CUDA).

    count = choose_threads(run_id, execution.threads, recorded=folder.recorded_threads(), given=cpus_given())
    with cpu_threads(count):                                             # torch's threads, restored after
        environment = execution_environment(settings, execution, device) # {"device", "threads", "torch", ...}
    with kernel_choice(device, execution.deterministic):                 # cuDNN/torch set, restored after
        ...
    records = StepRecords(capacity=50, device=device); records.add(iteration, lr, loss, accuracy)
    records.take()                                                       # one host synchronisation

Bitwise exact resume holds on the same environment; training/loop.py warns and the run folder records it when
a run resumes under another one (folders.environment_differences).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re

import torch

import models
from conf import Execution, Settings, cpu_waiting
from utils import set_cpu_threads

logger = logging.getLogger("training")  # its lines are the training run's
# What `auto` turns on for the CUDA-only execution options bf16 and channels_last (never on the CPU): the
# layer types each pays for (models.layer_type). The one place to change once a GPU measurement says.
AUTO_ON_CUDA = {"bf16": ("convolutional",), "channels_last": ("convolutional",)}
# torch's own thread count, read before anything here sets one: it follows OMP_NUM_THREADS and the CPU
# affinity the process started with (a job's `taskset`, Slurm's task/affinity), capped at the physical cores.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def cpus_given() -> int:
    """The CPUs this process was given to compute on: torch's default (OMP_NUM_THREADS, the CPU affinity),
    the CPU affinity now, and a Slurm job's allocation (cpus-per-task), whichever is fewest; never the
    node's whole core count, which a job with task/none would otherwise see."""
    counts = [TORCH_DEFAULT_THREADS]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        counts.append(int(os.environ["SLURM_CPUS_PER_TASK"]))
    return max(1, min(counts))


def choose_threads(run_id: str, requested: int, recorded: int | None, given: int) -> int:
    """A run's CPU threads for this start, set before anything computes: `requested` (threads=N: what the
    user asked, which a resume then records as an environment change when it differs), else the count the
    run was started with, whatever this node offers (logged), else the CPUs `given` (a first start). Kept
    because torch's CPU kernels split their sums by thread count: a full reduction (`sum`, the loss's
    mean) and oneDNN's convolution weight gradient (summed over the batch per thread) round differently
    at 1 and 2 threads, while GEMM, the forward convolution and batch norm do not (measured on torch
    2.15's MKL and oneDNN 3.13; docs/outputs.md, exact resume)."""
    if recorded and not requested and recorded != given:
        logger.info("%s: keeps the %d CPU thread(s) it was started with (this process was given %d): torch's CPU "
                    "sums depend on the thread count, so a resume with another would not end bitwise equal "
                    "(threads=N changes it, recorded as an environment change)", run_id, recorded, given)
    return requested or recorded or given


@contextlib.contextmanager
def cpu_threads(count: int):
    """torch's intra-op CPU threads set to `count` while a run trains, and restored after: several runs
    trained one after another in one process (a pack) each keep their own count."""
    saved = set_cpu_threads(count)
    try:
        yield
    finally:
        set_cpu_threads(saved)


@functools.cache
def cpu_kernel_libraries() -> str:
    """The BLAS and oneDNN builds torch's CPU kernels come from, e.g. `MKL 2024.2, oneDNN 3.13.3`: another
    build may round the same GEMM or convolution differently."""
    configuration = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", configuration)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", configuration)
    onednn = re.search(r"MKL-DNN v([\d.]+)", configuration)
    parts = [f"MKL {mkl.group(1)}" if mkl else (blas.group(1) if blas else "unknown BLAS")]
    if onednn:
        parts.append(f"oneDNN {onednn.group(1)}")
    return ", ".join(parts)


def cuda_option(execution: Execution, name: str, settings: Settings, device: torch.device) -> bool:
    """Whether the auto/on/off execution option `name` (bf16, channels_last) is in effect for this run:
    never on the CPU; `auto` = on for the layer types AUTO_ON_CUDA names."""
    value = getattr(execution, name)
    return device.type == "cuda" and (value == "on" or (value == "auto" and
                                                        models.layer_type(settings.arch) in AUTO_ON_CUDA[name]))


def execution_environment(settings: Settings, execution: Execution, device: torch.device) -> dict:
    """What decides a run's bytes besides its settings, as each resume state records it: the device (a
    CPU by its vector instruction set, which picks torch's kernels), the CPU threads in effect (cpu_threads),
    torch with its BLAS and oneDNN builds on the CPU or cuDNN on CUDA, and the options in effect."""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    return {"device": name, "threads": torch.get_num_threads(),
            "torch": str(torch.__version__), "cpu_kernels": None if cuda else cpu_kernel_libraries(),
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "bf16": cuda_option(execution, "bf16", settings, device),
            "channels_last": cuda_option(execution, "channels_last", settings, device),
            "deterministic": execution.deterministic or not cuda,  # the CPU kernels used here are deterministic
            "cpu_wait": cpu_waiting.describe()}  # how idle CPU threads wait: recorded, changes no bit


@contextlib.contextmanager
def kernel_choice(device: torch.device, deterministic: bool):
    """On CUDA, the kernels of a run: deterministic ones (cuDNN's deterministic algorithms, no autotuning
    benchmark, torch's deterministic algorithms), or with `deterministic=False` the fastest (cuDNN
    benchmarks each shape). The previous choice is restored after, for whatever the process does next."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory)
    if deterministic:  # cuBLAS's fixed workspace, read once, when its first handle is made: before any matmul, and kept
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, not deterministic
    # warn_only: every kernel of the training path (conv, batch norm, linear, mean pooling, 1-D cross-entropy,
    # gathers) has a deterministic version; one that has none (a future model's) logs a warning naming
    # itself rather than killing a run hours in.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # No op here reads memory it did not write: filling each new tensor with NaN would only cost bandwidth.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        torch.utils.deterministic.fill_uninitialized_memory = saved[4]


def make_optimizer(settings: Settings, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The run's optimizer. On CUDA its fused kernel (one launch updates every parameter, instead of a few
    per parameter); on the CPU torch's default implementation, whose numbers the exact-resume tests pin."""
    parameters = list(model.parameters())
    kernel = {"fused": True} if parameters and all(parameter.is_cuda for parameter in parameters) else {}
    if settings.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=settings.lr, betas=(settings.momentum, 0.999),
                                weight_decay=settings.weight_decay, **kernel)
    return torch.optim.SGD(parameters, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay, **kernel)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load a saved optimizer state, keeping this optimizer's kernel (fused on CUDA, torch's default on the
    CPU): torch would take the saved groups' choice, so a state made on another device would bring its
    own (and Adam's step would stay where that kernel wants it)."""
    kernel = {key: optimizer.defaults[key] for key in ("fused", "foreach") if key in optimizer.defaults}
    optimizer.load_state_dict({**saved, "param_groups": [{**group, **kernel} for group in saved["param_groups"]]})


class StepRecords:
    """The training loss and batch accuracy of the steps since the last log flush, kept on the device: the
    flush reads them all with one host synchronisation (a read per step would leave the GPU idle at each)."""

    def __init__(self, capacity: int, device: torch.device):
        self.values = torch.empty((capacity, 2), device=device)  # float32 [loss, accuracy] per step
        self.steps: list[tuple[int, float]] = []  # (iteration, lr) per row: known on the host

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, iteration: int, lr: float, loss: torch.Tensor, accuracy: torch.Tensor) -> None:
        """Keep one step's (detached, float32) loss and accuracy: device copies, no synchronisation."""
        row = len(self.steps)
        self.values[row, 0], self.values[row, 1] = loss, accuracy
        self.steps.append((iteration, lr))

    def take(self) -> list[tuple[int, float, float, float]]:
        """(iteration, lr, loss, accuracy) of every step kept since the last take: one `.tolist()`."""
        values = self.values[:len(self.steps)].tolist()
        taken = [(iteration, lr, loss, accuracy) for (iteration, lr), (loss, accuracy) in zip(self.steps, values)]
        self.steps = []
        return taken
