"""Every dataset format the project accepts goes through train.py, then analysis.py with default analysis options.

One tiny run per format (a few hundred fabricated images in torchvision's own on-disk layout, one
epoch of a one-block network), shared by the tests of that format: the grayscale ones (MNIST,
Fashion-MNIST) once stopped the analysis ("colour dominance needs RGB images").
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest

import analysis
import train
from folders import ExperimentFolder
from tests import fabricate

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

TRAIN_EXAMPLES, TEST_EXAMPLES = 200, 50
RUN = ["arch=convnet", "depth=1", "width=4", "epochs=1", "batch_size=100", "threads=1", "progress=off",
       "log_level=WARNING", "download=false"]
RGB, GRAYSCALE = ("cifar10", "cifar100", "svhn", "synthetic"), ("mnist", "fashionmnist")
DEFAULT_TASK = {**dict.fromkeys(RGB, "colour_dominance"), **dict.fromkeys(GRAYSCALE, "brightness")}


def fabricate_dataset(name: str, root) -> None:
    if name != "synthetic":  # embedded: nothing on disk
        fabricate.FABRICATORS[name](root, TRAIN_EXAMPLES, TEST_EXAMPLES)


@pytest.fixture(scope="module")
def md5_free():
    """skip_md5_checks for the whole module (fabricated CIFAR and SVHN files cannot match torchvision's sums)."""
    with pytest.MonkeyPatch.context() as patch:
        fabricate.skip_md5_checks(patch)
        fabricate.go_offline(patch)
        yield


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, md5_free):
    """Per format, on first use: (out_dir, data_root) of one trained tiny run, then analysed with defaults."""
    made = {}

    def make(name: str):
        if name not in made:
            out_dir, data_root = tmp_path_factory.mktemp(f"out_{name}"), tmp_path_factory.mktemp(f"data_{name}")
            fabricate_dataset(name, data_root)
            words = [f"dataset={name}", f"out_dir={out_dir}", f"data_root={data_root}", *RUN,
                     f"synthetic_train_size={TRAIN_EXAMPLES}", f"synthetic_test_size={TEST_EXAMPLES}"]
            assert train.main(words) == 0, name
            assert analysis.main([f"out_dir={out_dir}", f"data_root={data_root}", "threads=1", "progress=off",
                                  "log_level=WARNING", "download=false"]) == 0, name
            made[name] = out_dir, data_root
        return made[name]

    return make


def table_of(out_dir) -> pd.DataFrame:
    return pd.read_parquet(ExperimentFolder.of(out_dir, "default").table_path)


@pytest.mark.parametrize("name", [*RGB, *GRAYSCALE])
def test_each_format_trains_and_is_analysed_with_default_options(name, trained_runs):
    out_dir, _ = trained_runs(name)
    table = table_of(out_dir)
    for metric in ("ncc_accuracy", "transfer_accuracy", "reconstruction_mse", "classifier_accuracy"):
        rows = table[table["metric"] == metric]
        assert len(rows) and rows["value"].notna().all(), (name, metric)
    assert set(table[table["metric"] == "ncc_accuracy"]["iteration"]) == {0, 1, 2}
    transfer = table[table["metric"] == "transfer_accuracy"]
    assert set(transfer["transfer_task"]) == {DEFAULT_TASK[name]}  # auto: colour for RGB, brightness for grayscale
    assert transfer["value"].between(0, 1).all()
    report = ExperimentFolder.of(out_dir, "default").report_path.read_text()
    assert f"<td>{DEFAULT_TASK[name]}</td>" in report  # the report says which task each run's probe read


def _analyse_again(out_dir, data_root, *words: str) -> pd.DataFrame:
    """The rows of the question `words` (analysis options) asks, after measuring it."""
    assert analysis.main([f"out_dir={out_dir}", f"data_root={data_root}", "threads=1", "progress=off",
                          "log_level=INFO", "download=false", "figures=false", *words]) == 0
    return analysis.read_table(ExperimentFolder.of(out_dir, "default").path, " ".join(words))


def test_a_task_that_does_not_apply_is_skipped_with_its_reason(trained_runs, caplog):
    out_dir, data_root = trained_runs("mnist")
    with caplog.at_level(logging.WARNING, logger="analysis"):
        table = _analyse_again(out_dir, data_root, "transfer_task=colour_dominance")
    assert "transfer_accuracy" not in set(table["metric"]) and "ncc_accuracy" in set(table["metric"])
    reason = "none (colour_dominance does not apply to mnist: it needs 3 colour channels (R, G, B) and mnist has 1)"
    assert set(table["transfer_task"]) == {reason}
    assert reason in caplog.text


def test_the_other_datasets_classes_are_read_when_on_disk_and_skipped_when_not(trained_runs, caplog):
    out_dir, data_root = trained_runs("mnist")
    with caplog.at_level(logging.WARNING, logger="analysis"):
        table = _analyse_again(out_dir, data_root, "transfer_task=other_dataset_classes")
    assert "transfer_accuracy" not in set(table["metric"])
    (note,) = set(table["transfer_task"])
    assert note.startswith("none (other_dataset_classes needs fashionmnist: ") and note in caplog.text
    fabricate.fabricate_fashionmnist(data_root, TRAIN_EXAMPLES, TEST_EXAMPLES, seed=7)  # LearnPhase's pair of MNIST
    # A skip for missing data is not a result: once the data is there, the same command measures it
    # (only the transfer probe: every other metric's cells are fresh).
    table = _analyse_again(out_dir, data_root, "transfer_task=other_dataset_classes")
    transfer = table[table["metric"] == "transfer_accuracy"]
    assert len(transfer) and set(transfer["transfer_task"]) == {"other_dataset_classes on fashionmnist images"}
    # The input layer's probe on 10 random classes of 200 random images: a ridge fit to 784 pixels
    # separates the training split better than chance (0.1) at least, so it really read the labels.
    assert transfer[(transfer["layer"] == "input") & (transfer["split"] == "train")]["value"].min() > 0.2
