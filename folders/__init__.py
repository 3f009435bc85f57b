"""The experiment folder and the run folder: the one owner of every path, side file and integrity check.

Nothing else in the project spells a file name inside these folders (tests/test_layout.py greps).

    <out_dir>/<experiment>/                    ExperimentFolder
        runs/<run_id>/                         RunFolder (below)
        runs/.staging-<run_id>/                a run being imported (analysis.py import), renamed to runs/<run_id>
                                               once whole; hidden from run_folders(), and one left by a killed
                                               import is removed by the next (under import.lock)
        import.lock                            held while an import stages a run: imports take turns
        preset.json                            a preset file's absolute path (experiment=FILE.py), written when
                                               its grid first trains: one study a folder (check_preset)
        metrics/<run_id>/iteration_*.parquet   one checkpoint's metrics (the files inside: measuring/layout.py)
        metrics.parquet                        the merged table users read
        figures/  report.html  phases.csv      drawn from the table (figures/); figures/.published.json says from
                                               what, so a call with nothing new draws nothing
        slurm/<job id>/                        submitit's job logs and pickles
        tensorboard/<run_id>/                  CurvesFolder: live curves (`tensorboard --logdir <out_dir>/<experiment>`)
            events.out.tfevents.000001.from_00000000   training's (training/curves.py), one per start, named by the
                                               start's number and the iteration it goes on from; on every start the
                                               earlier ones are cut back to that iteration
            layers/events.out.tfevents.000001.layers   the analysis's per-layer metrics, rewritten whole

    <run_id>/
        settings.json             the run's settings (the truth) and run id, checked against each other
        status.json               running | done | diverged | failed | interrupted, iteration, reason, the execution
                                  environment (the run writes it)
        job.json                  the Slurm job last submitted for the run (the submitter writes it)
        log.jsonl                 one line per iteration (train loss, accuracy, lr; test metrics at checkpoints)
        label_noise.json          which training labels were changed, and to what (label_noise > 0)
        stage1_subset.json        a first or earlier stage's training examples (stage-1 and growing-data stage
                                  runs; with the stages and which one it is)
        lineage.json              the execution environment the run trains under (environment: device, threads,
                                  torch, CPU kernels...: a resume keeps its threads), any resume under another
                                  one (environment_changes); a child's parent run, the iteration, rule and
                                  state (sha256) it started from, the rebuilt modules, the interventions
        manifest.json             the checkpoint schedule and, per written checkpoint, its sha256 and size
        checkpoints/iteration_00000256.pt   self-describing: settings, iteration, epoch, stage, input shape, classes, model
        resume/state_00001234.pt (+ .sha256)  model, optimizer, RNG, iteration and the execution environment
                                  (device, threads, torch, CPU kernels, cuDNN, bf16, channels_last, deterministic);
                                  the two newest are kept

Every file is written to a temporary name and renamed (utils.atomic_*), with the permissions the
umask gives (a group-shared folder stays readable and resumable by the group), except log.jsonl and
training's event files, which are appended to and cut back to the resumed iteration on every start.
Every checkpoint and resume state handed out has been checked against its recorded sha256 first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from conf import Settings, SettingsError
from conf.plasticity import lineage_of, transfers
from folders.curves import CurvesFolder
from utils import (InputError, atomic_torch_save, atomic_write_json, atomic_write_text, exclusive_lock, file_stamp,
                   one_line, remove_stale_temporaries, sha256_file, torch_load)

logger = logging.getLogger(__name__)
FORMAT_VERSION = 2  # written in every checkpoint and manifest; a checkpoint of another format is refused (load_checkpoint)
RESUME_STATES_KEPT = 2  # the newest, and one older in case the newest is found corrupt
STAGING_PREFIX = ".staging-"  # hidden: a run being built under this name is no run yet


# Entries of the execution environment that are recorded but change no computed bit (tests/test_cpu_waiting.py):
# a resume under another value is no environment change.
RECORDED_ONLY = ("cpu_wait",)


def environment_differences(recorded: dict, current: dict) -> dict[str, list]:
    """{name: [recorded value, current value]} of every entry of two execution environments that differs
    (RECORDED_ONLY's aside)."""
    return {name: [recorded.get(name), current.get(name)] for name in sorted(set(recorded) | set(current))
            if recorded.get(name) != current.get(name) and name not in RECORDED_ONLY}


def slurm_job_id() -> str | None:
    """This process's Slurm job id as squeue prints it (`123_4` for an array task), or None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class RunFolderError(InputError):
    """A file of a run folder that cannot be used: unreadable, or contradicting the run id. The
    message is one line naming the file and what to do."""


class CorruptFile(RunFolderError):
    """A file whose sha256 does not match the one recorded when it was written, or that does not load."""


def _read_json(path: Path, default=None):
    """A JSON side file, `default` when it is missing; RunFolderError naming it when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}); restore it or delete the run folder") from None


