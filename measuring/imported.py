"""python analysis.py import DIR arch=... dataset=... [lr=... epochs=... batch_size=... normalization=...] [out_dir=...] [experiment=NAME|FILE.py] — checkpoints trained elsewhere become a run.

DIR holds one file per checkpoint (`*.pt`, `*.pth`, `*.ckpt`), in the layouts people save them in (the
import layouts): a bare state dict; a dict holding one under `model` or `state_dict` (`{model, optimizer}`
as a hand-written loop saves it, PyTorch Lightning's `.ckpt`); its keys as the model names them or all
under one prefix that a wrapper added (`module.`: DistributedDataParallel/DataParallel; `_orig_mod.`:
torch.compile; a LightningModule's attribute, `model.`; nested, `module._orig_mod.`). A prefix shared by
every key is stripped when that makes the keys the model's, said in one line naming it; never otherwise.

The iteration is read from the file name's last number (`step_1024.pt`, `ckpt-e3-it1500.pth`,
Lightning's `epoch=2-step=300.ckpt`; a `.ckpt`'s version suffix `-v1` is no number), or from
`index.json` ({"file name": iteration}); a file whose name holds no number (`last.pt`, `best.pt`,
`last.ckpt`) takes the step it stores (`global_step`: Lightning's; `iteration`: the lab's own; `step`).
The name comes first, as it always did: a file the name and the index cannot place is the only one whose
contents place it. The run settings typed say which model they are (arch, depth, width, ...:
`train.py --help`) and which data they saw (dataset, ...; `normalization=` the statistics its inputs were
normalised by when they were not the dataset's own, e.g. ImageNet's: the analysis feeds the model those).

An import records facts, not the lab's defaults: each training setting (conf TRAINING_FACTS: lr, epochs,
batch_size, optimizer, momentum, weight_decay, the schedule, loss, augment, label_noise) is what was typed, else
null — unknown, so shown `unknown` in every label and never equal to a trained run's value. With batch_size
unknown the iterations per epoch are too: every checkpoint's epoch is NaN (its iteration is known). A model size
its arch does not take (depth, width, ... of a torchvision builder) is null, and one typed is said to be
ignored; label_noise other than 0 is refused (which labels were replaced is not known here: the train split is
measured with clean labels). The files become
`<out_dir>/<experiment>/runs/<run_id>/` with settings, a manifest with sha256s and self-describing
checkpoints, state done: analysis.py, the figures and the report read it as any run. The run id also
hashes the imported files (`imported_from`), so the same settings trained here are another run.

Files passed over are listed at the end, one line each with why. Ignored (exit 0: nothing to fix, the
same command imports the same run): an entry that is no regular file, a file torch loads but that holds
no state dict (an optimizer's state, a dict of settings), a file with no iteration in its name nor a
stored step, a file whose stored step is another file's iteration already (Lightning's `last.ckpt`
beside `epoch=2-step=300.ckpt`). Skipped (exit 1, the rest imported): a state dict whose keys are not
the model's even after stripping (another model's weights), while other files fit.

Only regular files (or symlinks to one) are read, each opened without waiting and checked on the open
file (a FIFO or a link to /dev/zero would be read forever), and no more than MAX_CHECKPOINT_BYTES (64 GiB)
of one; a folder with nothing else is refused. index.json is the whole truth when present: read with a
cap of 1 MiB, each entry must be a plain file name beside it (no folder part, not absolute, not `..`) of a
regular file, mapped to a whole number (JSON's `true` and `3.5` are none) from 0 to MAX_ITERATION
(99,999,999: the lab's file names hold eight digits and sort by name; the same bound for numbers read
from file names and stored steps), one file per iteration.

Everything is checked before anything is written (one line, exit 2): the above, a folder with no
checkpoint, an arch that cannot be built, a file torch cannot load safely (corrupt, or holding objects
beyond tensors: its error and the fix), two file names giving one iteration, files whose state dicts
differ in shapes (mixed architectures), or no file that fits the model (a few of its unexpected and
missing keys, or the first shape that differs, and the fix). The run is then built under a hidden name
in runs/ and renamed into place (ExperimentFolder.staged_run): it appears whole or not at all, a kill or
a full disk (one line, exit 1) leaves no run that the analysis would measure, and the next import removes
the leftover (logged). Imported again (the same settings and files), the run is there already: said,
exit 0 (1 if a file is skipped), nothing written. The common execution options are taken as by
analysis.py: threads=, log_level=, data_root=, download= (the dataset's shape and classes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import sys
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import torch

import data
import models
from conf import SettingsError, parse_arguments
from conf.global_settings import MODEL_SIZES, TRAINING_FACTS
from folders import ExperimentFolder, RunFolder, RunFolderError
from utils import one_line, set_cpu_threads, setup_logging

SUFFIXES = (".pt", ".pth", ".ckpt")
INDEX = "index.json"
MAX_CHECKPOINT_BYTES = 64 << 30  # 64 GiB: a generous bound on any file read (16 G float32 weights)
MAX_INDEX_BYTES = 1 << 20  # 1 MiB: {"file name": iteration} for tens of thousands of files
MAX_ITERATION = 10 ** 8 - 1  # the lab's file names hold the iteration in eight digits and sort by name
ACCEPTED_ITERATIONS = f"accepted: a whole number from 0 to {MAX_ITERATION} (the training iteration)"
NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
ONLY_REGULAR = "only regular files or symlinks to one are read, as a FIFO or a device would be read forever"
CHECKPOINT_FIX = "import the model's state dict alone (no optimizer state)"
# The step a checkpoint stores, for a file whose name holds none: Lightning's, the lab's own, a hand-written loop's.
STEP_KEYS = ("global_step", "iteration", "step")
# Who adds a prefix to every key of the state dict they save (the attribute that holds the model).
WRAPPERS = {"module": "DistributedDataParallel/DataParallel", "_orig_mod": "torch.compile"}
LIGHTNING_VERSION = re.compile(r"-v\d+$")  # ModelCheckpoint names a second file of one name NAME-v1.ckpt
SHOWN_KEYS = 3  # keys named in a mismatch: enough to see the pattern, short enough for one line


@dataclasses.dataclass
class Checkpoint:
    """One file read: its state dict under the model's names (`prefix` stripped for that, '' if none), its
    iteration from its name or index.json (None: none there), and the step it stores (`step_key`)."""

    path: Path
    iteration: int | None
    state: dict
    prefix: str = ""
    step_key: str = ""
    step: int | None = None


def import_command(arguments: list[str]) -> int:
    """Check everything, then write the run whole (or say it is there already) and list the files passed
    over; 0, or 1 when a file was skipped; SettingsError (exit 2) for bad input, nothing written."""
    if not arguments or "=" in arguments[0]:
        raise SettingsError("import needs a folder of state dicts first: python analysis.py import DIR arch=... dataset=...")
    folder = Path(arguments[0])
    plan = parse_arguments(arguments[1:], analysis=True)
    setup_logging(plan.execution.log_level)
    set_cpu_threads(plan.execution.threads)
    if len(plan.grid) != 1:
        raise SettingsError(f"import makes one run; the settings typed sweep {len(plan.grid)} (give one value per key)")
    typed = {key for key, _ in plan.overrides}
    check_label_noise(plan.grid[0], typed)
    experiment = ExperimentFolder.of_plan(plan)  # another study's folder (a preset file of the same stem): refused
    candidates, ignored = checkpoint_files(folder)
    dataset = data.load_dataset(plan.grid[0], data_root=Path(plan.execution.data_root), download=plan.execution.download)
    shape, classes = tuple(dataset.train_images.shape[1:]), dataset.num_classes
    model = build_model(plan.grid[0], shape, classes)
    checkpoints, skipped = usable_checkpoints(folder, candidates, model, plan.grid[0].arch, ignored)
    settings = imported_settings(plan.grid[0], typed, digest_of(
        {iteration: checkpoint.path for iteration, checkpoint in checkpoints.items()}))
    states = {iteration: model_state(model, checkpoint) for iteration, checkpoint in checkpoints.items()}
    experiment.record_preset(plan.preset_source)
    per_epoch = None if settings.batch_size is None else len(dataset.train_labels) // settings.batch_size
    written = write_whole_run(experiment, settings, states, shape, classes, per_epoch)
    for line in (prefix_line(list(checkpoints.values())), ignored_sizes_line(settings, typed), unknown_line(settings)):
        if line:
            print(line)
    done = (f"imported {len(states)} checkpoint(s) (iterations {', '.join(map(str, states))}) from {folder} as run"
            if written else f"{folder} (the same settings and files) is already imported, nothing written: run")
    print(f"{done} {settings.run_id} in {experiment.run(settings.run_id).path}; measure it with python analysis.py "
          f"experiment={plan.experiment_argument()} out_dir={plan.execution.out_dir}")
    return report_passed_over(folder, ignored, skipped)


def check_label_noise(settings, typed: set[str]) -> None:
    """SettingsError for a label noise typed other than 0: which training labels it replaced is not known here,
    so the train split would be measured with clean labels under a noisy run's name."""
    if "label_noise" in typed and settings.label_noise:
        raise SettingsError(f"import: label_noise={settings.label_noise} cannot be honoured: which training labels "
                            "were replaced is not known here, so its train split would be measured with clean "
                            "labels; accepted: label_noise=0, or leave it out (recorded unknown)")


