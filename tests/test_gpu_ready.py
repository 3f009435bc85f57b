"""GPU-readiness, checked on the CPU: the execution environment each resume state records and the note a
resume under another one leaves; deterministic kernels chosen on CUDA and restored after; one host
synchronisation per log flush and none per step; each epoch augmented in one batched pass that gives
exactly the batches of a per-batch augmentation."""

import dataclasses
import json
import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conf import Execution, Settings
from data import TrainingStream, crop_and_flip, normalize
from data import stream as stream_module
from folders import RunFolder
from tests.conftest import read_json
from tests.test_resume import train_until_state
from training import devices, loop
from utils import seeded_generator, sha256_file


def digests(folder: RunFolder) -> dict[str, str]:
    return {name: sha256_file(folder.checkpoints / name) for name in read_json(folder.manifest_path)["files"]}


# -- the environment record and the note of a resume under another one ---------------------------------

def test_each_resume_state_records_the_execution_environment(tmp_path, tiny_settings, monkeypatch, one_thread):
    """A resume under the same environment notes no change: lineage.json and status.json hold the environment
    (device, threads, torch and its CPU kernels...) and no note."""
    settings, execution = tiny_settings("resume_every_seconds=0")
    train_until_state(settings, execution, tmp_path, monkeypatch, iteration=12)
    folder = RunFolder(tmp_path)
    state = folder.load_resume_state()
    assert state["environment"] == devices.execution_environment(settings, execution, torch.device("cpu"))
    assert state["environment"]["device"].startswith("cpu (") and state["environment"]["cudnn"] is None
    assert loop.run(settings, tmp_path, execution) == "done"
    assert folder.read_lineage() == {"environment": state["environment"]}
    assert state["environment"]["threads"] == 1 and state["environment"]["cpu_kernels"] == devices.cpu_kernel_libraries()
    assert read_json(folder.status_path)["environment"] == state["environment"]
    assert "environment_changes" not in read_json(folder.status_path)


def test_a_resume_under_another_environment_is_warned_recorded_and_goes_on(tmp_path, tiny_settings, monkeypatch,
                                                                          caplog, one_thread):
    """A state whose recorded environment differs (fabricated: saved on a GPU with bf16) still resumes, with
    its values (the run ends bitwise equal to an uninterrupted one, as the real environment is the same
    here); the warning names what changed, and lineage.json and status.json keep the note."""
    settings, execution = tiny_settings("resume_every_seconds=0")
    assert loop.run(settings, tmp_path / "reference", execution) == "done"
    train_until_state(settings, execution, tmp_path / "resumed", monkeypatch, iteration=12)
    folder = RunFolder(tmp_path / "resumed")
    state = folder.load_resume_state()
    here = dict(state["environment"])
    state["environment"] = {**here, "device": "NVIDIA H200", "cudnn": 91002, "bf16": True}
    folder.save_resume_state(state)  # the state and its sha256, as a GPU run would have written them
    caplog.set_level("WARNING")
    assert loop.run(settings, folder.path, execution) == "done"
    warning = next(record.getMessage() for record in caplog.records if "execution environment" in record.getMessage())
    assert "iteration 12" in warning and f"device NVIDIA H200 -> {here['device']}" in warning
    assert "bf16 True -> False" in warning and "cudnn 91002 -> None" in warning
    changed = {"bf16": [True, False], "cudnn": [91002, None], "device": ["NVIDIA H200", here["device"]]}
    note = [{"iteration": 12, "changed": changed}]
    assert folder.read_lineage() == {"environment": here, "environment_changes": note}
    assert read_json(folder.status_path)["environment_changes"] == note
    assert read_json(folder.status_path)["state"] == "done"
    reference = RunFolder(tmp_path / "reference")
    assert digests(folder) == digests(reference)  # the resumed values, not a restart
    assert folder.log_path.read_text() == reference.log_path.read_text()
    assert folder.load_resume_state()["environment"] == here  # states saved since record this environment


