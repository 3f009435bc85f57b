"""python analysis.py features RUN_DIR iteration=N split=train|test out=FILE.npz [features_at=...] — one
checkpoint's features of every layer (as the metrics see them, flattened) and the labels of one split,
for one's own analyses. The checkpoint is verified against its sha256 before any value is computed.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import torch

from checkpointing import RunFolder
from conf import Execution, SettingsError
from conf.analysis import Analysis
from metrics.inputs import load_model, splits_of
from utils import atomic_write_bytes, ensure_writable_folder, resolve_device


FEATURE_OPTIONS = ("iteration", "split", "out", "device", "data_root", "features_at")
FEATURES_USAGE = ("usage: python analysis.py features RUN_DIR iteration=N split=test out=feats.npz "
                  "[features_at=post_activation|pre_activation]")


def feature_options(arguments: list[str]) -> tuple[RunFolder, dict, int, Execution]:
    """`features`' words -> (run folder, options, iteration, execution); SettingsError on a bad word.
    device and data_root go through conf.Execution, so they are checked as train.py's are."""
    if not arguments:
        raise SettingsError(f"features needs RUN_DIR; {FEATURES_USAGE}")
    folder = RunFolder(arguments[0])
    options = dict(argument.partition("=")[::2] for argument in arguments[1:])
    unknown = set(options) - set(FEATURE_OPTIONS)
    if unknown:
        raise SettingsError(f"unknown key {sorted(unknown)[0]!r}; accepted: {', '.join(FEATURE_OPTIONS)}")
    execution = Execution(device=options.get("device", "cpu"), data_root=options.get("data_root", "datasets"),
                          download=False)
    if not folder.settings_path.exists():
        raise SettingsError(f"{folder.path} is not a run folder (it has no settings file)")
    files = folder.checkpoint_entries()
    if not options.get("iteration", "").isdigit() or int(options["iteration"]) not in files:
        raise SettingsError(f"iteration={options.get('iteration')!r} has no checkpoint; accepted: {', '.join(map(str, sorted(files)))}")
    if options.setdefault("split", "test") not in ("train", "test"):
        raise SettingsError(f"split={options['split']!r} is not known; accepted: train, test")
    options["features_at"] = Analysis(features_at=options.get("features_at", "post_activation")).features_at  # checked
    return folder, options, int(options["iteration"]), execution


def writable_file(path: Path) -> Path:
    """`path` if a file can be written there (checked before any work); OSError naming it otherwise:
    a folder of that name, a read-only or missing-permission folder."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    ensure_writable_folder(path.parent)
    return path


def features_command(arguments: list[str]) -> int:
    """`features RUN_DIR iteration=N split=train|test out=FILE.npz` — labels + one array per layer."""
    folder, options, iteration, execution = feature_options(arguments)
    device = resolve_device(execution)
    out = writable_file(Path(options.get("out", "features.npz")))
    settings = folder.read_settings()
    _, model = load_model(folder, iteration, device)  # verified against its sha256 before any value is computed
    train, test, _ = splits_of(settings, folder, Path(execution.data_root), execution.download, device)
    chosen = train if options["split"] == "train" else test
    arrays: dict[str, list] = {}
    with torch.no_grad():
        for _, _, images, _, _ in chosen.batches(500):
            for name, tensor in model.features(images, point=options["features_at"]).items():
                arrays.setdefault(name, []).append(tensor.flatten(1).float().cpu().numpy())
    buffer = io.BytesIO()
    np.savez(buffer, labels=chosen.labels.cpu().numpy(), **{name: np.concatenate(parts) for name, parts in arrays.items()})
    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {out}: labels and {len(arrays)} layers ({', '.join(arrays)}) of the {options['split']} split")
    return 0