def imported_settings(settings, typed: set[str], imported_from: str):
    """The run's settings: `imported_from` filled in, and every training fact (TRAINING_FACTS) not typed on the
    command line null (unknown), never the lab's default."""
    unknown = {name: None for name in TRAINING_FACTS if name not in typed}
    return dataclasses.replace(settings, imported_from=imported_from, **unknown)


def ignored_sizes_line(settings, typed: set[str]) -> str:
    """One line naming the model sizes typed that the arch does not take (held null: not the model's), or ''."""
    ignored = [name for name in MODEL_SIZES if name in typed and getattr(settings, name) is None]
    return (f"import: {', '.join(ignored)} ignored: arch={settings.arch} does not take "
            f"{'it' if len(ignored) == 1 else 'them'} (recorded as not applying)") if ignored else ""


def unknown_line(settings) -> str:
    """One line naming the training settings recorded unknown (not typed), or ''."""
    unknown = settings.unknown()
    return (f"import: recorded unknown (not typed): {', '.join(unknown)}; type the ones you know (lr=0.1 epochs=30 "
            "batch_size=128 ...) to record them") if unknown else ""


def report_passed_over(folder: Path, ignored: dict[str, str], skipped: dict[str, str]) -> int:
    """Every file passed over, at the end where it is seen, one line each with why (after the checks: a
    refused import says only what refused it); 1 when a file was skipped, 0 when only ignored."""
    passed_over = sorted([(name, "ignored", why) for name, why in ignored.items()]
                         + [(name, "skipped", why) for name, why in skipped.items()])
    for name, verb, why in passed_over:
        print(f"import: {verb} {folder / name}: {why}", file=sys.stderr)
    return 1 if skipped else 0