class ExperimentFolder:
    """`<out_dir>/<experiment>/`: its runs, the analysis's folders, figures, report and Slurm logs.

    The analysis's folders are named here — `metrics/` (one cell per checkpoint), the table
    `metrics.parquet/` and `similarity.parquet/` (folders of per-run parts that pandas.read_parquet opens as
    one) — and the files inside them by their owner, the store (measuring/layout.py)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.runs_path = self.path / "runs"
        self.metrics_path = self.path / "metrics"
        self.table_path = self.path / "metrics.parquet"
        self.similarity_path = self.path / "similarity.parquet"
        self.merge_lock_path = self.path / "metrics.lock"
        self.figures_path = self.path / "figures"
        self.publication_path = self.figures_path / ".published.json"  # what the figures were drawn from
        self.publication_lock_path = self.path / "figures.lock"  # held while a process draws them
        self.report_path = self.path / "report.html"
        self.phases_path = self.path / "phases.csv"  # the seed-mean phases per recipe and layer (findings/)
        self.findings_path = self.path / "findings.csv"  # the read-out: per recipe and question (findings/readout.py)
        self.slurm_path = self.path / "slurm"
        self.tensorboard_path = self.path / "tensorboard"
        self.import_lock_path = self.path / "import.lock"  # held while an import stages a run
        self.preset_path = self.path / "preset.json"  # the preset file the runs were trained from (experiment=FILE.py)

    @classmethod
    def of(cls, out_dir: str | Path, experiment: str) -> "ExperimentFolder":
        return cls(Path(out_dir) / experiment)

    @classmethod
    def of_plan(cls, plan) -> "ExperimentFolder":
        """The folder a command line's plan (conf.Plan) names, checked against the preset file its study was trained
        from (check_preset: one study a folder): every command that reads or writes an experiment opens it so."""
        experiment = cls.of(plan.execution.out_dir, plan.experiment)
        experiment.check_preset(plan.preset_source)
        return experiment

    def run(self, run_id: str) -> "RunFolder":
        return RunFolder(self.runs_path / run_id)

    def check_preset(self, source: str) -> None:
        """SettingsError (one line) when the folder's runs were trained from a preset file other than `source` (a
        preset file's absolute path; "" for a name): another file of the same stem, or the name typed alone (the
        command line's grid), would mix its runs and report into that study. Writes nothing."""
        record = _read_json(self.preset_path, {})
        recorded = record.get("source", "") if isinstance(record, dict) else ""
        if not recorded or recorded == source:
            return
        if source:
            raise SettingsError(f"{self.path} holds the study of {recorded}, another file of the same name as "
                                f"{source}; rename {source} or pass another out_dir=")
        raise SettingsError(f"{self.path} holds the study of the preset file {recorded}; pass experiment={recorded} "
                            f"(if that file is gone, delete {self.preset_path} to use the folder by its name)")

    def record_preset(self, source: str) -> None:
        """Record the preset file a study trains from (after check_preset; nothing for a name)."""
        if source and not self.preset_path.exists():
            atomic_write_json(self.preset_path, {"source": source})

    def curves(self, run_id: str) -> "CurvesFolder":
        return CurvesFolder(self.tensorboard_path / run_id)

    def run_folders(self) -> list["RunFolder"]:
        """Every run folder that has its settings file, sorted by run id; hidden folders (a run still being
        staged, or left half-built by a killed import) are no runs, though pathlib's glob matches them."""
        return [RunFolder(path.parent) for path in sorted(self.runs_path.glob("*/settings.json"))
                if not path.parent.name.startswith(".")]

    def read_runs(self) -> dict[str, "RunRecord"]:
        """{run_id: RunRecord} of every run folder, each read once (RunFolder.read_record): what the analysis hands
        down to the measuring, the table, the curves and the report instead of each reading the folders again."""
        return {folder.run_id: folder.read_record() for folder in self.run_folders()}

    def staging_folders(self) -> list[Path]:
        """The runs being staged in runs/ (under a hidden name), or left half-built by a killed process."""
        return sorted(self.runs_path.glob(f"{STAGING_PREFIX}*"))

    @contextlib.contextmanager
    def staging_lock(self):
        """Held while a run is staged: imports into one experiment take turns (waiting), so every staging
        folder found under the lock was left by a killed process (or one that met a full disk): removed, logged."""
        with exclusive_lock(self.import_lock_path, wait=True):
            for stale in self.staging_folders():
                shutil.rmtree(stale)
                logger.warning("removed %s, left half-built by an import that was killed before it finished", stale)
            yield

    @contextlib.contextmanager
    def staged_run(self, run_id: str):
        """A new RunFolder under a hidden name in runs/ to build run `run_id` in (hold staging_lock), renamed
        to runs/<run_id> when the block ends and removed when it raises: one rename of a folder on one file
        system, so the run appears whole or not at all (never a half run that the analysis would measure)."""
        staging = RunFolder(self.runs_path / f"{STAGING_PREFIX}{run_id}")
        staging.path.mkdir(parents=True)
        try:
            yield staging
            os.rename(staging.path, self.runs_path / run_id)
        except BaseException:  # a full disk, a bad file, Ctrl-C: leave nothing that looks like a run
            shutil.rmtree(staging.path, ignore_errors=True)
            raise