def test_a_resume_keeps_its_threads_unless_threads_asks_and_an_asked_change_is_recorded(tmp_path, tiny_settings,
                                                                                        monkeypatch, caplog):
    """Started with one thread, a run resumed with threads=0 in a process given all this machine's CPUs keeps
    one and notes nothing; threads=2 typed on a resume gets two threads, warned and recorded as an environment
    change (threads 1 -> 2); the states saved since, and every later status, say two. torch's own count is
    restored after each run."""
    settings, one = tiny_settings("resume_every_seconds=0")  # threads=1
    default = dataclasses.replace(one, threads=0)
    before = torch.get_num_threads()
    train_until_state(settings, one, tmp_path, monkeypatch, iteration=6)
    folder = RunFolder(tmp_path)
    train_until_state(settings, default, tmp_path, monkeypatch, iteration=12)  # threads=0: the recorded one
    assert folder.load_resume_state()["environment"]["threads"] == 1 and "environment_changes" not in folder.read_lineage()
    caplog.set_level("WARNING")
    assert loop.run(settings, tmp_path, dataclasses.replace(one, threads=2), cpus=1) == "done"
    assert torch.get_num_threads() == before
    assert "threads 1 -> 2" in caplog.text
    assert folder.read_lineage()["environment_changes"] == [{"iteration": 12, "changed": {"threads": [1, 2]}}]
    status = read_json(folder.status_path)
    assert status["environment"]["threads"] == 2 and status["environment_changes"][0]["changed"] == {"threads": [1, 2]}
    assert folder.recorded_threads() == 2


def test_a_first_start_takes_the_cpus_it_was_given(tmp_path, tiny_settings):
    """threads=0: a launcher's share (cpus=) or, with none, devices.cpus_given()."""
    settings, one = tiny_settings("epochs=1")
    default = dataclasses.replace(one, threads=0)
    assert loop.run(settings, tmp_path / "share", default, cpus=1) == "done"
    assert RunFolder(tmp_path / "share").recorded_threads() == 1
    assert loop.run(settings, tmp_path / "given", default) == "done"
    assert RunFolder(tmp_path / "given").recorded_threads() == devices.cpus_given()


def test_cpus_given_is_the_fewest_of_torch_the_affinity_and_slurm(monkeypatch):
    monkeypatch.setattr(devices, "TORCH_DEFAULT_THREADS", 64)
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: set(range(48)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert devices.cpus_given() == 8  # a job with task/none sees the whole node, and was given 8
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert devices.cpus_given() == 48
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda _pid: {3})
    assert devices.cpus_given() == 1  # taskset -c 3
    assert devices.choose_threads("run", 0, recorded=None, given=4) == 4 and devices.choose_threads("run", 0, 2, 4) == 2
    assert devices.choose_threads("run", 3, recorded=2, given=4) == 3


def test_environment_notes_keep_the_lineage_and_follow_the_states_resumed_from(tmp_path):
    """A second start from the same state adds no second note; a start from an earlier state (the later ones
    being re-made) drops the notes from there on; the rest of lineage.json is kept."""
    folder = RunFolder(tmp_path)
    folder.write_lineage({"parent_run_id": "parent"})
    gpu, cpu = {"device": "NVIDIA H200", "bf16": True}, {"device": "cpu (AVX2)", "bf16": False}
    for _ in range(2):
        assert folder.note_resume_environment(12, gpu, cpu) == {"bf16": [True, False],
                                                                "device": ["NVIDIA H200", "cpu (AVX2)"]}
    assert folder.note_resume_environment(20, cpu, cpu) == {}
    note = {"iteration": 12, "changed": {"bf16": [True, False], "device": ["NVIDIA H200", "cpu (AVX2)"]}}
    assert folder.read_lineage() == {"parent_run_id": "parent", "environment": cpu, "environment_changes": [note]}
    folder.write_status("running", iteration=20)
    assert read_json(folder.status_path)["environment_changes"] == [note]
    folder.note_resume_environment(12, None, cpu)  # resumed from 12 again, by a state with no record
    assert folder.read_lineage() == {"parent_run_id": "parent", "environment": cpu, "environment_changes": []}
    folder.write_status("running", iteration=12)
    assert "environment_changes" not in read_json(folder.status_path)