def build_model(settings, shape: tuple, classes: int) -> torch.nn.Module:
    """The settings' model; SettingsError (one line, exit 2) for an arch that cannot be built (unknown, or
    not for these images)."""
    try:
        return models.build(settings, input_shape=shape, num_classes=classes)
    except ValueError as error:  # UnknownArchitecture and the families' refusals are ValueErrors
        raise SettingsError(f"import: {one_line(error)}") from None


def checkpoint_files(folder: Path) -> tuple[dict[Path, int | None], dict[str, str]]:
    """({file: its iteration from index.json or its name, None when its name holds no number}, sorted by
    name; {name: why} of the entries ignored); SettingsError when the folder is missing or holds no file
    to read (naming what was ignored)."""
    if not folder.is_dir():
        raise SettingsError(f"import: {folder} is not a folder; accepted: a folder of state dicts (*.pt, *.pth, *.ckpt)")
    index = folder / INDEX
    if os.path.lexists(index):  # a broken link named index.json is an index too: refused, not passed over
        candidates, ignored = {path: iteration for iteration, path in listed_files(folder, index).items()}, {}
    else:
        candidates, ignored = named_files(folder)
    if not candidates:
        raise no_checkpoint(folder, ignored)
    return dict(sorted(candidates.items())), ignored


def no_checkpoint(folder: Path, ignored: dict[str, str]) -> SettingsError:
    listing = "; ".join(f"{name} ({why})" for name, why in sorted(ignored.items()))
    return SettingsError(f"import: {folder} holds no checkpoint (*.pt, *.pth or *.ckpt holding a state dict, with "
                         f"the iteration in its name, a stored global_step, or an {INDEX})"
                         f"{f'; ignored: {listing}' if ignored else ''}")