def lineage_facts(settings: Settings) -> dict:
    """A run's kind, the runs it starts from and whether it is a transfer child (conf/plasticity.py's rules), worked
    out when its folder is read, so that no reader downstream asks the rules again."""
    run = lineage = lineage_of(settings)
    ancestors = []
    while lineage.parent is not None:
        lineage = lineage.parent
        ancestors.append(lineage.settings.run_id)
    return {"kind": run.kind, "ancestor_ids": tuple(ancestors), "transfer_child": transfers(settings)}


@dataclasses.dataclass(frozen=True)
class StatusFiles:
    """What a run folder says about the run's state (RunFolder.read_status_files)."""

    status: dict  # status.json ({"state": "new"} when absent or cut short)
    job: dict  # job.json ({} when none was submitted)
    damaged: tuple[int, ...]  # iterations whose checkpoint is missing or changed (a run recorded done; else none)


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.settings_path = self.path / "settings.json"
        self.status_path = self.path / "status.json"
        self.job_path = self.path / "job.json"
        self.log_path = self.path / "log.jsonl"
        self.manifest_path = self.path / "manifest.json"
        self.label_noise_path = self.path / "label_noise.json"
        self.subset_path = self.path / "stage1_subset.json"
        self.lineage_path = self.path / "lineage.json"
        self.lock_path = self.path / ".lock"
        self.checkpoints = self.path / "checkpoints"
        self.resume = self.path / "resume"

    @property
    def run_id(self) -> str:
        return self.path.name

    def curves(self) -> CurvesFolder:
        """Its live curves: `<experiment>/tensorboard/<run_id>/` for an experiment's run (`runs/<run_id>/`),
        else `<run_dir>/tensorboard/` (a folder of its own, training.run(settings, any_dir))."""
        if self.path.parent.name == "runs":
            return ExperimentFolder(self.path.parent.parent).curves(self.run_id)
        return CurvesFolder(self.path / "tensorboard")

    # -- settings: the truth about the run, checked against its id ------------------------------
    def read_settings(self) -> Settings:
        """The run's settings; RunFolderError when settings.json is missing, unreadable, names an
        unknown key, or no longer hashes to the run id it records (an edited file would mislabel
        every result)."""
        record = _read_json(self.settings_path)
        if record is None:
            raise RunFolderError(f"{self.settings_path} is missing; {self.path} is not a run folder")
        try:
            settings = Settings.from_record(record["settings"])
        except (KeyError, TypeError, SettingsError) as error:
            raise RunFolderError(f"{self.settings_path} does not hold valid settings ({error}); restore it or delete "
                                 "the run folder") from None
        if settings.run_id != record.get("run_id"):
            raise RunFolderError(f"{self.settings_path} was edited: its settings hash to {settings.run_id}, not to the "
                                 f"run id {record.get('run_id')} it records; restore it (a new setting is a new run)")
        return settings

    def read_record(self) -> "RunRecord":
        """The run as a stage reads it once: settings, listed checkpoints, lineage, the stamps of settings.json and
        manifest.json (taken first: a file replaced while it is read makes the stamp stale, never the content).
        An unusable file is the record's `problem`, not an exception: one run never stops the others."""
        stamps = (file_stamp(self.settings_path), file_stamp(self.manifest_path))
        record = functools.partial(RunRecord, self, stamps=stamps, curves=self.curves(), status=self.read_status())
        try:
            settings = self.read_settings()
        except RunFolderError as error:
            return record(None, None, {}, problem=one_line(error))
        record = functools.partial(record, **lineage_facts(settings))
        try:
            checkpoints = None if stamps[1] is None else self.checkpoint_entries()
        except (RunFolderError, KeyError, TypeError, AttributeError) as error:
            problem = one_line(error) if isinstance(error, RunFolderError) else (
                f"{self.manifest_path} does not list checkpoints ({type(error).__name__}: {error}); launch the run's "
                "grid again to re-make it")
            return record(settings, None, {}, problem=problem)
        try:
            return record(settings, checkpoints, self.read_lineage())
        except RunFolderError as error:
            return record(settings, checkpoints, {}, problem=one_line(error))

    def prepare(self, settings: Settings) -> None:
        """Create the folder, drop temporaries of a killed writer, and record the settings (a folder
        that holds another run's settings is refused)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(self.path):
            logger.info("removed stale temporary %s", stale.name)
        record = {"run_id": settings.run_id, "settings": settings.to_record()}
        recorded = _read_json(self.settings_path)
        if recorded is None:
            atomic_write_json(self.settings_path, record)
        elif recorded != record:
            raise RunFolderError(f"{self.settings_path} holds other settings than run {settings.run_id}; refusing to "
                                 "mix runs (restore the file, or use another out_dir)")

    # -- status -------------------------------------------------------------------------------
    def read_status(self) -> dict:
        try:
            return _read_json(self.status_path, {"state": "new"})
        except RunFolderError:
            return {"state": "new"}  # a status cut short is rewritten by the next start

    def read_job(self) -> dict:
        """The submitter's record of the last Slurm job launched for this run ({} if none)."""
        try:
            return _read_json(self.job_path, {})
        except RunFolderError:
            return {}

    def read_status_files(self) -> "StatusFiles":
        """status.json and job.json, and for a run recorded done its damaged checkpoints (the launcher's quick look:
        damaged_checkpoints(thorough=False)), read once for the launcher and the status table."""
        status = self.read_status()
        damaged = self.damaged_checkpoints(thorough=False) if status.get("state") == "done" else []
        return StatusFiles(status, self.read_job(), tuple(damaged))

    def write_job(self, job_id: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.job_path, {"job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "submitted_at": time.time()})

    def write_status(self, state: str, **fields) -> None:
        """Record the run's state; inside a Slurm job the job id comes along, so status can ask squeue. A run
        that resumed under another execution environment says so in every status (environment_changes), and
        each status holds the environment the run trains under now (environment: device, threads, ...)."""
        job_id = slurm_job_id()
        lineage = self.lineage_or_nothing()
        environment, changes = lineage.get("environment"), lineage.get("environment_changes")
        record = {"state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "updated_at": time.time(),
                  "host": socket.gethostname(),
                  "pid": os.getpid(), **({"job_id": job_id} if job_id else {}),
                  **({"environment": environment} if environment else {}),
                  **({"environment_changes": changes} if changes else {}), **fields}
        atomic_write_json(self.status_path, record)

    # -- side files: what the analysis needs to see the data as the run saw it -----------------
    def write_label_noise(self, record: dict) -> None:
        atomic_write_json(self.label_noise_path, record)

    def read_label_noise(self) -> dict | None:
        return _read_json(self.label_noise_path)

    def write_subset(self, record: dict) -> None:
        atomic_write_json(self.subset_path, record)

    def read_subset(self) -> dict | None:
        return _read_json(self.subset_path)

    def write_lineage(self, record: dict) -> None:
        atomic_write_json(self.lineage_path, record)

    def read_lineage(self) -> dict:
        return _read_json(self.lineage_path, {})

    # -- the execution environment a resume state was saved under ------------------------------
    def note_resume_environment(self, iteration: int, recorded: dict | None, current: dict) -> dict[str, list]:
        """Compare the execution environment a resume state was saved under (`recorded`; None for a start
        from the beginning) with the `current` one. When they differ,
        warn and note it in lineage.json, and so in every status.json from then on: the run goes on, but
        from `iteration` its bytes need not equal an uninterrupted run's. Notes of resumes at or after
        `iteration` are dropped first (the states they followed are being re-made). Returns the
        differences, {name: [recorded, current]}."""
        differences = environment_differences(recorded, current) if recorded else {}
        if differences:
            logger.warning("%s: resuming at iteration %d under another execution environment (%s): allowed, but "
                           "its weights will no longer equal an uninterrupted run's bit for bit; recorded in %s",
                           self.run_id, iteration, ", ".join(f"{name} {old} -> {new}"
                                                             for name, (old, new) in differences.items()),
                           self.lineage_path)
        lineage = self.read_lineage()
        notes = [note for note in lineage.get("environment_changes", []) if note["iteration"] < iteration]
        if differences:
            notes.append({"iteration": iteration, "changed": differences})
        updated = {**lineage, "environment": current}
        if notes or "environment_changes" in lineage:
            updated["environment_changes"] = notes
        if updated != lineage:
            self.write_lineage(updated)
        return differences

    def lineage_or_nothing(self) -> dict:
        """lineage.json, or {} when it is missing or damaged: a damaged lineage must not stop a status
        from being written or a run from starting (its resume states still say what they were made under)."""
        try:
            return self.read_lineage()
        except RunFolderError:
            return {}

    def recorded_threads(self) -> int | None:
        """The CPU threads the run trains with (the environment lineage.json holds since its last start),
        which every resume keeps unless threads= asks for another; None before its first start."""
        return self.lineage_or_nothing().get("environment", {}).get("threads")

    # -- checkpoints and manifest -------------------------------------------------------------
    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints / f"iteration_{iteration:08d}.pt"

    def read_manifest(self) -> dict:
        return _read_json(self.manifest_path, {})

    def checkpoint_entries(self) -> dict[int, dict]:
        """{iteration: manifest entry (sha256, bytes, epoch, stage, test metrics)} of every written checkpoint."""
        return {entry["iteration"]: entry for entry in self.read_manifest().get("files", {}).values()}

    def start_manifest(self, schedule: list[int], iterations_per_epoch: int) -> None:
        manifest = self.read_manifest()
        manifest.update({"format_version": FORMAT_VERSION, "schedule": schedule,
                         "iterations_per_epoch": iterations_per_epoch, "files": manifest.get("files", {})})
        atomic_write_json(self.manifest_path, manifest)

    def save_checkpoint(self, *, iteration: int, epoch: float, stage: int, settings: Settings,
                        input_shape: tuple[int, ...], num_classes: int, model_state: dict, metrics: dict) -> None:
        """A checkpoint that rebuilds its model alone (models.from_checkpoint), listed in the manifest."""
        path = self.checkpoint_path(iteration)
        payload = {"format_version": FORMAT_VERSION, "iteration": iteration, "epoch": epoch, "stage": stage,
                   "run_id": settings.run_id, "settings": settings.to_record(), "input_shape": list(input_shape),
                   "num_classes": num_classes, "model": model_state}
        digest = atomic_torch_save(payload, path)
        manifest = self.read_manifest()
        manifest["files"][path.name] = {"iteration": iteration, "epoch": epoch, "stage": stage, "sha256": digest,
                                        "bytes": path.stat().st_size, **metrics}
        atomic_write_json(self.manifest_path, manifest)

    def has_checkpoint(self, iteration: int) -> bool:
        return iteration in self.checkpoint_entries()

    def load_checkpoint(self, iteration: int, map_location="cpu") -> dict:
        """The checkpoint at `iteration`, verified against the manifest's sha256 first; CorruptFile
        (naming the file and the fix) when it is missing, altered, does not load or is of another format."""
        return self.verified_checkpoint(self.checkpoint_entries(), None, iteration, map_location)

    def verified_checkpoint(self, entries: dict[int, dict], own: Settings | None, iteration: int,
                            map_location="cpu") -> dict:
        """load_checkpoint against the listed `entries` and the run's settings `own` (None: read settings.json)."""
        entry = entries.get(iteration)
        path = self.checkpoint_path(iteration)
        if entry is None:
            raise RunFolderError(f"{self.path} has no checkpoint at iteration {iteration}; accepted: "
                                 f"{', '.join(map(str, sorted(entries))) or 'none written yet'}")
        fix = "launch the run's grid again to re-make it (training is deterministic)"
        if not path.exists() or sha256_file(path) != entry["sha256"]:
            raise CorruptFile(f"{path} is missing or corrupt (sha256 differs from the manifest); {fix}")
        try:
            checkpoint = torch_load(path, map_location)
        except Exception as error:  # a file that hashes right but does not load: written by another tool, say
            first_line = (str(error).strip().splitlines() or [""])[0][:200]  # torch's unpickling errors run long
            raise CorruptFile(f"{path} does not load ({type(error).__name__}: {first_line}); {fix}") from None
        found = checkpoint.get("format_version") if isinstance(checkpoint, dict) else None
        if found != FORMAT_VERSION:  # what rebuilds the model alone is format FORMAT_VERSION's (models.from_checkpoint)
            raise CorruptFile(f"{path} is not a checkpoint of format {FORMAT_VERSION} (its format: {found}); {fix}")
        self.check_checkpoint_settings(checkpoint, path, own)
        return checkpoint

    def check_checkpoint_settings(self, checkpoint, path: Path, own_settings: Settings | None = None) -> None:
        """CorruptFile naming the run and the first differing key when the settings a checkpoint holds are not
        the run's own (settings.json, checked against the run id): a model is rebuilt from the checkpoint's
        settings, and those could name a module file to import (`arch=module:FILE:CLASS`) that the run's
        settings never named. Only settings.json decides what code a run's model runs."""
        own = (own_settings or self.read_settings()).to_record()
        held = checkpoint.get("settings") if isinstance(checkpoint, dict) else None
        if held == own:
            return
        if not isinstance(held, dict):
            raise CorruptFile(f"{path} of run {self.run_id} holds no settings; launch the run's grid again to re-make it")
        key = next(name for name in sorted(set(held) | set(own)) if held.get(name, "(none)") != own.get(name, "(none)"))
        raise CorruptFile(f"{path}: its settings differ from run {self.run_id}'s settings.json (first differing key: "
                          f"{key}: {str(held.get(key, '(none)'))[:80]!r} in the checkpoint, "
                          f"{str(own.get(key, '(none)'))[:80]!r} in the run); refused, nothing is built from it: "
                          "restore the run's checkpoint or launch its grid again to re-make it")

    def damaged_checkpoints(self, *, thorough: bool = True) -> list[int]:
        """Iterations whose checkpoint is missing or differs from the manifest. `thorough=False` (the
        launcher's look at every finished run) hashes only the files whose size differs from the
        manifest's or that were modified after the status file (a finished run writes "done" last),
        so deciding a large grid stays quick."""
        damaged = []
        try:
            finished_ns = self.status_path.stat().st_mtime_ns
        except FileNotFoundError:
            finished_ns = -1
        for iteration, entry in self.checkpoint_entries().items():
            path = self.checkpoint_path(iteration)
            try:
                stat = path.stat()
            except FileNotFoundError:
                damaged.append(iteration)
                continue
            unchanged = stat.st_size == entry.get("bytes") and stat.st_mtime_ns <= finished_ns
            if (thorough or not unchanged) and sha256_file(path) != entry["sha256"]:
                damaged.append(iteration)
        for iteration in sorted(damaged):
            logger.error("checkpoint %s is missing or corrupt (sha256 mismatch)", self.checkpoint_path(iteration))
        return sorted(damaged)

    # -- resumable state ----------------------------------------------------------------------
    def resume_state_path(self, iteration: int) -> Path:
        return self.resume / f"state_{iteration:08d}.pt"

    def resume_state_sha256(self, iteration: int) -> str:
        return self.resume_state_path(iteration).with_suffix(".sha256").read_text().strip()

    def save_resume_state(self, state: dict) -> None:
        """Write the state, then its sha256 beside it: a state without a matching hash is never used."""
        path = self.resume_state_path(state["iteration"])
        digest = atomic_torch_save(state, path)
        atomic_write_text(path.with_suffix(".sha256"), digest + "\n")
        for old in sorted(self.resume.glob("state_*.pt"))[:-RESUME_STATES_KEPT]:
            old.with_suffix(".sha256").unlink(missing_ok=True)
            old.unlink(missing_ok=True)

    def resume_states(self, *, at_most: int | None = None):
        """The resume states whose sha256 matches and that load, newest first (and iteration <=
        at_most); corrupt, half-written or unloadable ones are reported by name and skipped, so the
        caller falls back to the previous good state."""
        for path in sorted(self.resume.glob("state_*.pt"), reverse=True):
            try:
                if sha256_file(path) != path.with_suffix(".sha256").read_text().strip():
                    raise CorruptFile("sha256 mismatch")
                state = torch_load(path)
                if not isinstance(state, dict) or not isinstance(state.get("iteration"), int):
                    raise CorruptFile("not a resume state (no iteration)")
            except Exception as error:  # any file we cannot use: the older state is the way on
                logger.warning("resume state %s is unusable (%s: %s); trying an older one", path,
                               type(error).__name__, error)
                continue
            if at_most is None or state["iteration"] <= at_most:
                yield state

    def load_resume_state(self, *, at_most: int | None = None) -> dict | None:
        """The newest usable resume state (see resume_states), or None."""
        return next(self.resume_states(at_most=at_most), None)

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


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run as one call reads it, once (RunFolder.read_record, ExperimentFolder.read_runs): handed down as a plain
    value, so the measuring, the table's parts and the curves of one call see one state of the run."""

    folder: RunFolder
    settings: Settings | None  # None: settings.json is unusable (`problem` says why); its rows are left out
    checkpoints: dict[int, dict] | None  # {iteration: manifest entry}; None: no manifest (yet), or an unusable one
    lineage: dict  # lineage.json: a child's parent and start, the environment
    stamps: tuple  # file_stamp of settings.json and manifest.json, taken before they were read
    curves: CurvesFolder  # where its live curves go
    status: dict  # status.json as read ({"state": "new"} before its first start): what the report says of it
    problem: str = ""  # why the run cannot be measured, in one line; '' when it can
    kind: str = ""  # conf.plasticity.run_kind of its settings ('' when they are unusable)
    ancestor_ids: tuple[str, ...] = ()  # the run it starts from, that run's, ... down to the first stage
    transfer_child: bool = False  # conf.plasticity.transfers: measured at its ends only by default

    @property
    def run_id(self) -> str:
        return self.folder.run_id

    @property
    def parent_id(self) -> str:
        """The run it starts from (a stage or child), else ''."""
        return self.ancestor_ids[0] if self.ancestor_ids else ""

    @property
    def entries(self) -> dict[int, dict]:
        """The listed checkpoints, {} when there is no manifest."""
        return self.checkpoints or {}

    def load_checkpoint(self, iteration: int, map_location="cpu") -> dict:
        """The checkpoint, verified against the entry and settings read here (RunFolder.verified_checkpoint)."""
        return self.folder.verified_checkpoint(self.entries, self.settings, iteration, map_location)

    def data_records(self) -> tuple[dict | None, dict | None]:
        """(label_noise.json, stage1_subset.json): the labels the run changed, the examples its stage trained on
        (read only by a call that measures: they are the large files of a run folder)."""
        return self.folder.read_label_noise(), self.folder.read_subset()
