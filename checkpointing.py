"""The run folder: checkpoint schedule, self-describing checkpoints, manifest, resumable state, status.

Layout of `<out_dir>/<experiment>/runs/<run_id>/`:

    settings.json             the run's settings (the truth) and run id
    status.json               running | done | diverged | failed | interrupted, iteration, reason (the run writes it)
    job.json                  the Slurm job last submitted for the run (the submitter writes it)
    log.jsonl                 one line per iteration (train loss, accuracy, lr; test metrics at checkpoints)
    label_noise.json          which training labels were changed, and to what (label_noise > 0)
    stage1_subset.json        a stage-1 run's training examples (stages.py; pretrain_fraction > 0, epochs = 0)
    lineage.json              a warm-started child's parent run, the state it started from, the interventions
    manifest.json             the checkpoint schedule and, per written checkpoint, its sha256
    checkpoints/iteration_00000256.pt   {settings, run_id, iteration, epoch, stage, model}: analysis needs nothing else
    resume/state_00001234.pt (+ .sha256)  model, optimizer, RNG and iteration; the two newest are kept

Every file is written to a temporary name and renamed (utils.atomic_*), except log.jsonl, which is
appended to and cut back to the resumed iteration on every start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import torch

from utils import atomic_torch_save, atomic_write_json, atomic_write_text, remove_stale_temporaries, sha256_file

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
RESUME_STATES_KEPT = 2  # the newest, and one older in case the newest is found corrupt


def checkpoint_schedule(*, total_iterations: int, iterations_per_epoch: int, every_epochs: int = 0,
                        extra: tuple[int, ...] = (), first_iteration: int = 0) -> list[int]:
    """The first iteration, first + every power of two, the final iteration, every `every_epochs`
    epochs from the first, and the `extra` iterations between first and final.

    Powers of two because the learning phases (LearnPhase, AAAI 2024) happen on a log time scale:
    their sample log checkpoints at 0, 2, 4, ..., 65536. A warm-started child's stage 2 starts at its
    parent's last iteration and is log-spaced from there, so what the switch does shows up at once."""
    points = {first_iteration, total_iterations,
              *(iteration for iteration in extra if first_iteration <= iteration <= total_iterations)}
    power = 1
    while first_iteration + power < total_iterations:
        points.add(first_iteration + power)
        power *= 2
    if every_epochs:
        step = every_epochs * iterations_per_epoch
        points.update(range(first_iteration + step, total_iterations + 1, step))
    return sorted(points)


