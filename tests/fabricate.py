"""Small dataset files in torchvision's standard on-disk formats, for tests that must run offline.

Each fabricator writes random uint8 images and labels under `root` exactly where torchvision looks
for the real files and returns what it wrote as NCHW tensors, so a test can compare the loader's
output pixel for pixel. CIFAR and SVHN files cannot match torchvision's md5 checksums; MNIST and
Fashion-MNIST have no checksum at load time and are read fully honestly; `skip_md5_checks` lets a
test read the others through torchvision's real parsing code, and `go_offline` cuts the network.
"""

from __future__ import annotations

import pickle
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch


def _random_split(count: int, channels: int, size: int, num_classes: int, rng: np.random.Generator):
    images = rng.integers(0, 256, size=(count, channels, size, size), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=count, dtype=np.int64)
    return images, labels


def _result(train, test) -> dict[str, torch.Tensor]:
    return {"train_images": torch.from_numpy(train[0]), "train_labels": torch.from_numpy(train[1]),
            "test_images": torch.from_numpy(test[0]), "test_labels": torch.from_numpy(test[1])}


def _pickle(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(value, handle, protocol=2)


def fabricate_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """cifar-10-batches-py/: five data_batch_N pickles, test_batch, batches.meta (rows of 3072 = CHW)."""
    rng = np.random.default_rng(seed)
    train, test = _random_split(n_train, 3, 32, 10, rng), _random_split(n_test, 3, 32, 10, rng)
    folder = Path(root) / "cifar-10-batches-py"
    batches = np.array_split(np.arange(n_train), 5)
    for number, rows in enumerate(batches, start=1):
        _pickle(folder / f"data_batch_{number}", {"data": train[0][rows].reshape(len(rows), -1),
                                                  "labels": train[1][rows].tolist()})
    _pickle(folder / "test_batch", {"data": test[0].reshape(n_test, -1), "labels": test[1].tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{index}" for index in range(10)]})
    return _result(train, test)


def fabricate_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """cifar-100-python/: train and test pickles with fine_labels (and coarse_labels), meta."""
    rng = np.random.default_rng(seed)
    train, test = _random_split(n_train, 3, 32, 100, rng), _random_split(n_test, 3, 32, 100, rng)
    folder = Path(root) / "cifar-100-python"
    for name, (images, labels) in (("train", train), ("test", test)):
        _pickle(folder / name, {"data": images.reshape(len(images), -1), "fine_labels": labels.tolist(),
                                "coarse_labels": (labels // 5).tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"fine{index}" for index in range(100)],
                              "coarse_label_names": [f"coarse{index}" for index in range(20)]})
    return _result(train, test)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic (0, 0, type 0x08 = uint8, number of dimensions), big-endian sizes, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fabricate_mnist(root: Path, n_train: int, n_test: int, seed: int = 0,
                    folder: str = "MNIST") -> dict[str, torch.Tensor]:
    """<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (folder "FashionMNIST" for Fashion-MNIST)."""
    rng = np.random.default_rng(seed)
    train, test = _random_split(n_train, 1, 28, 10, rng), _random_split(n_test, 1, 28, 10, rng)
    raw = Path(root) / folder / "raw"
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return _result(train, test)


# Seven-segment digits (segments a–g: top, upper right, lower right, bottom, lower left, upper left, middle) as
# stroke end points on a 0..1 square: a class is a shape, not a colour, so layers have structure to learn.
SEGMENTS = {"a": ((0.2, 0.15), (0.8, 0.15)), "b": ((0.8, 0.15), (0.8, 0.5)), "c": ((0.8, 0.5), (0.8, 0.85)),
            "d": ((0.2, 0.85), (0.8, 0.85)), "e": ((0.2, 0.5), (0.2, 0.85)), "f": ((0.2, 0.15), (0.2, 0.5)),
            "g": ((0.2, 0.5), (0.8, 0.5))}
DIGITS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abfgcd")


def stroke_digits(count: int, seed: int, size: int = 28, shapes=DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """`count` grayscale images of the `shapes` drawn as strokes of random thickness, shift, scale and slant, with
    pixel noise (uint8, N × size × size), and their labels: MNIST-like structure, made here."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(shapes), size=count)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    images = np.zeros((count, size, size), dtype=np.float32)
    for index, label in enumerate(labels):
        scale, slant = rng.uniform(0.75, 1.05), rng.uniform(-0.15, 0.15)
        shift, width = rng.uniform(-0.08, 0.08, size=2), rng.uniform(0.04, 0.08)
        for name in shapes[label]:
            (x0, y0), (x1, y1) = [((x - 0.5) * scale + 0.5 + slant * (y - 0.5) + shift[0],
                                   (y - 0.5) * scale + 0.5 + shift[1]) for x, y in SEGMENTS[name]]
            along = np.clip(((columns - x0) * (x1 - x0) + (rows - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
            distance = np.hypot(columns - (x0 + along * (x1 - x0)), rows - (y0 + along * (y1 - y0)))
            images[index] = np.maximum(images[index], np.clip(1.5 - distance / width, 0, 1))
    images = np.clip(images * 255 + rng.normal(0, 20, images.shape), 0, 255)
    return images.astype(np.uint8), labels.astype(np.int64)


def fabricate_stroke_mnist(root: Path, n_train: int, n_test: int, seed: int = 0, folder: str = "MNIST",
                           shapes=DIGITS) -> None:
    """MNIST's idx files (or another folder's: "FashionMNIST") holding stroke_digits: a grayscale 28-pixel dataset
    with real structure, for trying the read-out's stories on data other than the embedded synthetic set."""
    raw = Path(root) / folder / "raw"
    for prefix, count, offset in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = stroke_digits(count, seed * 2 + offset, shapes=shapes)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def fabricate_svhn(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """train_32x32.mat and test_32x32.mat: X is [32, 32, 3, N] uint8, y is [N, 1] with digit 0 stored as 10."""
    import scipy.io

    rng = np.random.default_rng(seed)
    train, test = _random_split(n_train, 3, 32, 10, rng), _random_split(n_test, 3, 32, 10, rng)
    Path(root).mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in (("train", train), ("test", test)):
        stored_labels = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
        scipy.io.savemat(Path(root) / f"{name}_32x32.mat",
                         {"X": images.transpose(2, 3, 1, 0), "y": stored_labels})
    return _result(train, test)


def fabricate_fashionmnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, torch.Tensor]:
    return fabricate_mnist(root, n_train, n_test, seed, folder="FashionMNIST")


FABRICATORS = {"cifar10": fabricate_cifar10, "cifar100": fabricate_cifar100, "mnist": fabricate_mnist,
               "fashionmnist": fabricate_fashionmnist, "svhn": fabricate_svhn}


def skip_md5_checks(monkeypatch) -> None:
    """Fabricated files cannot match the real md5 sums: make torchvision check their existence only.

    Only the md5 comparison is replaced, in torchvision's module-level `check_integrity` of the CIFAR
    and SVHN modules (CIFAR calls it from both `_check_integrity` and `_load_meta`, so patching
    `_check_integrity` alone would still reject the fabricated meta file); parsing runs for real.
    """
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    def exists(path, md5=None) -> bool:
        return Path(path).is_file()

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", exists)


def go_offline(monkeypatch) -> None:
    """Every torchvision download goes through urllib.request.urlopen: make it fail like a dead network."""
    def refuse(*arguments, **keywords):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# -- small engine inputs and metrics tables (tests of metrics/ and figures/) --------------------------------

ENGINE_MEAN, ENGINE_STD = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])


def class_images(count: int, classes: int, seed: int, size: int = 4):
    """engine.SplitData of uint8 [N, 3, size, size] images: a grey level per class plus noise."""
    from metrics import engine

    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    levels = 60.0 + 50 * labels.double()
    noise = 25 * torch.randn(count, 3, size, size, generator=generator, dtype=torch.float64)
    images = (levels[:, None, None, None] + noise).round().clamp(0, 255).to(torch.uint8)
    return engine.SplitData(images, labels, ENGINE_MEAN, ENGINE_STD)


def tiny_mlp(classes: int = 3):
    """An MLP of one hidden layer of width 8 on 3×4×4 images, seeded."""
    import models
    from conf import Settings

    torch.manual_seed(0)
    return models.build(Settings(arch="mlp", depth=1, width=8), input_shape=(3, 4, 4), num_classes=classes)


def keyed(rows) -> dict:
    """engine.measure's rows as {(layer, metric, split): value}."""
    return {(row["layer"], row["metric"], row["split"]): row["value"] for row in rows}


def auto_task(settings) -> str:
    """The transfer task `transfer_task=auto` reads for the run's dataset (data/transfer.py choose_task)."""
    return "brightness" if settings.dataset in ("mnist", "fashionmnist") else "colour_dominance"


def run_frame(rows: list[dict], settings, stage: int, parent: str):
    """A fabricated run's rows as measuring/store.py writes its table: run, stage, parent, transfer task and epoch
    columns, then every setting (lists as JSON text)."""
    import json

    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["run_id"], frame["stage"], frame["parent_run_id"] = settings.run_id, stage, parent
    frame["transfer_task"] = auto_task(settings)
    frame["options"] = ""  # measured under the default analysis options
    frame["epoch"] = frame["iteration"] / 8 + (settings.pretrain_epochs if stage == 2 else 0)
    for key, value in settings.to_record().items():
        frame[key] = json.dumps(value) if isinstance(value, list) else value
    return frame


def fabricated_similarity():
    """A similarity table (measuring/snapshots.py) of two single-stage runs of depth 2 and 4: CKA falling with
    the distance between layers, each layer converging to its final state over training; with the settings
    columns the store writes (lists as JSON text)."""
    import json

    import pandas as pd

    from conf import Settings

    rows = []
    layers = ["input", "block00", "block01", "logits"]
    for depth in (2, 4):
        record = {key: json.dumps(value) if isinstance(value, list) else value
                  for key, value in Settings(depth=depth).to_record().items()}
        for iteration in (0, 4, 16):
            for index, layer in enumerate(layers):
                common = {**record, "run_id": f"run{depth}", "iteration": iteration, "layer": layer,
                          "layer_index": index, "cka_debiased": 0.5}
                rows += [{**common, "comparison": "layers", "other_layer": other,
                          "cka": 1 / (1 + abs(index - position))} for position, other in enumerate(layers)]
                rows.append({**common, "comparison": "to_final", "other_layer": layer,
                             "cka": min(1, 0.3 + iteration / 16 + 0.1 * index)})
    return pd.DataFrame(rows).assign(options="")


def transfer_table():
    """A metrics table of two seeds of a parent on MNIST (its classifier best at its last checkpoint, 128; its
    reconstruction loss flat, falling, rising; its transfer probe peaking at 16) and their children on
    Fashion-MNIST from iterations 0, 8, 64 and 128: fine-tuned ones end best from 64, head-only ones from 8."""
    import pandas as pd

    from conf import Settings

    parent_iterations = (0, 1, 2, 4, 8, 16, 32, 64, 128)
    reconstruction = (1.0, 1.0, 0.99, 0.8, 0.5, 0.3, 0.4, 0.6, 0.7)
    probe = (0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.6, 0.5, 0.45)
    final = {"all": {0: 0.60, 8: 0.70, 64: 0.80, 128: 0.75}, "head": {0: 0.20, 8: 0.50, 64: 0.45, 128: 0.40}}
    frames = []
    for seed in (0, 1):
        parent = Settings(dataset="mnist", seed=seed, epochs=16)
        rows = []
        for position, iteration in enumerate(parent_iterations):
            rows += [{"iteration": iteration, "layer": "logits", "layer_index": 3, "metric": "classifier_accuracy",
                      "split": "test", "value": 0.1 + 0.8 * position / 8},
                     {"iteration": iteration, "layer": "block01", "layer_index": 2, "metric": "reconstruction_mse",
                      "split": "test", "value": reconstruction[position] + 0.01 * seed},
                     {"iteration": iteration, "layer": "block01", "layer_index": 2, "metric": "transfer_accuracy",
                      "split": "test", "value": probe[position]}]
        frames.append(run_frame(rows, parent, 1, ""))
        for train, by_start in final.items():
            for start, accuracy in by_start.items():
                child = Settings(dataset="fashionmnist", pretrain_dataset="mnist", pretrain_epochs=16, epochs=2,
                                 seed=seed, start_from_iteration=str(start), stage2_train=train)
                rows = [{"iteration": start + step, "layer": "logits", "layer_index": 3,
                         "metric": "classifier_accuracy", "split": "test", "value": value + 0.01 * seed}
                        for step, value in ((0, 0.1), (16, accuracy))]
                frames.append(run_frame(rows, child, 2, parent.run_id))
    return pd.concat(frames, ignore_index=True)


def figure_run(settings, iterations, parent: str = "", stage: int = 1, offset: float = 0.0,
               transfer_task: str = "colour_dominance"):
    """One run's rows of every metric a figure draws (both splits), layers input, block00.. (one per depth),
    logits, with the papers' shapes (values made up, smooth in layer and time; `offset` tells runs apart),
    and the `transfer_task` column the analysis writes (measuring/store.py)."""
    import math

    layers = ["input", *(f"block{index:02d}" for index in range(settings.depth)), "logits"]
    rows = []
    for iteration in iterations:
        time = math.log2(iteration + 1) / 7  # 0 .. ~1 over the run
        for index, layer in enumerate(layers):
            share = index / (len(layers) - 1)
            values = {"ncc_accuracy": min(1.0, 0.1 + 0.9 * time * (0.3 + 0.7 * share)),
                      "cdnv": 10 ** (1 - 2 * time * share),
                      "reconstruction_mse": 0.4 - 0.15 * math.sin(math.pi * min(time, 1)) * share + 0.3 * time * share,
                      "transfer_accuracy": 0.8 + 0.1 * math.sin(math.pi * min(time, 1)) * share,
                      "nc1": 10 ** (1 - 3 * time * share), "nc2_equinorm": 0.5 - 0.4 * time * share,
                      "nc2_equiangularity": 0.3 - 0.2 * time * share, "dormant_fraction": 0.05 + 0.3 * time * share,
                      "effective_rank": 30 - 20 * time * share}
            rows += [{"layer": layer, "layer_index": index, "metric": metric, "split": split,
                      "value": value + offset, "iteration": iteration}
                     for metric, value in values.items() for split in ("train", "test")]
        rows += [{"layer": "logits", "layer_index": len(layers) - 1, "metric": "classifier_accuracy", "split": split,
                  "value": min(1.0, 0.1 + time) - offset, "iteration": iteration} for split in ("train", "test")]
        rows.append({"layer": "all", "layer_index": -1, "metric": "effective_depth", "split": "train",
                     "value": 1 + settings.depth // 2 + settings.seed % 2 + 10 * offset, "iteration": iteration})
        # the paper's: an intermediate layer once trained half way (a planted value, as the relative one above)
        literal = min(1 + settings.depth // 2 + settings.seed % 2, len(layers) - 2) if time > 0.5 else math.nan
        rows.append({"layer": "all", "layer_index": -1, "metric": "effective_depth_literal", "split": "train",
                     "value": float(literal), "iteration": iteration})
    frame = run_frame(rows, settings, stage, parent)
    frame["transfer_task"] = transfer_task
    return frame


CONDITION_A = {"dataset": "synthetic", "width": 32, "optimizer": "sgd", "lr": 0.02}  # share depth 3 with B
CONDITION_B = {"dataset": "synthetic", "width": 16, "optimizer": "adam", "lr": 0.001}
CONDITION_C = {**CONDITION_A, "optimizer": "adam"}  # A but its optimizer: no knob of IntermediateNC's tells them apart


def warm_start_family(iterations, child_iterations, seeds=(0, 1), **condition):
    """Scratch, its stage-1 parent and two children (plain warm start, reset last 2) per seed, on `condition`."""
    from conf import Settings
    from conf.plasticity import parent_settings

    frames = []
    for seed in seeds:
        frames.append(figure_run(Settings(**condition, seed=seed, epochs=4), iterations, offset=-0.05))
        for reset in (0, 2):
            child = Settings(**condition, seed=seed, epochs=4, pretrain_epochs=4, pretrain_fraction=0.5, reset_last=reset)
            parent = parent_settings(child)
            if reset == 0:
                frames.append(figure_run(parent, iterations[:6]))
            frames.append(figure_run(child, child_iterations, parent.run_id, 2, offset=0.05 - 0.03 * (reset > 0)))
    return frames


def condition_table():
    """A metrics table of every figure family, where conditions share settings a figure plots: conditions A (width 32,
    SGD), B (width 16, Adam) and C (A with Adam) at depths 3 and 5 (two seeds each); warm start vs scratch
    (with stage-1 parents and reset-2 children) on 2000 and on 1000 synthetic training images with different
    checkpoint grids, at depth 3 and width 16 as condition B; and the transfer table's MNIST parents and
    Fashion-MNIST children."""
    import pandas as pd

    from conf import Settings

    iterations = [0, 1, 2, 4, 8, 16, 32, 64, 128]
    conditions = ((CONDITION_A, 0.0), (CONDITION_B, -0.04), (CONDITION_C, 0.03))
    frames = [figure_run(Settings(**condition, depth=depth, seed=seed), iterations, offset=offset)
              for condition, offset in conditions for depth in (3, 5) for seed in (0, 1)]
    warm = {**CONDITION_B, "depth": 3, "image_size": 16}
    frames += warm_start_family(iterations, [16 + step for step in (0, 1, 2, 4, 8, 16)], synthetic_train_size=2000,
                                **warm)
    frames += warm_start_family(iterations, [16 + step for step in (0, 3, 6, 12, 24)], synthetic_train_size=1000,
                                **warm)
    return pd.concat([*frames, transfer_table()], ignore_index=True)


def condition_similarity():
    """A similarity table (measuring/snapshots.py) of conditions A and B at depth 3 (two seeds each) and a stage-1 run
    of B, each run's CKA a little different, with the settings columns the store writes."""
    import pandas as pd

    from conf import Settings

    runs = [Settings(**condition, depth=3, seed=seed) for condition in (CONDITION_A, CONDITION_B) for seed in (0, 1)]
    runs.append(Settings(**CONDITION_B, depth=3, pretrain_fraction=0.5, pretrain_epochs=4, epochs=0))
    layers = ["input", "block00", "block01", "block02", "logits"]
    rows = []
    for number, settings in enumerate(runs):
        record = {key: value for key, value in settings.to_record().items() if not isinstance(value, list)}
        for iteration in (0, 4, 16):
            for index, layer in enumerate(layers):
                common = {**record, "run_id": settings.run_id, "iteration": iteration, "layer": layer,
                          "layer_index": index, "cka_debiased": 0.5}
                rows += [{**common, "comparison": "layers", "other_layer": other,
                          "cka": 1 / (1 + abs(index - position)) - 0.02 * number}
                         for position, other in enumerate(layers)]
                rows.append({**common, "comparison": "to_final", "other_layer": layer,
                             "cka": min(1.0, 0.3 + iteration / 16 + 0.1 * index) - 0.02 * number})
    return pd.DataFrame(rows)


def curves_run(settings, iterations, curves: dict, examples: int = 1000, stage: int = 1, parent: str = ""):
    """One run's rows from `curves`: {(metric, split, layer, layer_index): values per iteration}, with the
    `examples` column the analysis writes for accuracies (the read-out's resolution: findings/noise.py)."""
    return curves_table([(settings, iterations, curves, stage, parent)], examples)


def curves_table(runs, examples: int = 1000):
    """Many runs' rows at once (as curves_run, for harness tables of thousands of runs): `runs` holds
    (settings, iterations, curves, stage, parent) per run; the settings columns are joined once per run."""
    import json

    import pandas as pd

    rows, settings_rows = [], []
    for settings, iterations, curves, stage, parent in runs:
        run_id = settings.run_id
        rows += [{"run_id": run_id, "iteration": iteration, "layer": layer, "layer_index": index, "metric": metric,
                  "split": split, "value": float(values[position]),
                  "examples": examples if metric.endswith("accuracy") else None}
                 for (metric, split, layer, index), values in curves.items() for position, iteration in enumerate(iterations)]
        settings_rows.append({"run_id": run_id, "stage": stage, "parent_run_id": parent, "transfer_task": auto_task(settings),
                              **{key: json.dumps(value) if isinstance(value, list) else value
                                 for key, value in settings.to_record().items()}})
    frame = pd.DataFrame(rows).merge(pd.DataFrame(settings_rows), on="run_id", how="left")
    frame["epoch"] = frame["iteration"] / 8
    return frame


LOG_ITERATIONS = (0, 1, 2, 4, 8, 16, 32, 64, 128)


def phase_curves(probe, reconstruction=None, classifier=None, layer: str = "block01") -> dict:
    """The curves the LearnPhase read-out needs at one hidden layer (index 2 of input, block00, block01, logits):
    the transfer probe, the reconstruction loss (flat, falling, rising by default) and the classifier's test
    accuracy (rising to the last checkpoint by default)."""
    count = len(probe)
    reconstruction = reconstruction if reconstruction is not None else [1.0] * 3 + [0.9 - 0.1 * step for step in range(count - 5)] + [0.7, 0.8]
    classifier = classifier if classifier is not None else [0.1 + 0.8 * step / (count - 1) for step in range(count)]
    return {("transfer_accuracy", "test", layer, 2): probe, ("reconstruction_mse", "test", layer, 2): reconstruction,
            ("classifier_accuracy", "test", "logits", 3): classifier}


def depth_curves(ncc_by_layer, literal, iterations=1) -> dict:
    """NCC train accuracy per layer (input, block00, …, logits) and the paper's effective depth, constant in time."""
    layers = ["input", *(f"block{index:02d}" for index in range(len(ncc_by_layer) - 2)), "logits"]
    curves = {("ncc_accuracy", "train", layer, index): [accuracy] * iterations
              for index, (layer, accuracy) in enumerate(zip(layers, ncc_by_layer))}
    curves[("effective_depth_literal", "train", "all", -1)] = [literal] * iterations
    return curves