def named_files(folder: Path) -> tuple[dict[Path, int | None], dict[str, str]]:
    """The checkpoint files by the last number in their names (None: no number, the file may store its
    step); entries that are not regular files (a FIFO or a device would be read forever) are ignored, with why."""
    files, ignored = {}, {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in SUFFIXES:
            continue
        what_it_is = not_a_regular_file(path)
        if what_it_is:
            ignored[path.name] = f"{what_it_is}, not a regular file: {ONLY_REGULAR}"
            continue
        stem = LIGHTNING_VERSION.sub("", path.stem) if path.suffix == ".ckpt" else path.stem
        numbers = re.findall(r"\d+", stem)
        files[path] = checked_iteration(
            int(numbers[-1]), f"{path.name} reads as iteration {numbers[-1]} from its name",
            fix=f"rename it, or map it to its iteration in an {INDEX}") if numbers else None
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
    return next((what for matches, what in NOT_REGULAR if matches(mode)), "not a regular file")


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


def usable_checkpoints(folder: Path, candidates: dict[Path, int | None], model: torch.nn.Module, arch: str,
                       ignored: dict[str, str]) -> tuple[dict[int, Checkpoint], dict[str, str]]:
    """({iteration: checkpoint}, sorted; {name: why} of the files skipped as not the model's); what holds
    no state dict, no iteration or another file's iteration is added to `ignored`. SettingsError when no
    file fits the model (the first one's keys and the fix), when the files that do differ in shapes or
    do not fit the model's, or when two names give one iteration."""
    expected = model_shapes(model)
    fitting, misfits = [], {}
    for path, iteration in candidates.items():
        checkpoint = read_checkpoint(path, iteration, set(expected))
        if isinstance(checkpoint, str):
            ignored[path.name] = checkpoint
        elif problem := keys_problem(checkpoint.state, expected):
            misfits[path.name] = f"it does not fit the arch={arch} model of these settings: {problem}"
        else:
            fitting.append(checkpoint)
    if not fitting and misfits:  # not one file of this model: the settings typed are wrong, or the folder
        name, why = next(iter(misfits.items()))
        raise SettingsError(f"import: {name} {why.removeprefix('it ')}")
    checkpoints = assign_iterations(fitting, ignored)
    if not checkpoints:
        raise no_checkpoint(folder, ignored)
    check_shapes(checkpoints, expected, arch)
    return checkpoints, misfits


def model_shapes(model: torch.nn.Module) -> dict[str, tuple]:
    """{key: shape} of the state dict the model loads (a HookedModel's weights are its module's)."""
    return {key: tuple(tensor.shape) for key, tensor in getattr(model, "module", model).state_dict().items()}


def read_checkpoint(path: Path, iteration: int | None, expected: set[str]) -> Checkpoint | str:
    """The file's state dict (a wrapper's prefix stripped when that makes its keys `expected`) and stored
    step; why it is no checkpoint when torch loads it but it holds no state dict; SettingsError when torch
    cannot load it safely."""
    loaded = load_safely(path)
    outer = loaded if isinstance(loaded, dict) else {}
    step_key = next((key for key in STEP_KEYS if type(outer.get(key)) is int), "")  # not a bool, not a tensor
    for key in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return ("not a checkpoint: torch loads it, but it holds no state dict (a dict of tensors, or one under model "
                "or state_dict): an optimizer's state or settings?")
    state, prefix = without_wrapper_prefix(loaded, expected)
    return Checkpoint(path, iteration, state, prefix, step_key, outer[step_key] if step_key else None)


def load_safely(path: Path):
    """torch.load of the file with weights_only (no code from the file runs); SettingsError with torch's
    reason and the fix when it cannot (corrupt, or a pickled module, or objects beyond tensors and containers)."""
    with open_regular(path, MAX_CHECKPOINT_BYTES, fix=CHECKPOINT_FIX) as handle:  # the file checked is the one read
        try:
            return torch.load(handle, map_location="cpu", weights_only=True)
        except Exception as error:  # not a torch file, or one holding more than tensors and containers
            raise SettingsError(f"import: {path} is not a state dict torch loads safely ({type(error).__name__}: "
                                f"{torch_reason(error)}); save the weights alone: torch.save(model.state_dict(), path) where it "
                                "was trained, or from a file you trust, loaded with torch.load(path, "
                                "weights_only=False)") from None


def torch_reason(error: Exception) -> str:
    """torch.load's reason in a few words: of a weights_only refusal, the object it met (`Unsupported global:
    GLOBAL models.convnet.ConvNet ...`), not its paragraphs of advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", one_line(error))  # torch emboldens a warning with terminal codes
    found = re.search(r"WeightsUnpickler error: (.+?\.)(?: |$)", text)
    return found.group(1) if found else text[:200]


def without_wrapper_prefix(state: dict, expected: set[str]) -> tuple[dict, str]:
    """(the state dict under the model's names, the prefix stripped or ''): a prefix every key shares
    (`module.`, `_orig_mod.`, `model.`, nested) is stripped only when that makes the keys the model's."""
    if set(state) == expected:
        return state, ""
    prefix = ""
    for segment in shared_segments(list(state)):
        prefix += f"{segment}."
        stripped = {key[len(prefix):]: tensor for key, tensor in state.items()}
        if set(stripped) == expected:
            return stripped, prefix
    return state, ""


def shared_segments(keys: list[str]) -> list[str]:
    """The dotted segments every key starts with, each key keeping one of its own after them:
    ['module.fc.weight', 'module.fc.bias'] -> ['module', 'fc']."""
    parts = [key.split(".") for key in keys]
    shared = []
    for position in range(min(len(split) for split in parts) - 1):
        segment = parts[0][position]
        if any(split[position] != segment for split in parts):
            break
        shared.append(segment)
    return shared


def keys_problem(state: dict, expected: dict[str, tuple]) -> str | None:
    """None when the state dict's keys are the model's; else a few of the keys unexpected and missing, and
    the fix (the part to save alone, when the keys under one prefix are the model's)."""
    if set(state) == set(expected):
        return None
    part = prefix_holding_the_model(state, set(expected))
    if part:
        others = [key for key in state if not key.startswith(part)]
        return (f"its keys under {part!r} are the model's, beside others ({some_keys(others)}); save that part "
                f"alone: {{key.removeprefix({part!r}): value for key, value in state.items() if key.startswith({part!r})}}")
    unexpected = [key for key in state if key not in expected]
    missing = [key for key in expected if key not in state]
    return (f"its keys are not the model's (unexpected: {some_keys(unexpected)}; missing: {some_keys(missing)}); type "
            "the settings that built it (arch, depth, width, ...), or save the model's own state_dict()")


def some_keys(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{', '.join(keys[:SHOWN_KEYS])}{more}" if keys else "none"


def prefix_holding_the_model(state: dict, expected: set[str]) -> str:
    """A prefix (one or two segments) under which the keys are exactly the model's, beside other keys (a
    LightningModule's `model.` beside its loss's weights); '' when there is none."""
    prefixes = {".".join(key.split(".")[:length]) + "." for key in state for length in (1, 2) if key.count(".") >= length}
    return next((prefix for prefix in sorted(prefixes)
                 if {key[len(prefix):] for key in state if key.startswith(prefix)} == expected), "")


def assign_iterations(checkpoints: list[Checkpoint], ignored: dict[str, str]) -> dict[int, Checkpoint]:
    """{iteration: checkpoint}, sorted: by name or index.json first (two names giving one iteration:
    SettingsError), then by the step a file stores when its name holds no number; a file placed by
    neither, or whose stored step another file's name holds already (a copy: `last.ckpt`), is ignored."""
    placed = {}
    for checkpoint in checkpoints:
        if checkpoint.iteration is None:
            continue
        other = placed.get(checkpoint.iteration)
        if other is not None:
            raise SettingsError(f"import: {other.path.name} and {checkpoint.path.name} both read as iteration "
                                f"{checkpoint.iteration}; name the iterations in {INDEX}")
        placed[checkpoint.iteration] = checkpoint
    for checkpoint in checkpoints:
        name = checkpoint.path.name
        if checkpoint.iteration is not None:
            continue
        if checkpoint.step is None:
            ignored[name] = (f"no iteration in its name nor a stored {'/'.join(STEP_KEYS)}; map it to its "
                             f"iteration in an {INDEX} to import it")
        elif checkpoint.step in placed:
            ignored[name] = (f"its {checkpoint.step_key} {checkpoint.step} is the iteration of "
                             f"{placed[checkpoint.step].path.name} already (a copy of it, such as last or best)")
        else:
            checkpoint.iteration = checked_iteration(checkpoint.step, f"{name} stores {checkpoint.step_key}="
                                                     f"{checkpoint.step}", fix=f"map it to its iteration in an {INDEX}")
            placed[checkpoint.iteration] = checkpoint
    return dict(sorted(placed.items()))


def check_shapes(checkpoints: dict[int, Checkpoint], expected: dict[str, tuple], arch: str) -> None:
    """SettingsError naming the first key whose shape differs between the files (mixed architectures) or
    from the model's (another width: the settings typed are not the ones that trained it)."""
    first = next(iter(checkpoints.values()))
    reference = {key: tuple(tensor.shape) for key, tensor in first.state.items()}
    for checkpoint in checkpoints.values():
        shapes = {key: tuple(tensor.shape) for key, tensor in checkpoint.state.items()}
        differing = next((key for key in sorted(reference) if shapes[key] != reference[key]), None)
        if differing is not None:
            raise SettingsError(f"import: {checkpoint.path.name} is of another architecture than the first file "
                                f"(first differing key: {differing}); accepted: one model's checkpoints per import")
    problem = next((f"has {key} of shape {shape}, the model's is {expected[key]}" for key, shape in reference.items()
                    if shape != expected[key]), None)
    if problem:
        raise SettingsError(f"import: {first.path.name} does not fit the arch={arch} model of these settings: it "
                            f"{problem}; type the settings that built it (width, depth, ...)")


def model_state(model: torch.nn.Module, checkpoint: Checkpoint) -> dict:
    """The checkpoint's weights loaded into `model`, and the model's state dict as the lab saves it (a
    HookedModel's keys under its own names)."""
    getattr(model, "module", model).load_state_dict(checkpoint.state)
    checkpoint.state = {}  # its tensors are copied into the model: dropped, so only one copy of each is held
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def prefix_line(checkpoints: list[Checkpoint]) -> str:
    """One line naming each prefix stripped, who adds it and in how many of the files; '' when none was."""
    counts = Counter(checkpoint.prefix for checkpoint in checkpoints if checkpoint.prefix)
    if not counts:
        return ""
    stripped = "; ".join(f"{prefix!r} ({wrappers_of(prefix)}) from every key of {count} of {len(checkpoints)} file(s)"
                         for prefix, count in counts.items())
    return f"import: stripped the key prefix {stripped}: the keys are then the model's own"


def write_whole_run(experiment: ExperimentFolder, settings, states: dict[int, dict], shape, classes: int,
                    per_epoch: int | None) -> bool:
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
    its name is there but not whole (an import renames a run into place whole: this one was changed since)."""
    if not run.path.exists():
        return False
    state, written = run.read_status().get("state"), sorted(run.checkpoint_entries())
    if state == "done" and written == sorted(iterations):
        return True
    raise RunFolderError(f"{run.path} is there but is not a whole import (state {state}, checkpoints at "
                         f"{written or 'none'}); delete that folder and run the same command")


def write_run(run: RunFolder, settings, states: dict[int, dict], shape, classes: int, per_epoch: int | None) -> None:
    """The settings, the manifest, one self-describing checkpoint per state and the status done, in `run`.
    `per_epoch`: iterations per epoch, None when the batch size is unknown (the manifest's is null, every
    checkpoint's epoch NaN: its iteration alone is known)."""
    run.prepare(settings)
    iterations = list(states)
    per_epoch = None if per_epoch is None else max(per_epoch, 1)
    run.start_manifest(iterations, per_epoch)
    for iteration, state in states.items():
        epoch = float("nan") if per_epoch is None else iteration / per_epoch
        run.save_checkpoint(iteration=iteration, epoch=epoch, stage=1, settings=settings,
                            input_shape=shape, num_classes=classes, model_state=state, metrics={})
    run.write_status("done", iteration=iterations[-1], total_iterations=iterations[-1],
                     reason=f"imported ({len(iterations)} checkpoints)")


def wrappers_of(prefix: str) -> str:
    """'module._orig_mod.' -> 'DistributedDataParallel/DataParallel, torch.compile': who added each segment."""
    return ", ".join(WRAPPERS.get(segment, f"a wrapping module's attribute {segment!r}, as a LightningModule's")
                     for segment in prefix.split(".")[:-1])