def test_auto_turns_bf16_and_channels_last_on_for_conv_nets_on_cuda_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    convnet, mlp = Settings(arch="convnet"), Settings(arch="mlp")
    for name in ("bf16", "channels_last"):
        assert getattr(Execution(), name) == "auto"
        auto, on, off = (Execution(**{name: value}) for value in ("auto", "on", "off"))
        assert devices.cuda_option(auto, name, convnet, cuda) and not devices.cuda_option(auto, name, mlp, cuda)
        assert devices.cuda_option(on, name, mlp, cuda) and not devices.cuda_option(off, name, convnet, cuda)
        assert not any(devices.cuda_option(execution, name, convnet, cpu) for execution in (auto, on))
    assert Execution().deterministic is True


@pytest.mark.parametrize("deterministic", [True, False])
def test_kernel_choice_sets_cudnn_and_torch_on_cuda_and_restores_them(deterministic, monkeypatch):
    """Only flags are set (no CUDA call), so this runs without a GPU."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    with devices.kernel_choice(torch.device("cpu"), deterministic):
        assert (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
                torch.utils.deterministic.fill_uninitialized_memory) == before  # the CPU: nothing changes
    with devices.kernel_choice(torch.device("cuda"), deterministic):
        assert cudnn.deterministic is deterministic and cudnn.benchmark is not deterministic
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        assert (os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8") is deterministic
    assert (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory) == before


def test_the_cpu_optimizer_is_torchs_default_implementation():
    """Fused kernels are for CUDA parameters only: the CPU keeps the numbers the exact-resume tests pin."""
    model = torch.nn.Linear(3, 2)
    for optimizer in ("sgd", "adam"):
        made = devices.make_optimizer(Settings(optimizer=optimizer), model)
        assert not made.defaults.get("fused") and not made.defaults.get("foreach")


def test_a_loaded_optimizer_state_keeps_this_devices_kernel():
    """A state saved by a fused optimizer (a GPU run's) loads into the CPU's default one and the other way
    round; each keeps its own kernel and steps on (torch alone would take the saved groups' choice)."""
    model = torch.nn.Linear(3, 2)
    model(torch.ones(4, 3)).sum().backward()
    fused = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    fused.step()
    default = devices.make_optimizer(Settings(optimizer="adam"), model)
    devices.load_optimizer_state(default, fused.state_dict())
    assert not default.param_groups[0]["fused"] and default.state[model.weight]["step"].item() == 1
    default.step()
    devices.load_optimizer_state(fused, default.state_dict())
    assert fused.param_groups[0]["fused"] is True
    fused.step()
    assert fused.state[model.weight]["step"].item() == 3


# -- host synchronisations: none per step, one per log flush ---------------------------------------------

class HostReads(TorchDispatchMode):
    """Counts the ops that copy one device value to the host (`.item()`, float(t), bool(t), ...)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, function, types, arguments=(), keywords=None):
        if function is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return function(*arguments, **(keywords or {}))


def test_steps_never_read_the_device_and_a_flush_reads_it_once(tmp_path, tiny_settings, monkeypatch, one_thread):
    """Every step and every flush of a run, counted: item-like reads (a dispatch mode) and whole-tensor
    reads (`.tolist()`, `.numpy()`, through a counting hook). A flush reads its records with one
    `.tolist()`; one at a checkpoint reads the test metrics with one more."""
    # 128 steps; checkpoints at 1, 2, 4, ..., 64, 128: the 64 steps between the last two flush once at 50
    settings, execution = tiny_settings("epochs=16", "resume_every_seconds=3600")
    whole_reads = [0]

    def counting(real):
        def read(tensor, *arguments):
            whole_reads[0] += 1
            return real(tensor, *arguments)
        return read

    for name in ("tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    counts = {"step": [], "flush": [], "checkpoint flush": []}

    def counted(kind_of, method):
        def wrapper(self, *arguments):
            whole_reads[0] = 0
            with HostReads() as reads:
                result = method(self, *arguments)
            counts[kind_of(arguments)].append((reads.count, whole_reads[0]))
            return result
        return wrapper

    monkeypatch.setattr(loop.RunTraining, "step", counted(lambda arguments: "step", loop.RunTraining.step))
    monkeypatch.setattr(loop.RunTraining, "flush", counted(
        lambda arguments: "checkpoint flush" if arguments[1] else "flush", loop.RunTraining.flush))
    assert loop.run(settings, tmp_path, execution) == "done"
    assert counts["step"] == [(0, 0)] * 128
    assert counts["flush"] == [(0, 1)]  # at iteration 114
    assert counts["checkpoint flush"] == [(0, 2)] * 8  # iterations 1, 2, 4, 8, 16, 32, 64, 128
    log = [json.loads(line) for line in RunFolder(tmp_path).log_path.read_text().splitlines()]
    assert [record["iteration"] for record in log] == list(range(1, 129))


def test_step_records_keep_float32_values_exactly():
    """What the log gets from the device buffer is what `.item()` of each step's tensor gave."""
    records = devices.StepRecords(4, torch.device("cpu"))
    values = [(torch.tensor(0.1 * step, dtype=torch.float32), torch.tensor(step / 3, dtype=torch.float32))
              for step in range(3)]
    for step, (loss, accuracy) in enumerate(values):
        records.add(step + 1, 0.5, loss, accuracy)
    assert len(records) == 3
    assert records.take() == [(step + 1, 0.5, loss.item(), accuracy.item()) for step, (loss, accuracy) in
                              enumerate(values)]
    assert len(records) == 0 and records.take() == []


# -- each epoch augmented in one batched pass ------------------------------------------------------------

def per_batch_reference(stream: TrainingStream, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as the per-batch stream made it: the epoch's plan drawn in the same order, then the batch's
    examples gathered, cropped and flipped, and normalised."""
    epoch, position = divmod(iteration, stream.iterations_per_epoch)
    count, padding = stream.images.shape[0], stream.padding
    generator = seeded_generator(stream.seed, "epoch", epoch)
    permutation = torch.randperm(count, generator=generator)
    crop_rows = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    crop_columns = torch.randint(0, 2 * padding + 1, (count,), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    rows = slice(position * stream.batch_size, (position + 1) * stream.batch_size)
    images = stream.images[permutation[rows]]
    if stream.augment:
        images = crop_and_flip(images, crop_rows[rows], crop_columns[rows], flips[rows], padding)
    return normalize(images, stream.mean, stream.std), stream.labels[permutation[rows]]


@pytest.mark.parametrize("chunk_bytes", [stream_module.AUGMENT_CHUNK_BYTES, 5000])  # one chunk; chunks of 1-2 examples
@pytest.mark.parametrize("augment", [True, False])
def test_the_batched_epoch_gives_exactly_the_per_batch_batches(augment, chunk_bytes, monkeypatch):
    monkeypatch.setattr(stream_module, "AUGMENT_CHUNK_BYTES", chunk_bytes)
    images = torch.randint(0, 256, (70, 3, 12, 10), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = torch.arange(70)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    for seed in (0, 1, 7):
        stream = TrainingStream(images, labels, batch_size=16, augment=augment, seed=seed, mean=mean, std=std)
        for iteration in (0, 3, 1, 5, 4, 9, 2, 13):  # across epochs, out of order: the cache is rebuilt each time
            batch, batch_labels = stream.batch(iteration)
            expected, expected_labels = per_batch_reference(stream, iteration)
            assert torch.equal(batch, expected) and torch.equal(batch_labels, expected_labels), (seed, iteration)
