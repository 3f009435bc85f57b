"""training.run(settings, run_dir, execution) — train one run to its end, resuming exactly where it stopped.

The one resumable training loop (train.py is its command line; slurm/ imports this module). Writes the
run folder (layout in checkpointing.py): log-spaced checkpoints with a sha256 manifest, a
per-iteration log and a status file, bit for bit the same whether or not the run was interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as functional

import data
import models
import stages
from checkpointing import RunFolder, checkpoint_schedule
from conf import Execution, Settings, SettingsError, help_text, parse_arguments
from conf.plasticity import run_kind
from utils import atomic_write_json, derive_seed, exclusive_lock, progress_bar, setup_logging

logger = logging.getLogger("training")
LOG_FLUSH_EVERY = 50  # iterations between host syncs for the log (and the divergence check)


class Interrupted(Exception):
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


def make_optimizer(settings: Settings, model: torch.nn.Module) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr, betas=(settings.momentum, 0.999),
                                weight_decay=settings.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


def loss_function(settings: Settings, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if settings.loss == "mse":  # squared error to one-hot targets, averaged over batch and classes
        return functional.mse_loss(logits.float(), functional.one_hot(labels, logits.shape[1]).float())
    return functional.cross_entropy(logits.float(), labels)


@torch.no_grad()
def evaluate(settings, model, images, labels, dataset, batch_size: int = 1000) -> tuple[float, float]:
    """(mean loss, accuracy) of the model in eval mode over a whole split."""
    model.eval()
    total_loss, correct = torch.zeros((), device=images.device), torch.zeros((), device=images.device)
    for start in range(0, len(images), batch_size):
        logits = model(data.normalize(images[start:start + batch_size], dataset.mean, dataset.std))
        batch_labels = labels[start:start + batch_size]
        total_loss += loss_function(settings, logits, batch_labels) * len(batch_labels)
        correct += (logits.argmax(1) == batch_labels).sum()
    model.train()
    return total_loss.item() / len(images), correct.item() / len(images)


def load_data(settings: Settings, execution: Execution) -> data.ImageDataset:
    return data.load_dataset(settings, data_root=Path(execution.data_root), download=execution.download)


def check_fits(settings: Settings, dataset: data.ImageDataset) -> None:
    """Checks that need the dataset's size or the model's modules (known only once the data is read)."""
    examples = len(dataset.train_labels)
    if settings.batch_size > examples:
        raise SettingsError(f"batch_size={settings.batch_size} exceeds the {examples} training examples of "
                            f"{settings.dataset}; accepted: 1..{examples}")
    stages.check_stage_fits(settings, dataset.train_labels, tuple(dataset.train_images.shape[1:]), dataset.num_classes)
    if run_kind(settings) == "stage1":
        return  # checkpoint_extra is checked against its children's whole length; it keeps those in stage 1
    stage = stages.plan_stage(settings, dataset.train_labels, dataset.num_classes)
    total = stage.first_iteration + settings.epochs * (examples // settings.batch_size)
    beyond = [iteration for iteration in settings.checkpoint_extra if iteration > total]
    if beyond:
        raise SettingsError(f"checkpoint_extra={list(settings.checkpoint_extra)} goes past the last iteration; "
                            f"accepted: iterations in 0..{total}")


def resolve_device(execution: Execution) -> torch.device:
    if execution.device == "cuda" and not torch.cuda.is_available():
        raise SettingsError("device='cuda' but no CUDA device is visible; accepted here: auto, cpu")
    if execution.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(execution.device)


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
        handle_signals: bool = True) -> str:
    """Train one run to its end, resuming from the newest good state in `run_dir`. Returns the final
    state: "done" or "diverged", or "busy" when another process is training this run right now (two
    launches of one grid, say); raises Interrupted on SIGTERM/SIGUSR2."""
    folder = RunFolder(run_dir)
    with exclusive_lock(folder.path / ".lock") as mine:
        if not mine:
            logger.warning("%s is being trained by another process; left to it", settings.run_id)
            return "busy"
        return _train(settings, folder, execution, handle_signals)


def _train(settings: Settings, folder: RunFolder, execution: Execution, handle_signals: bool) -> str:
    """`run` once this process holds the run folder's lock (so stale temporaries are really stale)."""
    record = {"run_id": settings.run_id, "settings": settings.to_record()}
    folder.prepare(record)
    if folder.read_status()["state"] == "done":
        return "done"
    if execution.threads:
        torch.set_num_threads(execution.threads)
    device = resolve_device(execution)
    dataset = load_data(settings, execution).to(device)
    train_labels = dataset.train_labels
    if settings.label_noise > 0:  # IntermediateNC's noisy-label runs; the analysis needs the trained-on labels
        train_labels, changed = data.apply_label_noise(train_labels, fraction=settings.label_noise,
                                                       num_classes=dataset.num_classes, seed=settings.seed)
        atomic_write_json(folder.path / "label_noise.json", {
            "fraction": settings.label_noise, "indices": changed.tolist(),
            "original": dataset.train_labels[changed].tolist(), "noisy": train_labels[changed].tolist()})
    stage = stages.plan_stage(settings, train_labels, dataset.num_classes)
    train_images = dataset.train_images
    if stage.indices is not None:  # stage 1 of a warm start: its subset only (Berariu et al. 2021)
        stages.record_subset(folder, settings, stage.indices)
        train_images, train_labels = train_images[stage.indices.to(device)], train_labels[stage.indices.to(device)]
    stream = data.TrainingStream(train_images, train_labels, batch_size=settings.batch_size, augment=settings.augment,
                                 seed=stage.stream_seed, mean=dataset.mean, std=dataset.std)
    per_epoch = stream.iterations_per_epoch
    first = stage.first_iteration  # 0, or a child's parent's last iteration: iterations count on through stage 2
    total = first + stage.epochs * per_epoch
    schedule = checkpoint_schedule(total_iterations=total, iterations_per_epoch=per_epoch, first_iteration=first,
                                   every_epochs=settings.checkpoint_every_epochs, extra=settings.checkpoint_extra)
    folder.start_manifest(schedule, per_epoch)

    def build_model(purpose: str) -> models.LayerwiseModel:
        torch.manual_seed(derive_seed(settings.seed, purpose))
        built = models.build(settings, input_shape=tuple(dataset.train_images.shape[1:]),
                             num_classes=dataset.num_classes).to(device)
        return built.to(memory_format=torch.channels_last) if execution.channels_last and device.type == "cuda" else built

    model = build_model("init")
    optimizer = make_optimizer(settings, model)

    # A missing or corrupt checkpoint is re-made by resuming from a state before it (training is deterministic).
    corrupt = folder.corrupt_checkpoints()
    state = folder.load_resume_state(at_most=corrupt[0] - 1 if corrupt else None)
    iteration = first
    if state is None and stage.number == 2:  # a child's first start: its parent's final state, then the interventions
        lineage = stages.start_from_parent(settings, folder, model, optimizer, lambda: build_model("stage 2 init"), stage)
        logger.info("%s: starts from %s at iteration %d (reset %s)", settings.run_id, lineage["parent_run_id"], first,
                    ", ".join(lineage["reset_modules"]) or "nothing")
    elif state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        iteration = state["iteration"]
        logger.info("%s: resuming at iteration %d of %d", settings.run_id, iteration, total)
    folder.truncate_log(iteration)
    folder.write_status("running", iteration=iteration, total_iterations=total)

    def epoch_of(step: int) -> float:  # epochs since the lineage began (a child counts its parent's)
        return stage.epoch_offset + (step - first) / per_epoch

    def resume_state() -> dict:
        return {"iteration": iteration, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state()}

    def save_checkpoint(log_record: dict) -> None:
        test_loss, test_accuracy = evaluate(settings, model, dataset.test_images, dataset.test_labels, dataset)
        metrics = {"test_loss": test_loss, "test_accuracy": test_accuracy}
        log_record.update(metrics)
        folder.save_checkpoint(iteration=iteration, epoch=epoch_of(iteration), stage=stage.number, settings_record=record,
                               model_state=model.state_dict(), metrics=metrics)

    scheduled = set(schedule)
    if iteration in scheduled and folder.checkpoint_path(iteration).name not in folder.read_manifest()["files"]:
        save_checkpoint({})
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=execution.bf16 and device.type == "cuda")
    pending: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []
    last_saved = time.monotonic()
    progress = progress_bar(execution.progress, total, iteration, settings.run_id)
    with stop_on_signals(handle_signals) as received:
        while iteration < total:
            lr = learning_rate(settings, iteration - first, per_epoch, stage.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = stream.batch(iteration - first)
            with autocast:
                logits = model(images)
                loss = loss_function(settings, logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            pending.append((iteration, lr, loss.detach(), (logits.argmax(1) == labels).float().mean()))
            if progress is not None:
                progress.update(1)
            at_checkpoint = iteration in scheduled
            save_now = at_checkpoint or received or time.monotonic() - last_saved >= execution.resume_every_seconds
            if save_now or len(pending) >= LOG_FLUSH_EVERY:
                records = [{"iteration": step, "epoch": epoch_of(step), "stage": stage.number, "lr": step_lr,
                            "train_loss": value.item(), "train_accuracy": accuracy.item()}
                           for step, step_lr, value, accuracy in pending]
                pending.clear()
                diverged = next((r["iteration"] for r in records if not math.isfinite(r["train_loss"])), None)
                if diverged is not None:  # a grid goes on; the status says where
                    folder.append_log([r for r in records if r["iteration"] <= diverged])
                    folder.write_status("diverged", iteration=diverged, total_iterations=total,
                                        reason=f"non-finite training loss at iteration {diverged}")
                    logger.warning("%s diverged at iteration %d", settings.run_id, diverged)
                    return "diverged"
                if at_checkpoint:
                    save_checkpoint(records[-1])
                    if progress is None:
                        logger.info("%s iteration %d/%d %s", settings.run_id, iteration, total, json.dumps(records[-1]))
                folder.append_log(records)
            if save_now and iteration < total:
                folder.save_resume_state(resume_state())
                folder.write_status("running", iteration=iteration, total_iterations=total)
                last_saved = time.monotonic()
            if received:
                folder.write_status("interrupted", iteration=iteration, total_iterations=total,
                                    reason=f"signal {signal.Signals(received[0]).name}")
                raise Interrupted(received[0])
    if progress is not None:
        progress.close()
    if run_kind(settings) == "stage1":  # its children start from this state (model and optimizer)
        folder.save_resume_state(resume_state())
    folder.write_status("done", iteration=total, total_iterations=total)  # written last: "done" means complete
    return "done"
