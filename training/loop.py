"""training.run(settings, run_dir, execution) — train one run to its end, resuming exactly where it stopped.

The one resumable training loop (train.py is its command line; slurm/ imports this module). Writes the run folder
(layout in folders/__init__.py): log-spaced checkpoints with a sha256 manifest, a per-iteration log (its live curves
too: training/curves.py) and a status file, bit for bit the same whether or not the run was interrupted."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as functional

import data
import models
from conf import Execution, Settings
from conf.plasticity import has_parent, run_kind
from folders import RunFolder, RunFolderError
from training import devices, stages
from training.curves import CurvesRunFolder
from utils import Stopped, derive_seed, exclusive_lock, progress_bar

logger = logging.getLogger("training")
LOG_FLUSH_EVERY = 50  # iterations between host syncs for the log (and the divergence check)


class Interrupted(Stopped):
    """SIGTERM or SIGUSR2 arrived; the resumable state was saved first."""

    def __init__(self, signal_number: int):
        super().__init__(f"stopped by signal {signal.Signals(signal_number).name}")
        self.signal_number = signal_number


def learning_rate(settings: Settings, iteration: int, iterations_per_epoch: int, epochs: int | None = None) -> float:
    """The lr of step `iteration` (0-based, counted from the start of the stage) of a schedule over
    `epochs` (default settings.epochs; each stage of a warm start runs its own): a pure function, so
    resuming needs no scheduler state."""
    epochs = settings.epochs if epochs is None else epochs
    epoch = iteration // iterations_per_epoch
    factor = 1.0
    if settings.lr_schedule == "multistep":
        factor = settings.lr_gamma ** sum(epoch >= milestone for milestone in settings.lr_milestones)
    elif settings.lr_schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * iteration / (epochs * iterations_per_epoch)))
    if iteration < settings.warmup_iterations:
        factor *= (iteration + 1) / settings.warmup_iterations
    return settings.lr * factor


def loss_function(settings: Settings, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if settings.loss == "mse":  # squared error to one-hot targets, averaged over batch and classes
        return functional.mse_loss(logits.float(), functional.one_hot(labels, logits.shape[1]).float())
    return functional.cross_entropy(logits.float(), labels)


@torch.no_grad()
def evaluate(settings, model, images, labels, dataset, batch_size: int = 1000) -> tuple[float, float]:
    """(mean loss, accuracy) of the model in eval mode over a whole split; one host synchronisation."""
    model.eval()
    total_loss, correct = torch.zeros((), device=images.device), torch.zeros((), device=images.device)
    for start in range(0, len(images), batch_size):
        logits = model(data.normalize(images[start:start + batch_size], dataset.mean, dataset.std))
        batch_labels = labels[start:start + batch_size]
        total_loss += loss_function(settings, logits, batch_labels) * len(batch_labels)
        correct += (logits.argmax(1) == batch_labels).sum()
    model.train()
    # float64 holds the float32 sum and the integer count exactly: the same numbers as two .item() calls
    loss_sum, correct_count = torch.stack((total_loss.double(), correct.double())).tolist()
    return loss_sum / len(images), correct_count / len(images)


def load_data(settings: Settings, execution: Execution) -> data.ImageDataset:
    return data.load_dataset(settings, data_root=Path(execution.data_root), download=execution.download)


@contextlib.contextmanager
def stop_on_signals(enabled: bool):
    """SIGTERM/SIGUSR2 set a flag that the loop checks after each step (save, then stop)."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run(settings: Settings, run_dir: str | Path, execution: Execution = Execution(), *,
        handle_signals: bool = True, cpus: int = 0) -> str:
    """Train one run to its end, resuming from the newest good state in `run_dir`. Returns the final
    state: "done" or "diverged", or "busy" when another process is training this run right now (two
    launches of one grid, say); raises Interrupted on SIGTERM/SIGUSR2. A finished run whose
    checkpoints were damaged since is trained again from a state before the first damaged one, which
    re-makes them bit for bit (training is deterministic). `cpus`: the CPUs a launcher gave this process
    (a local worker's or a parallel child's share; 0 = devices.cpus_given()), which a first start takes
    as its thread count unless threads= says otherwise; a resume keeps the count it started with."""
    folder = CurvesRunFolder(run_dir, execution)  # a RunFolder whose log is drawn as live curves too
    if settings.imported_from:  # analysis.py import wrote its checkpoints: there is no training to resume
        raise RunFolderError(f"run {settings.run_id} was imported (analysis.py import), not trained here; import "
                             "its checkpoints again to re-make it")
    with exclusive_lock(folder.lock_path) as mine:
        if not mine:
            logger.warning("%s is being trained by another process; left to it", settings.run_id)
            return "busy"
        folder.prepare(settings)  # under the lock: stale temporaries are really stale
        damaged = folder.damaged_checkpoints()
        if folder.read_status()["state"] == "done":
            if not damaged:
                return "done"
            logger.warning("%s: re-making %d missing or corrupt checkpoint(s) from an earlier state", settings.run_id,
                           len(damaged))
        threads = devices.choose_threads(settings.run_id, execution.threads, folder.recorded_threads(),
                                         cpus or devices.cpus_given())
        with devices.cpu_threads(threads), \
                devices.kernel_choice(execution.torch_device(), execution.deterministic):
            return RunTraining(settings, folder, execution, damaged).train(handle_signals)