def slurm_job_id() -> str | None:
    """This process's Slurm job id as squeue prints it (`123_4` for an array task), or None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class CorruptFile(Exception):
    """A file whose sha256 does not match the one recorded when it was written."""


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.settings_path = self.path / "settings.json"
        self.status_path = self.path / "status.json"
        self.job_path = self.path / "job.json"
        self.log_path = self.path / "log.jsonl"
        self.manifest_path = self.path / "manifest.json"
        self.checkpoints = self.path / "checkpoints"
        self.resume = self.path / "resume"

    # -- status -------------------------------------------------------------------------------
    def read_status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"state": "new"}

    def read_job(self) -> dict:
        """The submitter's record of the last Slurm job launched for this run ({} if none)."""
        try:
            return json.loads(self.job_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_job(self, job_id: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.job_path, {"job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "submitted_at": time.time()})

    def write_status(self, state: str, **fields) -> None:
        """Record the run's state; inside a Slurm job the job id comes along, so status can ask squeue."""
        job_id = slurm_job_id()
        record = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "updated_at": time.time(),
                  "host": socket.gethostname(),
                  "pid": os.getpid(), **({"job_id": job_id} if job_id else {}), **fields}
        atomic_write_json(self.status_path, record)

    # -- start of a run -----------------------------------------------------------------------
    def prepare(self, settings_record: dict) -> None:
        """Create the folder, drop temporaries of a killed writer, and record the settings."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(self.path):
            logger.info("removed stale temporary %s", stale.name)
        if self.settings_path.exists():
            recorded = json.loads(self.settings_path.read_text())
            if recorded != settings_record:
                raise RuntimeError(f"{self.settings_path} holds other settings than this run's; refusing to mix runs")
        else:
            atomic_write_json(self.settings_path, settings_record)

    # -- checkpoints and manifest -------------------------------------------------------------
    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints / f"iteration_{iteration:08d}.pt"

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return {}

    def start_manifest(self, schedule: list[int], iterations_per_epoch: int) -> None:
        manifest = self.read_manifest()
        manifest.update({"format_version": FORMAT_VERSION, "schedule": schedule,
                         "iterations_per_epoch": iterations_per_epoch, "files": manifest.get("files", {})})
        atomic_write_json(self.manifest_path, manifest)

    def save_checkpoint(self, *, iteration: int, epoch: float, stage: int, settings_record: dict,
                        model_state: dict, metrics: dict) -> None:
        path = self.checkpoint_path(iteration)
        payload = {"format_version": FORMAT_VERSION, "iteration": iteration, "epoch": epoch, "stage": stage,
                   "model": model_state, **settings_record}
        digest = atomic_torch_save(payload, path)
        manifest = self.read_manifest()
        manifest["files"][path.name] = {"iteration": iteration, "epoch": epoch, "stage": stage,
                                        "sha256": digest, "bytes": path.stat().st_size, **metrics}
        atomic_write_json(self.manifest_path, manifest)

    def corrupt_checkpoints(self) -> list[int]:
        """Iterations whose checkpoint is missing or differs from the sha256 in the manifest."""
        bad = []
        for name, entry in self.read_manifest().get("files", {}).items():
            path = self.checkpoints / name
            if not path.exists() or sha256_file(path) != entry["sha256"]:
                logger.error("checkpoint %s is missing or corrupt (sha256 mismatch)", path)
                bad.append(entry["iteration"])
        return sorted(bad)

    # -- resumable state ----------------------------------------------------------------------
    def save_resume_state(self, state: dict) -> None:
        """Write the state, then its sha256 beside it: a state without a matching hash is never used."""
        path = self.resume / f"state_{state['iteration']:08d}.pt"
        digest = atomic_torch_save(state, path)
        atomic_write_text(path.with_suffix(".sha256"), digest + "\n")
        for old in sorted(self.resume.glob("state_*.pt"))[:-RESUME_STATES_KEPT]:
            old.with_suffix(".sha256").unlink(missing_ok=True)
            old.unlink(missing_ok=True)

    def load_resume_state(self, *, at_most: int | None = None) -> dict | None:
        """The newest resume state whose sha256 matches (and whose iteration <= at_most); corrupt or
        half-written ones are reported by name and skipped, so the previous good state is used."""
        for path in sorted(self.resume.glob("state_*.pt"), reverse=True):
            try:
                recorded = path.with_suffix(".sha256").read_text().strip()
                if sha256_file(path) != recorded:
                    raise CorruptFile("sha256 mismatch")
                state = torch.load(path, map_location="cpu", weights_only=True)
            except (FileNotFoundError, CorruptFile, RuntimeError, EOFError) as error:
                logger.warning("resume state %s is unusable (%s); trying an older one", path, error)
                continue
            if at_most is None or state["iteration"] <= at_most:
                return state
        return None

    # -- per-iteration log --------------------------------------------------------------------
    def truncate_log(self, iteration: int) -> None:
        """Keep the lines up to `iteration` (a killed run may have logged past its last saved state,
        or died mid-line); rewritten atomically."""
        if not self.log_path.exists():
            return
        kept = []
        for line in self.log_path.read_text().splitlines():
            try:
                if json.loads(line)["iteration"] <= iteration:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue
        atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def append_log(self, records: list[dict]) -> None:
        if records:
            with open(self.log_path, "a") as handle:
                handle.write("".join(json.dumps(record) + "\n" for record in records))
                handle.flush()
