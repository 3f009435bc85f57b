"""python analysis.py import DIR arch=... dataset=... [out_dir=...] [experiment=a preset] — checkpoints trained elsewhere become a run.

DIR holds one state dict per checkpoint (`*.pt`, `*.pth`: a state dict, or a dict holding one under
`model` or `state_dict`), the iteration read from the file name's last number (`step_1024.pt`,
`ckpt-e3-it1500.pth`) or from `index.json` ({"file name": iteration}). The run settings typed say which
model they are (arch, depth, width, ...: `train.py --help`) and which data they saw (dataset, ...). The
files become `<out_dir>/<experiment>/runs/<run_id>/` with settings, a manifest with sha256s and
self-describing checkpoints, state done: analysis.py, the figures and the report read it as any run.
The run id also hashes the imported files (`imported_from`), so the same settings trained here are
another run.

Only regular files (or symlinks to one) are read, each opened without waiting and checked on the open
file (a FIFO or a link to /dev/zero would be read forever), and no more than MAX_CHECKPOINT_BYTES (64 GiB)
of one: an entry `*.pt`/`*.pth` that is a folder, FIFO, device, socket or broken link, or whose name holds
no number, is ignored and named on stderr (one line each) while the rest is imported (exit 0); a folder
with nothing else is refused. index.json is the whole truth when present: read with a cap of 1 MiB, each
entry must be a plain file name beside it (no folder part, not absolute, not `..`) of a regular file,
mapped to a whole number (JSON's `true` and `3.5` are none) from 0 to MAX_ITERATION (99,999,999: the
lab's file names hold eight digits and sort by name; the same bound for numbers read from file names),
one file per iteration.

Everything is checked before anything is written (one line, exit 2): the above, a folder with no
checkpoints, an arch that cannot be built, files whose state dicts differ in keys or shapes (mixed
architectures), or state dicts that do not fit the model (the first key that does not). The run is then
built under a hidden name in runs/ and renamed into place (ExperimentFolder.staged_run): it appears
whole or not at all, a kill or a full disk (one line, exit 1) leaves no run that the analysis would
measure, and the next import removes the leftover (logged). Imported again (the same settings and files),
the run is there already: said, exit 0, nothing written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import BinaryIO

import torch

import data
import models
from checkpointing import ExperimentFolder, RunFolder, RunFolderError
from conf import SettingsError, parse_arguments
from utils import one_line

SUFFIXES = (".pt", ".pth")
INDEX = "index.json"
MAX_CHECKPOINT_BYTES = 64 << 30  # 64 GiB: a generous bound on any file read (16 G float32 weights)
MAX_INDEX_BYTES = 1 << 20  # 1 MiB: {"file name": iteration} for tens of thousands of files
MAX_ITERATION = 10 ** 8 - 1  # the lab's file names hold the iteration in eight digits and sort by name
ACCEPTED_ITERATIONS = f"accepted: a whole number from 0 to {MAX_ITERATION} (the training iteration)"
NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
ONLY_REGULAR = "only regular files or symlinks to one are read, as a FIFO or a device would be read forever"
CHECKPOINT_FIX = "import the model's state dict alone (no optimizer state)"


def import_command(arguments: list[str]) -> int:
    """Check everything, then write the run whole (or say it is there already); 0, SettingsError otherwise."""
    if not arguments or "=" in arguments[0]:
        raise SettingsError("import needs a folder of state dicts first: python analysis.py import DIR arch=... dataset=...")
    folder = Path(arguments[0])
    plan = parse_arguments(arguments[1:], analysis=True)
    if len(plan.grid) != 1:
        raise SettingsError(f"import makes one run; the settings typed sweep {len(plan.grid)} (give one value per key)")
    files, ignored = checkpoint_files(folder)
    settings = dataclasses.replace(plan.grid[0], imported_from=digest_of(files))
    dataset = data.load_dataset(settings, data_root=Path(plan.execution.data_root), download=plan.execution.download)
    shape, classes = tuple(dataset.train_images.shape[1:]), dataset.num_classes
    model = build_model(settings, shape, classes)
    reference = {key: tuple(tensor.shape) for key, tensor in state_dict_of(next(iter(files.values()))).items()}
    states = {iteration: check_state(path, model, settings.arch, reference) for iteration, path in files.items()}
    experiment = ExperimentFolder.of(plan.execution.out_dir, plan.experiment)
    written = write_whole_run(experiment, settings, states, shape, classes,
                              len(dataset.train_labels) // settings.batch_size)
    for name, why in ignored.items():  # after the checks: a refused import says only what refused it
        print(f"import: ignored {folder / name}: {why}", file=sys.stderr)
    done = (f"imported {len(files)} checkpoint(s) (iterations {', '.join(map(str, files))}) from {folder} as run"
            if written else f"{folder} (the same settings and files) is already imported, nothing written: run")
    print(f"{done} {settings.run_id} in {experiment.run(settings.run_id).path}; measure it with python analysis.py "
          f"experiment={plan.experiment} out_dir={plan.execution.out_dir}")
    return 0


def build_model(settings, shape: tuple, classes: int) -> torch.nn.Module:
    """The settings' model; SettingsError (one line, exit 2) for an arch that cannot be built (unknown, or
    not for these images)."""
    try:
        return models.build(settings, input_shape=shape, num_classes=classes)
    except ValueError as error:  # UnknownArchitecture and the families' refusals are ValueErrors
        raise SettingsError(f"import: {one_line(error)}") from None


def checkpoint_files(folder: Path) -> tuple[dict[int, Path], dict[str, str]]:
    """({iteration: file}, sorted; {name: why} of the `*.pt`/`*.pth` entries ignored); SettingsError when
    the folder is missing or holds no usable checkpoint (naming what was ignored)."""
    if not folder.is_dir():
        raise SettingsError(f"import: {folder} is not a folder; accepted: a folder of state dicts (*.pt, *.pth)")
    index = folder / INDEX
    if os.path.lexists(index):  # a broken link named index.json is an index too: refused, not passed over
        files, ignored = listed_files(folder, index), {}
    else:
        files, ignored = named_files(folder)
    if not files:
        listing = "; ".join(f"{name} ({why})" for name, why in ignored.items())
        raise SettingsError(f"import: {folder} holds no checkpoint (*.pt or *.pth with the iteration in its name, "
                            f"or an {INDEX}){f'; ignored: {listing}' if ignored else ''}")
    return dict(sorted(files.items())), ignored


def named_files(folder: Path) -> tuple[dict[int, Path], dict[str, str]]:
    """The checkpoints by the last number in their names; entries that are not regular files (a FIFO or a
    device would be read forever) or hold no number are ignored, with why."""
    files, ignored = {}, {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in SUFFIXES:
            continue
        numbers = re.findall(r"\d+", path.stem)
        kind = not_a_regular_file(path)
        why = f"{kind}, not a regular file: {ONLY_REGULAR}" if kind else None if numbers else (
            f"no number in its name to read the iteration from (list it in an {INDEX})")
        if why:
            ignored[path.name] = why
            continue
        iteration = checked_iteration(int(numbers[-1]), f"{path.name} reads as iteration {numbers[-1]} from its name",
                                      fix=f"rename it, or map it to its iteration in an {INDEX}")
        if iteration in files:
            raise SettingsError(f"import: {files[iteration].name} and {path.name} both read as iteration {iteration}; "
                                f"name the iterations in {INDEX}")
        files[iteration] = path
    return files, ignored


def listed_files(folder: Path, index: Path) -> dict[int, Path]:
    """{iteration: file} as index.json lists them, each entry checked: a plain file name in the folder
    (never a path leading out of it), a regular file, an iteration in range, one file per iteration."""
    files = {}
    for name, value in read_index(index).items():
        if name in ("", ".", "..") or "\0" in name or any(separator and separator in name
                                                          for separator in (os.sep, os.altsep)):
            raise SettingsError(f"import: {index}: {name} is not a plain file name in {folder}; accepted: the name "
                                f"of a file beside {INDEX} (e.g. step_1024.pt)")
        iteration = checked_iteration(value, f"{index} maps {name} to {json.dumps(value)}",
                                      fix=f"map each file to its iteration in {INDEX}")
        if iteration in files:
            raise SettingsError(f"import: {index} maps {files[iteration].name} and {name} both to iteration "
                                f"{iteration}; accepted: one file per iteration")
        why = not_a_regular_file(folder / name)
        if why:
            raise SettingsError(f"import: {index} lists {name}, which is not in {folder}" if why == "not there" else
                                f"import: {index} lists {name}, which is {why}; {ONLY_REGULAR}")
        files[iteration] = folder / name
    return files


def read_index(index: Path) -> dict:
    """index.json's mapping, read with a small cap (it lists names and numbers); SettingsError otherwise."""
    with open_regular(index, MAX_INDEX_BYTES, fix=f"an {INDEX} holds {{\"file name\": iteration}} only") as handle:
        raw = handle.read(MAX_INDEX_BYTES + 1)
    try:
        if len(raw) > MAX_INDEX_BYTES:
            raise ValueError(f"it grew past {MAX_INDEX_BYTES} bytes while being read")
        listing = json.loads(raw)
        if not isinstance(listing, dict):
            raise TypeError(f"a JSON {type(listing).__name__}")
    except (ValueError, TypeError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SettingsError(f"import: {index} is not {{\"file\": iteration}} ({one_line(error)})") from None
    return listing


def checked_iteration(value, what: str, fix: str) -> int:
    """`value` when it is a whole number from 0 to MAX_ITERATION (not a bool, float or text: JSON's `true`
    and `3.5` are no iterations); SettingsError saying `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ITERATION:
        raise SettingsError(f"import: {what}; {ACCEPTED_ITERATIONS}; {fix}")
    return value


def not_a_regular_file(path: Path) -> str | None:
    """None for a regular file or a symlink to one; else what it is, for the line that names it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken symlink" if path.is_symlink() else "not there"
    except OSError as error:  # a symlink loop, a name too long
        return f"unreadable ({error.strerror})"
    return None if stat.S_ISREG(mode) else describe_mode(mode)


def describe_mode(mode: int) -> str:
    return next((what for is_kind, what in NOT_REGULAR if is_kind(mode)), "not a regular file")


def open_regular(path: Path, limit: int, fix: str) -> BinaryIO:
    """`path` opened for reading when it is a regular file (or a symlink to one) of at most `limit` bytes;
    SettingsError naming it otherwise. Opened without waiting (O_NONBLOCK: opening a FIFO waits for a
    writer) and checked on the open file itself, so what is read is what was checked."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise SettingsError(f"import: {path} is not there (a broken symlink?); {ONLY_REGULAR}") from None
    status = os.fstat(descriptor)
    problem = (f"is {describe_mode(status.st_mode)}; {ONLY_REGULAR}" if not stat.S_ISREG(status.st_mode) else
               f"is {status.st_size} bytes, over the {limit} bytes an import reads of one file; {fix}"
               if status.st_size > limit else None)
    if problem:
        os.close(descriptor)
        raise SettingsError(f"import: {path} {problem}")
    return os.fdopen(descriptor, "rb")


def digest_of(files: dict[int, Path]) -> str:
    """What the imported run is, besides its settings: its files' iterations and bytes."""
    listing = [[iteration, bounded_sha256(path)] for iteration, path in files.items()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def bounded_sha256(path: Path) -> str:
    """The sha256 of a checkpoint file, reading no more than MAX_CHECKPOINT_BYTES (and a chunk)."""
    digest, read = hashlib.sha256(), 0
    with open_regular(path, MAX_CHECKPOINT_BYTES, fix=CHECKPOINT_FIX) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            read += len(chunk)
            if read > MAX_CHECKPOINT_BYTES:  # it grew while being read: still being written elsewhere
                raise SettingsError(f"import: {path} grew past {MAX_CHECKPOINT_BYTES} bytes while being read; "
                                    "import it once it is written")
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_of(path: Path) -> dict:
    with open_regular(path, MAX_CHECKPOINT_BYTES, fix=CHECKPOINT_FIX) as handle:  # the file checked is the one read
        try:
            loaded = torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as error:  # not a torch file, or one holding more than tensors and containers
            raise SettingsError(f"import: {path} is not a state dict torch loads safely "
                                f"({type(error).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise SettingsError(f"import: {path} holds no state dict (a dict of tensors, or one under model/state_dict)")
    return loaded


def check_state(path: Path, model: torch.nn.Module, arch: str, reference: dict[str, tuple]) -> dict:
    """The state dict of `path`, loaded into `model` under the model's own names; SettingsError naming the
    file and its first key whose name or shape differs from the first file's (`reference`: mixed
    architectures) or that does not fit the model."""
    state = state_dict_of(path)
    shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
    differing = next((key for key in sorted(set(shapes) | set(reference)) if shapes.get(key) != reference.get(key)), None)
    if differing is not None:
        raise SettingsError(f"import: {path.name} is of another architecture than the first file (first differing "
                            f"key: {differing}); accepted: one model's checkpoints per import")
    target = getattr(model, "module", model)  # a HookedModel's weights are its module's
    expected = {key: tuple(tensor.shape) for key, tensor in target.state_dict().items()}
    problem = next((f"lacks {key}" for key in expected if key not in shapes), None) or next(
        (f"has {key}, which the model has not" for key in shapes if key not in expected), None) or next(
        (f"has {key} of shape {shapes[key]}, the model's is {expected[key]}" for key in shapes
         if shapes[key] != expected[key]), None)
    if problem:
        raise SettingsError(f"import: {path.name} does not fit the arch={arch} model of these settings: it {problem}")
    target.load_state_dict(state)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def write_whole_run(experiment: ExperimentFolder, settings, states: dict[int, dict], shape, classes: int,
                    per_epoch: int) -> bool:
    """Build the run under a hidden staging name in runs/ and rename it into place: it appears whole or not
    at all (a kill or a full disk leaves a staging folder, which the next import removes). False, writing
    nothing, when the run is there already: the same settings and the same files were imported before."""
    final = experiment.run(settings.run_id)
    if already_imported(final, list(states)):
        return False
    with experiment.staging_lock():
        if already_imported(final, list(states)):  # another import of the same files finished meanwhile
            return False
        with experiment.staged_run(settings.run_id) as staging:
            write_run(staging, settings, states, shape, classes, per_epoch)
    return True


def already_imported(run: RunFolder, iterations: list[int]) -> bool:
    """Whether `run` is there, whole (done, every checkpoint in its manifest); RunFolderError when a folder of
    its name is there but not whole (written in place by an import of an older version that was stopped)."""
    if not run.path.exists():
        return False
    state, written = run.read_status().get("state"), sorted(run.checkpoint_entries())
    if state == "done" and written == sorted(iterations):
        return True
    raise RunFolderError(f"{run.path} is there but is not a whole import (state {state}, checkpoints at "
                         f"{written or 'none'}); delete that folder and run the same command")


def write_run(run: RunFolder, settings, states: dict[int, dict], shape, classes: int, per_epoch: int) -> None:
    """The settings, the manifest, one self-describing checkpoint per state and the status done, in `run`."""
    run.prepare(settings)
    iterations = list(states)
    run.start_manifest(iterations, max(per_epoch, 1))
    for iteration, state in states.items():
        run.save_checkpoint(iteration=iteration, epoch=iteration / max(per_epoch, 1), stage=1, settings=settings,
                            input_shape=shape, num_classes=classes, model_state=state, metrics={})
    run.write_status("done", iteration=iterations[-1], total_iterations=iterations[-1],
                     reason=f"imported ({len(iterations)} checkpoints)")