class RunTraining:
    """One start of one run: the data as the run sees it, the model and optimizer restored to the
    newest usable state, and the loop from there to the end."""

    def __init__(self, settings: Settings, folder: RunFolder, execution: Execution, damaged: list[int]):
        self.settings, self.folder, self.execution = settings, folder, execution
        self.device = execution.torch_device()
        self.environment = devices.execution_environment(settings, execution, self.device)
        self.dataset = load_data(settings, execution).to(self.device)
        self.stage, self.stream = self._stream()
        self.first = self.stage.first_iteration  # 0, or a child's parent's last: iterations count on through stage 2
        self.total = self.first + self.stage.epochs * self.stream.iterations_per_epoch
        self.schedule = stages.checkpoint_schedule(
            total_iterations=self.total, iterations_per_epoch=self.stream.iterations_per_epoch,
            first_iteration=self.first, every_epochs=settings.checkpoint_every_epochs, extra=settings.checkpoint_extra)
        folder.start_manifest(self.schedule, self.stream.iterations_per_epoch)
        self.model = self.build_model("init")
        self.optimizer = devices.make_optimizer(settings, self.model)
        self.iteration = self._restore(at_most=damaged[0] - 1 if damaged else None)
        # stage2_train=head: a linear probe on frozen features (re-applied on every start: not in the state)
        self.frozen = models.freeze_all_but_head(self.model) if settings.stage2_train == "head" else []
        folder.truncate_log(self.iteration)
        folder.write_status("running", iteration=self.iteration, total_iterations=self.total)

    def _stream(self) -> tuple[stages.Stage, data.TrainingStream]:
        """The stage and its batches: the run's labels (after label noise, recorded for the analysis)
        and, in an earlier stage of a staged protocol, its subset only (Berariu et al. 2021)."""
        settings, dataset = self.settings, self.dataset
        labels = stages.labels_recorded(settings, dataset, self.folder)
        self.start = stages.resolve_start(settings, self.folder) if has_parent(settings) else None
        stage = stages.plan_stage(settings, labels, dataset.num_classes, self.start)
        images = dataset.train_images
        if stage.indices is not None:
            stages.record_subset(self.folder, settings, stage.indices)
            chosen = stage.indices.to(self.device)
            images, labels = images[chosen], labels[chosen]
        stream = data.TrainingStream(images, labels, batch_size=settings.batch_size, augment=settings.augment,
                                     seed=stage.stream_seed, mean=dataset.mean, std=dataset.std)
        return stage, stream

    def build_model(self, purpose: str) -> models.LayerwiseModel:
        torch.manual_seed(derive_seed(self.settings.seed, purpose))
        built = models.build(self.settings, input_shape=self.input_shape, num_classes=self.dataset.num_classes)
        built = built.to(self.device)
        if self.environment["channels_last"]:
            return built.to(memory_format=torch.channels_last)
        return built

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.train_images.shape[1:])

    def _restore(self, at_most: int | None) -> int:
        """The iteration to go on from: the newest resume state that loads into this model (an
        unusable one is skipped for the one before), else a child's parent's final state, else 0."""
        for state in self.folder.resume_states(at_most=at_most):
            try:
                recorded = state["environment"]  # every state holds the environment it was saved under
                self.model.load_state_dict(state["model"])
                devices.load_optimizer_state(self.optimizer, state["optimizer"])
                torch.set_rng_state(state["torch_rng"])
            except (RuntimeError, KeyError, ValueError, TypeError) as error:
                logger.warning("%s: resume state at iteration %s does not fit this run (%s); trying an older one",
                               self.settings.run_id, state["iteration"], error)
                self.model = self.build_model("init")
                self.optimizer = devices.make_optimizer(self.settings, self.model)
                continue
            logger.info("%s: resuming at iteration %d of %d", self.settings.run_id, state["iteration"], self.total)
            self.folder.note_resume_environment(state["iteration"], recorded, self.environment)
            return state["iteration"]
        self.folder.note_resume_environment(self.first, None, self.environment)  # from the start: nothing to compare
        if self.start is not None:  # a first start after a parent: its checkpoint, then the interventions
            lineage = stages.start_from_parent(self.settings, self.folder, self.model, self.optimizer,
                                               lambda: self.build_model("stage 2 init"), self.stage, self.start)
            logger.info("%s: starts from %s at iteration %d, %s (rebuilt %s; reset %s)", self.settings.run_id,
                        lineage["parent_run_id"], self.first, self.start.rule,
                        "; ".join(lineage["rebuilt_modules"]) or "nothing", ", ".join(lineage["reset_modules"]) or "nothing")
        return self.first

    def epoch_of(self, step: int) -> float:
        """Epochs since the lineage began (a child counts its parent's)."""
        return self.stage.epoch_offset + (step - self.first) / self.stream.iterations_per_epoch

    def save_checkpoint(self, log_record: dict) -> None:
        test_loss, test_accuracy = evaluate(self.settings, self.model, self.dataset.test_images,
                                            self.dataset.test_labels, self.dataset)
        metrics = {"test_loss": test_loss, "test_accuracy": test_accuracy}
        log_record.update(metrics)
        self.folder.save_checkpoint(iteration=self.iteration, epoch=self.epoch_of(self.iteration),
                                    stage=self.stage.number, settings=self.settings, input_shape=self.input_shape,
                                    num_classes=self.dataset.num_classes, model_state=self.model.state_dict(),
                                    metrics=metrics)

    def save_resume_state(self) -> None:
        self.folder.save_resume_state({"iteration": self.iteration, "model": self.model.state_dict(),
                                       "optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                                       "environment": self.environment})

    def step(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimisation step at self.iteration; (lr, loss, batch accuracy), the last two on the device."""
        lr = learning_rate(self.settings, self.iteration - self.first, self.stream.iterations_per_epoch,
                           self.stage.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for module in self.frozen:  # evaluate() puts the model back in train mode; frozen BatchNorm stays fixed
            module.eval()
        images, labels = self.stream.batch(self.iteration - self.first)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.environment["bf16"]):
            logits = self.model(images)
            loss = loss_function(self.settings, logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return lr, loss.detach(), (logits.argmax(1) == labels).float().mean()

    def flush(self, pending: devices.StepRecords, at_checkpoint: bool) -> bool:
        """Write the pending log records (one host sync for them all); False when the loss diverged."""
        records = [{"iteration": step, "epoch": self.epoch_of(step), "stage": self.stage.number, "lr": lr,
                    "train_loss": loss, "train_accuracy": accuracy}
                   for step, lr, loss, accuracy in pending.take()]
        diverged = next((record["iteration"] for record in records if not math.isfinite(record["train_loss"])), None)
        if diverged is not None:  # a grid goes on; the status says where
            self.folder.append_log([record for record in records if record["iteration"] <= diverged])
            self.folder.write_status("diverged", iteration=diverged, total_iterations=self.total,
                                     reason=f"non-finite training loss at iteration {diverged}")
            logger.warning("%s diverged at iteration %d", self.settings.run_id, diverged)
            return False
        if at_checkpoint:
            self.save_checkpoint(records[-1])
            if self.progress is None:  # the bar says it otherwise
                logger.info("%s iteration %d/%d %s", self.settings.run_id, self.iteration, self.total,
                            json.dumps(records[-1]))
        self.folder.append_log(records)
        return True

    def train(self, handle_signals: bool) -> str:
        """The loop from the restored iteration to the end: "done" or "diverged"; Interrupted on a signal."""
        scheduled = set(self.schedule)
        if self.iteration in scheduled and not self.folder.has_checkpoint(self.iteration):
            self.save_checkpoint({})
        pending = devices.StepRecords(LOG_FLUSH_EVERY, self.device)
        last_saved = time.monotonic()
        progress = self.progress = progress_bar(self.execution.progress, self.total, self.iteration,
                                                self.settings.run_id)
        with stop_on_signals(handle_signals) as received:
            while self.iteration < self.total:
                pending.add(self.iteration + 1, *self.step())
                if progress is not None:
                    progress.update(1)
                at_checkpoint = self.iteration in scheduled
                save_now = (at_checkpoint or received
                            or time.monotonic() - last_saved >= self.execution.resume_every_seconds)
                if (save_now or len(pending) >= LOG_FLUSH_EVERY) and not self.flush(pending, at_checkpoint):
                    return "diverged"
                if save_now and self.iteration < self.total:
                    self.save_resume_state()
                    self.folder.write_status("running", iteration=self.iteration, total_iterations=self.total)
                    last_saved = time.monotonic()
                if received:
                    self.folder.write_status("interrupted", iteration=self.iteration, total_iterations=self.total,
                                             reason=f"signal {signal.Signals(received[0]).name}")
                    raise Interrupted(received[0])
        if progress is not None:
            progress.close()
        if run_kind(self.settings) in ("stage1", "stage"):  # its next stage starts from this state (with the optimizer)
            self.save_resume_state()
        self.folder.write_status("done", iteration=self.total, total_iterations=self.total)  # last: "done" = complete
        return "done"
