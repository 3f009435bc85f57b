"""python -m pytest tests/test_data.py -q — the data package: synthetic data, noise, batches, file readers."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as functional

import data
import fabricate
from data import DataError, TrainingStream, apply_label_noise, load_dataset, normalize
from data.transfer import colour_dominance_labels

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FakeSettings:
    """The fields of conf's Settings that load_dataset reads (it is duck-typed)."""

    dataset: str = "synthetic"
    data_seed: int = 0
    image_size: int = 32
    synthetic_classes: int = 10
    synthetic_train_size: int = 600
    synthetic_test_size: int = 200
    train_subset: int = 0
    normalization: str = "dataset"


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def synthetic(**changes) -> data.ImageDataset:
    return load_dataset(replace(FakeSettings(), **changes), data_root=Path("unused"), download=False)


# ---- synthetic -------------------------------------------------------------------------------------

def test_synthetic_is_deterministic_per_seed_with_expected_shapes():
    first, again, other = synthetic(), synthetic(), synthetic(data_seed=1)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, field), getattr(again, field))
        assert not torch.equal(getattr(first, field), getattr(other, field))
    assert first.train_images.shape == (600, 3, 32, 32) and first.train_images.dtype == torch.uint8
    assert first.test_images.shape == (200, 3, 32, 32) and first.test_labels.dtype == torch.int64
    assert first.num_classes == 10 and first.name == "synthetic"
    assert torch.bincount(first.train_labels, minlength=10).tolist() == [60] * 10
    assert torch.bincount(first.test_labels, minlength=10).tolist() == [20] * 10
    as_float = first.train_images.to(torch.float64) / 255
    assert first.mean.dtype == torch.float32 and first.mean.shape == (3,)
    torch.testing.assert_close(first.mean, as_float.mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(first.std, as_float.std(dim=(0, 2, 3), unbiased=False).float())
    assert first.to("meta").train_images.device.type == "meta"
    small = synthetic(image_size=16, synthetic_classes=4, synthetic_train_size=100)  # configurable
    assert small.train_images.shape == (100, 3, 16, 16) and small.num_classes == 4
    assert torch.bincount(small.train_labels).tolist() == [25] * 4


def test_colour_dominance_is_balanced_and_independent_of_the_class():
    dataset = synthetic(synthetic_train_size=3000)
    colours = colour_dominance_labels(dataset.train_images)
    overall = torch.bincount(colours, minlength=3).double() / len(colours)
    assert overall.min() >= 0.15, overall
    for label in range(dataset.num_classes):
        within = colours[dataset.train_labels == label]
        # 300 samples per class: the standard error of a share is ~0.027, so 0.12 is > 4 of them.
        assert (torch.bincount(within, minlength=3).double() / len(within) - overall).abs().max() < 0.12


def test_a_tiny_mlp_learns_synthetic_well_above_chance():
    torch.manual_seed(0)
    # An MLP is not translation invariant, so it needs a few thousand examples of the shifted patterns.
    dataset = synthetic(image_size=16, synthetic_train_size=4000, synthetic_test_size=500)
    train_inputs = normalize(dataset.train_images, dataset.mean, dataset.std).flatten(1)
    test_inputs = normalize(dataset.test_images, dataset.mean, dataset.std).flatten(1)
    model = torch.nn.Sequential(torch.nn.Linear(train_inputs.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(600):
        rows = torch.randint(0, 4000, (128,))
        optimizer.zero_grad()
        functional.cross_entropy(model(train_inputs[rows]), dataset.train_labels[rows]).backward()
        optimizer.step()
    accuracy = (model(test_inputs).argmax(1) == dataset.test_labels).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 0.1; about 0.75 after these 600 steps


def test_train_subset_is_seeded_nested_and_checked():
    full, half, quarter = synthetic(), synthetic(train_subset=300), synthetic(train_subset=150)
    assert half.train_images.shape[0] == 300 and torch.equal(half.test_images, full.test_images)
    assert torch.equal(half.train_images[:150], quarter.train_images)  # nested: a prefix of one shuffle
    assert torch.bincount(half.train_labels, minlength=10).min() >= 15  # balanced in expectation (30 each)
    assert not torch.equal(synthetic(train_subset=300, data_seed=1).train_labels, half.train_labels)
    with pytest.raises(DataError, match="train_subset"):
        synthetic(train_subset=601)


# ---- label noise -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_label_noise_changes_exactly_the_rounded_count_to_other_classes(fraction):
    labels = torch.arange(10).repeat(10)  # N = 100: fraction 0.25 gives 25 ...
    for size in (100, 10):  # ... and N = 10 makes 0.25 * 10 = 2.5 round (to even: 2)
        noisy, changed = apply_label_noise(labels[:size], fraction=fraction, num_classes=10, seed=3)
        assert len(changed) == round(fraction * size)
        assert torch.equal(changed, changed.sort().values)
        assert (noisy[changed] != labels[:size][changed]).all()
        unchanged = torch.ones(size, dtype=torch.bool).index_fill_(0, changed, False)
        assert torch.equal(noisy[unchanged], labels[:size][unchanged])
        assert ((noisy >= 0) & (noisy < 10)).all() and noisy.dtype == torch.int64


@pytest.mark.parametrize("fraction, expected", [(0.07, 1), (0.15, 2), (0.35, 4), (0.96, 10),  # floor: 0, 1, 3, 9
                                                (0.05, 0), (0.25, 2), (0.45, 4)])  # halves up: 1, 3, 5
def test_label_noise_count_rounds_to_nearest_with_halves_to_even(fraction, expected):
    """N = 10: exactly round(fraction * 10) labels change: 0.7 -> 1, 9.6 -> 10; halves to even: 0.5 -> 0, 1.5 -> 2."""
    labels = torch.arange(10)
    noisy, changed = apply_label_noise(labels, fraction=fraction, num_classes=10, seed=3)
    assert len(changed) == expected
    assert int((noisy != labels).sum()) == expected


def test_label_noise_is_seeded():
    labels = torch.arange(10).repeat(50)
    first, again, other = (apply_label_noise(labels, fraction=0.3, num_classes=10, seed=seed) for seed in (1, 1, 2))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


# ---- training stream -------------------------------------------------------------------------------

def make_stream(augment: bool, count: int = 50, seed: int = 0) -> TrainingStream:
    images = torch.randint(0, 256, (count, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels = torch.arange(count)  # labels = indices, so a batch reveals which examples it holds
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    return TrainingStream(images, labels, batch_size=16, augment=augment, seed=seed, mean=mean, std=std)


@pytest.mark.parametrize("augment", [False, True])
def test_batches_are_a_pure_function_of_the_iteration(augment):
    stream = make_stream(augment)
    assert stream.iterations_per_epoch == 3  # 50 // 16: the partial batch of 2 is dropped
    out_of_order = {iteration: stream.batch(iteration) for iteration in (7, 0, 4, 7, 2)}
    for iteration, (images, labels) in out_of_order.items():
        fresh_images, fresh_labels = make_stream(augment).batch(iteration)
        assert torch.equal(images, fresh_images) and torch.equal(labels, fresh_labels)
        assert images.dtype == torch.float32 and images.shape == (16, 3, 8, 8)
    assert not torch.equal(make_stream(augment, seed=1).batch(0)[1], stream.batch(0)[1])


def test_each_epoch_is_a_fresh_permutation_without_the_tail():
    stream = make_stream(augment=False)
    epochs = [torch.cat([stream.batch(epoch * 3 + position)[1] for position in range(3)]) for epoch in range(3)]
    for epoch, order in enumerate(epochs):
        assert len(set(order.tolist())) == 48  # every example at most once, 48 = 3 batches of 16
        assert torch.equal(order, stream.epoch_plan(epoch).permutation[:48])
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])


def test_without_augmentation_a_batch_is_the_normalized_examples():
    stream = make_stream(augment=False)
    permutation = stream.epoch_plan(1).permutation
    images, labels = stream.batch(4)  # epoch 1, batch 1
    assert torch.equal(images, normalize(stream.images[permutation[16:32]], stream.mean, stream.std))
    assert torch.equal(labels, permutation[16:32])


def test_crops_and_flips_match_a_per_sample_reference():
    stream = make_stream(augment=True)
    images, labels = stream.batch(5)  # epoch 1, batch 2: positions 32..47 of the epoch's plan
    plan, padding = stream.epoch_plan(1), stream.padding
    for row, position in enumerate(range(32, 48)):
        padded = functional.pad(stream.images[plan.permutation[position]], (padding,) * 4)  # zeros, raw pixels
        top, left = int(plan.crop_rows[position]), int(plan.crop_columns[position])
        crop = padded[:, top:top + 8, left:left + 8]
        crop = crop.flip(-1) if plan.flips[position] else crop
        assert torch.equal(images[row], normalize(crop, stream.mean, stream.std))
    assert set(plan.crop_rows.tolist()) == set(range(9)) and 0.3 < plan.flips.float().mean() < 0.7


def test_normalize_and_the_batch_size_check():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    result = normalize(images, torch.tensor([0.0, 0.2, 0.5]), torch.tensor([1.0, 0.5, 0.25]))
    torch.testing.assert_close(result.flatten(), torch.tensor([0.0, 0.0, 2.0]))
    with pytest.raises(DataError, match="batch_size"):
        TrainingStream(images, torch.zeros(1, dtype=torch.int64), batch_size=2, augment=False, seed=0,
                       mean=torch.zeros(3), std=torch.ones(3))


# ---- torchvision datasets from fabricated files -----------------------------------------------------

CHECKSUMMED = ("cifar10", "cifar100", "svhn")  # torchvision verifies these files' md5 when loading


@pytest.mark.parametrize("name", data.TORCHVISION_DATASETS)
def test_torchvision_datasets_read_the_fabricated_pixels(name, tmp_path, monkeypatch):
    expected = fabricate.FABRICATORS[name](tmp_path, 12, 5)
    if name in CHECKSUMMED:
        with pytest.raises(DataError, match=name):  # honest torchvision: wrong md5 = corrupted
            load_dataset(FakeSettings(dataset=name), data_root=tmp_path, download=False)
        fabricate.skip_md5_checks(monkeypatch)
    dataset = load_dataset(FakeSettings(dataset=name), data_root=tmp_path, download=False)
    for field, tensor in expected.items():
        assert torch.equal(getattr(dataset, field), tensor), field
    assert dataset.train_images.dtype == torch.uint8 and dataset.train_labels.dtype == torch.int64
    assert dataset.num_classes == (100 if name == "cifar100" else 10)
    channels = 1 if "mnist" in name else 3
    assert dataset.mean.shape == (channels,) and dataset.test_images.shape[1] == channels


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_corrupt_files_give_a_data_error(name, tmp_path, monkeypatch):
    fabricate.FABRICATORS[name](tmp_path, 12, 5)
    fabricate.skip_md5_checks(monkeypatch)
    victim = tmp_path / ("cifar-10-batches-py/data_batch_1" if name == "cifar10" else "MNIST/raw/t10k-images-idx3-ubyte")
    victim.write_bytes(victim.read_bytes()[:100])  # truncated, as an interrupted copy would leave it
    with pytest.raises(DataError, match=f"{name} not found \\(or corrupted\\)"):
        load_dataset(FakeSettings(dataset=name), data_root=tmp_path, download=False)


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("name", data.TORCHVISION_DATASETS)
def test_a_missing_dataset_gives_one_line_naming_the_fix(name, download, tmp_path, monkeypatch):
    fabricate.go_offline(monkeypatch)  # this machine is offline anyway; the patch makes failing instant
    with pytest.raises(DataError) as caught:
        load_dataset(FakeSettings(dataset=name), data_root=tmp_path, download=download)
    message = str(caught.value)
    assert name in message and "python -m data download" in message and "\n" not in message
    assert ("could not be downloaded" in message) == download
    assert list(tmp_path.rglob("*")) == []  # nothing left behind, not even the staging folder


def test_download_stages_files_and_skips_present_data(tmp_path, monkeypatch):
    """Files appear only once every split is downloaded; data already present never touches the network."""
    import torchvision.datasets.mnist

    source, root = tmp_path / "source", tmp_path / "root"
    expected = fabricate.fabricate_mnist(source, 12, 5)
    fetched, failing = [], [True]

    def fake_download_and_extract_archive(url, download_root, filename, md5):  # "extracts" by copying
        if failing[0] and filename.startswith("t10k-images"):
            raise urllib.error.URLError("connection reset (test)")  # midway: the train files are fetched
        fetched.append(filename.removesuffix(".gz"))
        (Path(download_root) / fetched[-1]).write_bytes((source / "MNIST/raw" / fetched[-1]).read_bytes())

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", fake_download_and_extract_archive)
    with pytest.raises(DataError, match="could not be downloaded"):
        data.download("mnist", data_root=root)
    assert not root.exists()  # neither the fetched train files, the staging folder, nor the folder we created
    failing[0], fetched[:] = False, []
    data.download("mnist", data_root=root)
    assert [path.name for path in root.iterdir()] == ["MNIST"]
    assert sorted(path.name for path in (root / "MNIST/raw").iterdir()) == sorted(fetched)
    assert torch.equal(load_dataset(FakeSettings(dataset="mnist"), data_root=root, download=False).train_images,
                       expected["train_images"])
    fabricate.go_offline(monkeypatch)
    fetched.clear()
    data.download("mnist", data_root=root)  # already present: succeeds without fetching anything
    assert fetched == []


def test_download_cli_rejects_an_unknown_dataset():
    result = subprocess.run([sys.executable, "-m", "data", "download", "nonsense"], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nonsense" in lines[0] and all(name in lines[0] for name in data.TORCHVISION_DATASETS)
