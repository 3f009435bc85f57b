"""Transfer tasks (data/transfer.py): their label rules, where they apply, and how the engine reads them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import data
from conf.analysis import Analysis
from data.transfer import (PARTNERS, TRANSFER_TASKS, brightness_labels, brightness_terciles, choose_task,
                           colour_dominance_labels)
from metrics import engine
from metrics.transfer import bind

# Channel statistics under which the normalised image and the raw one disagree on the dominant colour.
MEAN = torch.tensor([0.6, 0.2, 0.5])
STD = torch.tensor([0.1, 0.2, 0.4])


def learnphase_rule(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """LearnPhase's trainTask=0 as its code reads it (mainMet.py): argmax over channels of the summed
    *normalised* input image, the input as the network sees it."""
    return data.normalize(images, mean, std).sum(dim=(-1, -2)).argmax(dim=1)


def filled(red: int, green: int, blue: int, size: int = 2) -> torch.Tensor:
    return torch.tensor([red, green, blue], dtype=torch.uint8).view(3, 1, 1).expand(3, size, size)


def crafted_images() -> torch.Tensor:
    return torch.stack([
        filled(153, 77, 0),  # raw: red; normalised: red sits at its mean (0), green at +0.5 std -> green
        filled(0, 0, 255),  # blue in both
        filled(204, 51, 153),  # raw: red; normalised: red +2, green 0, blue +0.25 -> red
        filled(153, 10, 153),  # raw: a red/blue tie -> red; normalised: red 0.0, blue +0.25 -> blue
        filled(102, 0, 102),  # raw tie -> red; normalised: red -2, green -1, blue -0.25 -> blue
    ])


def test_colour_dominance_is_learnphases_rule_on_the_normalised_image():
    images = crafted_images()
    raw = colour_dominance_labels(images)
    normalised = colour_dominance_labels(images, MEAN, STD)
    assert raw.tolist() == [0, 2, 0, 0, 0]
    assert normalised.tolist() == [1, 2, 0, 2, 2]
    assert torch.equal(normalised, learnphase_rule(images, MEAN, STD))
    random_images = torch.randint(0, 256, (500, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(colour_dominance_labels(random_images, MEAN, STD), learnphase_rule(random_images, MEAN, STD))
    assert not torch.equal(colour_dominance_labels(random_images, MEAN, STD), colour_dominance_labels(random_images))


def test_exact_ties_go_to_the_first_channel():
    grey = torch.stack([filled(100, 100, 100), filled(7, 7, 7)])
    same = torch.full((3,), 0.4), torch.full((3,), 0.2)
    assert colour_dominance_labels(grey).tolist() == [0, 0]
    assert colour_dominance_labels(grey, *same).tolist() == [0, 0]


def test_the_registered_colour_tasks_are_the_normalised_and_the_raw_rule():
    images, labels = crafted_images(), torch.zeros(5, dtype=torch.int64)
    normalised = TRANSFER_TASKS["colour_dominance"].labeller(images, labels, MEAN, STD)
    raw = TRANSFER_TASKS["colour_dominance_raw"].labeller(images, labels, MEAN, STD)
    assert normalised(images, labels).tolist() == [1, 2, 0, 2, 2]
    assert raw(images, labels).tolist() == [0, 2, 0, 0, 0]  # the pixels as stored
    for name in ("colour_dominance", "colour_dominance_raw"):
        assert TRANSFER_TASKS[name].classes(100) == 3
    with pytest.raises(ValueError, match="needs RGB"):
        colour_dominance_labels(torch.zeros(2, 1, 3, 3, dtype=torch.uint8))


def test_brightness_terciles_come_from_the_training_split_and_balance_it():
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (300, 1, 6, 6), dtype=torch.uint8, generator=generator)
    terciles = brightness_terciles(train)
    labels = brightness_labels(train, terciles)
    assert torch.bincount(labels, minlength=3).tolist() == [100, 100, 100]
    sums = train.to(torch.int64).sum(dim=(1, 2, 3))
    for darker, brighter in ((0, 1), (1, 2)):  # every image of a class is darker than every one of the next
        assert sums[labels == darker].max() < sums[labels == brighter].min()
    steps = torch.arange(9, dtype=torch.uint8).view(9, 1, 1, 1).expand(9, 1, 2, 2) * 30  # 0, 30, ..., 240
    assert brightness_labels(steps, brightness_terciles(steps)).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    test = torch.stack([torch.full((1, 2, 2), 255, dtype=torch.uint8), torch.zeros(1, 2, 2, dtype=torch.uint8),
                        torch.full((1, 2, 2), 100, dtype=torch.uint8)])
    assert brightness_labels(test, brightness_terciles(steps)).tolist() == [2, 0, 1]  # the training split's thresholds


def test_brightness_reads_every_channel_of_an_rgb_image():
    images = torch.stack([filled(0, 0, 0), filled(255, 0, 0), filled(255, 255, 0), filled(255, 255, 255)])
    task = TRANSFER_TASKS["brightness"]
    assert task.refusal("cifar10", 3) is None and task.classes(10) == 3
    labels = task.labeller(images, torch.zeros(4, dtype=torch.int64), MEAN, STD)(images, None)
    assert labels.tolist() == [0, 0, 1, 2]  # sums 0, 1020, 2040, 3060: (255, 0, 0) is darker than (255, 255, 0)


@pytest.mark.parametrize("dataset, channels, expected", [
    ("cifar10", 3, "colour_dominance"), ("svhn", 3, "colour_dominance"), ("synthetic", 3, "colour_dominance"),
    ("mnist", 1, "brightness"), ("fashionmnist", 1, "brightness"),
])
def test_auto_chooses_colour_for_rgb_and_brightness_for_grayscale(dataset, channels, expected):
    choice = choose_task("auto", dataset, channels)
    assert choice.task.name == expected and choice.source == "own" and choice.describe() == expected


def test_a_task_that_does_not_apply_says_why():
    choice = choose_task("colour_dominance", "mnist", 1)
    assert choice.task is None
    assert choice.describe() == ("none (colour_dominance does not apply to mnist: it needs 3 colour channels "
                                 "(R, G, B) and mnist has 1)")
    assert choose_task("colour_dominance_raw", "fashionmnist", 1).task is None
    assert choose_task("brightness", "cifar10", 3).task.name == "brightness"
    assert choose_task("none", "cifar10", 3).describe() == "none (transfer_task=none)"
    svhn = choose_task("other_dataset_classes", "svhn", 3)
    assert svhn.task is None and "svhn has no other dataset to read" in svhn.reason
    with pytest.raises(ValueError, match="unknown transfer task"):
        choose_task("loudness", "cifar10", 3)


def test_other_dataset_classes_reads_learnphases_partner_dataset():
    assert PARTNERS == {"fashionmnist": "mnist", "mnist": "fashionmnist", "cifar10": "cifar100",
                        "cifar100": "cifar10", "synthetic": "synthetic"}
    for dataset, partner in PARTNERS.items():
        choice = choose_task("other_dataset_classes", dataset, 1 if "mnist" in dataset else 3)
        assert choice.source == partner and choice.describe() == f"other_dataset_classes on {partner} images"
    named = choose_task("other_dataset_classes", "svhn", 3, transfer_dataset="cifar10")  # the user names it
    assert named.task is not None and named.source == "cifar10"
    assert choose_task("brightness", "mnist", 1, transfer_dataset="fashionmnist").source == "fashionmnist"


def splits(count: int = 40, classes: int = 7, channels: int = 3):
    generator = torch.Generator().manual_seed(1)
    made = []
    for _ in range(2):
        images = torch.randint(0, 256, (count, channels, 4, 4), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, classes, (count,), generator=generator)
        made.append(engine.SplitData(images, labels, MEAN[:channels], STD[:channels]))
    return made


def test_bind_labels_both_splits_with_the_task_fitted_on_the_training_split():
    train, test = splits(channels=1)
    probe = bind(TRANSFER_TASKS["other_dataset_classes"], train, test, dataset_classes=100, source="cifar100")
    assert probe.num_classes == 100 and probe.source == "cifar100" and not probe.own
    assert torch.equal(probe.train.transfer_labels, train.labels) and torch.equal(probe.test.transfer_labels, test.labels)
    brightness = bind(TRANSFER_TASKS["brightness"], train, test, dataset_classes=10)
    terciles = brightness_terciles(train.images)
    assert brightness.own and brightness.num_classes == 3
    assert torch.equal(brightness.test.transfer_labels, brightness_labels(test.images, terciles))
    assert torch.equal(brightness.train.images, train.images) and train.transfer_labels is None  # copies, labelled


def test_the_conf_choices_are_the_registered_tasks():
    choices = dataclasses.fields(Analysis)
    (field,) = [item for item in choices if item.name == "transfer_task"]
    assert field.metadata["choices"] == ("auto", "none", *TRANSFER_TASKS)
    assert Analysis().transfer_task == "auto"


def tiny_model(channels: int, num_classes: int):
    import models
    from conf import Settings

    settings = Settings(arch="mlp", depth=1, width=8)
    torch.manual_seed(0)
    return models.build(settings, input_shape=(channels, 4, 4), num_classes=num_classes)


@pytest.mark.parametrize("task, classes", [("brightness", 3), ("other_dataset_classes", 7)])
def test_the_engine_fits_the_probe_with_the_tasks_number_of_classes(task, classes, one_thread):
    train, test = splits(channels=1)
    options = Analysis(probe_dimensions=8, heldout_fraction=0.25)
    probe = bind(TRANSFER_TASKS[task], train, test, dataset_classes=7)
    layers = engine.collect(tiny_model(1, 7), train, test, 7, options, 0, probe)
    for layer in layers.values():
        assert layer.maps["transfer"].weights.shape[1] == classes
        assert layer.maps["transfer"].count == {"train": 40, "test": 40}
    rows = engine.measure(tiny_model(1, 7), train, test, 7, options, 0, probe)
    assert {row["split"] for row in rows if row["metric"] == "transfer_accuracy"} == {"train", "test"}
    without = engine.measure(tiny_model(1, 7), train, test, 7, options, 0, None)  # no task: no transfer rows
    assert "transfer_accuracy" not in {row["metric"] for row in without}
    assert len(without) == len(rows) - 2 * len(layers)


def test_the_synthetic_colour_cast_keeps_the_normalised_task_balanced_and_free_of_the_class():
    """data/synthetic.py draws the three channel gains alike and independently of the class, so colour
    dominance of the normalised image (the default task) stays balanced and says nothing of the class."""
    from data.synthetic import make_synthetic

    images, labels, _, _ = make_synthetic(num_classes=10, image_size=16, seed=0, train_size=3000, test_size=10)
    colours = colour_dominance_labels(images, *data.channel_statistics(images))
    overall = torch.bincount(colours, minlength=3).double() / len(colours)
    assert overall.min() >= 0.25, overall
    for label in range(10):
        within = colours[labels == label]  # ~300 each: a share's standard error is ~0.027
        assert (torch.bincount(within, minlength=3).double() / len(within) - overall).abs().max() < 0.12
