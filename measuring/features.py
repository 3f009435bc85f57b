"""python analysis.py features RUN_DIR iteration=N split=train|test out=FILE.npz [features_at=...] — one
checkpoint's features of every layer (as the metrics see them, flattened) and the labels of one split,
for one's own analyses. The checkpoint is verified against its sha256 before any value is computed.

subset=probe: the probe snapshot's examples instead (metrics/similarity.py: the fixed subset of
`probe_subset_size` test examples), their `indices` in the test split, and each layer's features pooled to
`probe_dimensions` and rounded to float16, as the snapshot keeps them, for one's own similarity analyses.

The execution options are analysis.py's (conf/subcommands.py): device= (default cpu), data_root=,
download= (default false), threads=, log_level=; the others are accepted and bear on nothing here.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import torch

from conf import Execution, SettingsError
from conf.analysis import Analysis
from conf.subcommands import FEATURE_EXECUTION, FeatureOptions, parse_subcommand
from folders import RunFolder, RunFolderError, RunRecord
from measuring.inputs import load_model, splits_of
from metrics.engine import SplitData
from metrics.pooling import pool_to
from metrics.similarity import SNAPSHOT_DTYPE, probe_subset
from utils import atomic_write_bytes, ensure_writable_folder, set_cpu_threads, setup_logging

FEATURES_USAGE = ("usage: python analysis.py features RUN_DIR iteration=N split=test out=feats.npz "
                  "[subset=all|probe] [features_at=post_activation|pre_activation] [execution options: device=cpu "
                  "data_root=... download=false threads=N log_level=INFO ...]")


def feature_options(arguments: list[str]) -> tuple[RunRecord, FeatureOptions, Execution, Analysis]:
    """`features`' words -> (the run as read once, its options, execution, analysis options), read with the one
    grammar (conf/subcommands.py); SettingsError on a bad word or an iteration without a checkpoint,
    RunFolderError on an unusable settings file or manifest."""
    (run_dir,), options, execution = parse_subcommand("features", arguments, ("RUN_DIR",), FeatureOptions,
                                                      FEATURES_USAGE, FEATURE_EXECUTION)
    folder = RunFolder(run_dir)
    if not folder.settings_path.exists():
        raise SettingsError(f"{folder.path} is not a run folder (it has no settings file)")
    run = folder.read_record()
    if run.problem:
        raise RunFolderError(run.problem)
    files = run.entries
    if options.iteration not in files:
        raise SettingsError(f"iteration={options.iteration if options.iteration >= 0 else 'N'} has no checkpoint; "
                            f"accepted: {', '.join(map(str, sorted(files)))}")
    analysis = Analysis(features_at=options.features_at, probe_subset_size=options.probe_subset_size,
                        probe_dimensions=options.probe_dimensions)
    return run, options, execution, analysis


def writable_file(path: Path) -> Path:
    """`path` if a file can be written there (checked before any work); OSError naming it otherwise:
    a folder of that name, a read-only or missing-permission folder."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    ensure_writable_folder(path.parent)
    return path


def features_command(arguments: list[str]) -> int:
    """`features RUN_DIR iteration=N split=train|test out=FILE.npz` — labels + one array per layer."""
    run, options, execution, analysis = feature_options(arguments)
    setup_logging(execution.log_level)
    set_cpu_threads(execution.threads)
    iteration = options.iteration
    device = execution.torch_device()
    out = writable_file(Path(options.out))
    _, model = load_model(run, iteration, device)  # verified against its sha256 before any value is computed
    train, test, _ = splits_of(run, Path(execution.data_root), execution.download, device)
    probe = options.subset == "probe"
    chosen = test if probe or options.split == "test" else train
    indices = probe_subset(len(test.labels), analysis.probe_subset_size) if probe else None
    if probe:
        chosen = SplitData(test.images[indices.to(test.images.device)], test.labels[indices.to(test.labels.device)],
                           test.mean, test.std)
    arrays: dict[str, list] = {}
    with torch.no_grad():
        for _, _, images, _, _ in chosen.batches(500):
            for name, tensor in model.features(images, point=analysis.features_at).items():
                values = pool_to(tensor, analysis.probe_dimensions).to(SNAPSHOT_DTYPE) if probe else tensor.flatten(1).float()
                arrays.setdefault(name, []).append(values.cpu().numpy())
    extra = {} if indices is None else {"indices": indices.numpy()}
    buffer = io.BytesIO()
    np.savez(buffer, labels=chosen.labels.cpu().numpy(), **extra,
             **{name: np.concatenate(parts) for name, parts in arrays.items()})
    atomic_write_bytes(out, buffer.getvalue())
    what = f"the probe subset ({len(chosen.labels)} test examples, pooled, float16)" if probe else f"the {options.split} split"
    print(f"wrote {out}: labels and {len(arrays)} layers ({', '.join(arrays)}) of {what}")
    return 0
