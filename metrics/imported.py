"""python analysis.py import DIR arch=... dataset=... [out_dir=...] [experiment=a preset] — checkpoints trained elsewhere become a run.

DIR holds one state dict per checkpoint (`*.pt`, `*.pth`: a state dict, or a dict holding one under
`model` or `state_dict`), the iteration read from the file name's last number (`step_1024.pt`,
`ckpt-e3-it1500.pth`) or from `index.json` ({"file name": iteration}). The run settings typed say which
model they are (arch, depth, width, ...: `train.py --help`) and which data they saw (dataset, ...). The
files become `<out_dir>/<experiment>/runs/<run_id>/` with settings, a manifest with sha256s and
self-describing checkpoints, state done: analysis.py, the figures and the report read it as any run.
The run id also hashes the imported files (`imported_from`), so the same settings trained here are
another run. Everything is checked before anything is written (one line, exit 2): a folder with no
checkpoints, files whose state dicts differ in keys or shapes (mixed architectures), or state dicts
that do not fit the model (the first key that does not).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import torch

import data
import models
from checkpointing import ExperimentFolder, RunFolder
from conf import SettingsError, parse_arguments
from utils import sha256_file

SUFFIXES = (".pt", ".pth")
INDEX = "index.json"


def import_command(arguments: list[str]) -> int:
    if not arguments or "=" in arguments[0]:
        raise SettingsError("import needs a folder of state dicts first: python analysis.py import DIR arch=... dataset=...")
    folder = Path(arguments[0])
    plan = parse_arguments(arguments[1:], analysis=True)
    if len(plan.grid) != 1:
        raise SettingsError(f"import makes one run; the settings typed sweep {len(plan.grid)} (give one value per key)")
    files = checkpoint_files(folder)
    settings = dataclasses.replace(plan.grid[0], imported_from=digest_of(files))
    dataset = data.load_dataset(settings, data_root=Path(plan.execution.data_root), download=plan.execution.download)
    shape, classes = tuple(dataset.train_images.shape[1:]), dataset.num_classes
    model = models.build(settings, input_shape=shape, num_classes=classes)
    reference = {key: tuple(tensor.shape) for key, tensor in state_dict_of(next(iter(files.values()))).items()}
    states = {iteration: check_state(path, model, settings.arch, reference) for iteration, path in files.items()}
    run = ExperimentFolder.of(plan.execution.out_dir, plan.experiment).run(settings.run_id)
    write_run(run, settings, states, shape, classes, len(dataset.train_labels) // settings.batch_size)
    print(f"imported {len(files)} checkpoint(s) (iterations {', '.join(map(str, files))}) from {folder} as run "
          f"{settings.run_id} in {run.path}; measure it with python analysis.py experiment={plan.experiment} "
          f"out_dir={plan.execution.out_dir}")
    return 0


def checkpoint_files(folder: Path) -> dict[int, Path]:
    """{iteration: file}, sorted; SettingsError when the folder is missing or holds no checkpoint."""
    if not folder.is_dir():
        raise SettingsError(f"import: {folder} is not a folder; accepted: a folder of state dicts (*.pt, *.pth)")
    index = folder / INDEX
    if index.exists():
        try:
            listed = {name: int(iteration) for name, iteration in json.loads(index.read_text()).items()}
        except (ValueError, TypeError, AttributeError) as error:
            raise SettingsError(f"import: {index} is not {{\"file\": iteration}} ({error})") from None
        files = {iteration: folder / name for name, iteration in listed.items()}
        missing = [path.name for path in files.values() if not path.is_file()]
        if missing:
            raise SettingsError(f"import: {index} lists {missing[0]}, which is not in {folder}")
    else:
        files = {}
        for path in sorted(folder.iterdir()):
            numbers = re.findall(r"\d+", path.stem)
            if path.suffix in SUFFIXES and numbers:
                if int(numbers[-1]) in files:
                    raise SettingsError(f"import: {files[int(numbers[-1])].name} and {path.name} both read as "
                                        f"iteration {int(numbers[-1])}; name the iterations in {INDEX}")
                files[int(numbers[-1])] = path
    if not files:
        raise SettingsError(f"import: {folder} holds no checkpoint (*.pt or *.pth with the iteration in its name, "
                            f"or an {INDEX})")
    return dict(sorted(files.items()))


def digest_of(files: dict[int, Path]) -> str:
    """What the imported run is, besides its settings: its files' iterations and bytes."""
    listing = [[iteration, sha256_file(path)] for iteration, path in files.items()]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def state_dict_of(path: Path) -> dict:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or one holding more than tensors and containers
        raise SettingsError(f"import: {path} is not a state dict torch loads safely ({type(error).__name__})") from None
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


def write_run(run: RunFolder, settings, states: dict[int, dict], shape, classes: int, per_epoch: int) -> None:
    run.prepare(settings)
    iterations = list(states)
    run.start_manifest(iterations, max(per_epoch, 1))
    for iteration, state in states.items():
        run.save_checkpoint(iteration=iteration, epoch=iteration / max(per_epoch, 1), stage=1, settings=settings,
                            input_shape=shape, num_classes=classes, model_state=state, metrics={})
    run.write_status("done", iteration=iterations[-1], total_iterations=iterations[-1],
                     reason=f"imported ({len(iterations)} checkpoints)")
