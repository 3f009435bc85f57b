"""Eval mode against batch statistics: every metric is measured in eval mode (BatchNorm on its running statistics);
`classifier_accuracy_batch_statistics` measures the test accuracy with each batch's own statistics on a copy of
the model, and the report names a run whose eval-mode accuracy lags it by more than EVAL_MODE_MARGIN."""

from __future__ import annotations

import re
import textwrap

import pandas as pd
import pytest
import torch
import torch.nn.functional as functional

import analysis
import data
import models
from conf import Settings
from conf.analysis import Analysis
from figures.report import EVAL_MODE_MARGIN, eval_mode_lags, run_cell
from metrics import engine
from tests.conftest import tiny_words
from tests.fabricate import class_images, keyed, tiny_mlp

BATCH_STATISTICS = "classifier_accuracy_batch_statistics"
OPTIONS = Analysis(analysis_batch_size=50, probe_dimensions=32, heldout_fraction=0.25)


def trained(model: torch.nn.Module, train: engine.SplitData, steps: int = 100) -> torch.nn.Module:
    """`model` after `steps` seeded SGD steps in train mode (BatchNorm's running statistics follow its batches),
    returned in eval mode."""
    images = data.normalize(train.images, train.mean, train.std)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(train.labels), (32,), generator=generator)
        loss = functional.cross_entropy(model(images[rows]), train.labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def running_statistics_shifted(model: torch.nn.Module) -> torch.nn.Module:
    """Each BatchNorm's running mean moved by five of its running standard deviations: what running statistics
    left far behind the weights look like to eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean += 5 * module.running_var.sqrt()
    return model


@pytest.fixture(scope="module")
def splits():
    return class_images(300, 3, seed=0), class_images(150, 3, seed=1)


def accuracies(model, splits) -> tuple[list[dict], dict]:
    """(engine rows, {(layer, metric, split): value}) of the eval-mode and the batch-statistics accuracy."""
    rows = engine.measure(model, *splits, 3, OPTIONS, 0, metrics=["classifier_accuracy", BATCH_STATISTICS])
    return rows, keyed(rows)


def as_table(rows: list[dict], run_id: str, iteration: int) -> pd.DataFrame:
    return pd.DataFrame(rows).assign(run_id=run_id, iteration=iteration)


def test_running_statistics_far_off_fail_eval_mode_not_batch_statistics_and_the_run_is_flagged(splits):
    model = running_statistics_shifted(trained(tiny_mlp(), splits[0]))
    rows, values = accuracies(model, splits)
    eval_mode, batch = values["logits", "classifier_accuracy", "test"], values["logits", BATCH_STATISTICS, "test"]
    assert eval_mode == pytest.approx(1 / 3) and batch == 1.0  # one class for every example, against all right
    (row,) = [row for row in rows if row["metric"] == BATCH_STATISTICS]
    assert (row["layer"], row["split"], row["examples"]) == ("logits", "test", 150)  # three batches of 50
    assert eval_mode_lags(as_table(rows, "lagging", 256)) == {
        "lagging": "eval mode 0.33 vs batch statistics 1.00 at iteration 256: BatchNorm running statistics lag "
                   "(momentum); the metrics are eval mode"}


def test_a_healthy_model_is_not_flagged_and_one_without_batch_norm_has_its_eval_accuracy(splits):
    rows, values = accuracies(trained(tiny_mlp(), splits[0]), splits)
    assert values["logits", "classifier_accuracy", "test"] == values["logits", BATCH_STATISTICS, "test"] == 1.0
    assert eval_mode_lags(as_table(rows, "healthy", 256)) == {}
    torch.manual_seed(0)
    untrained = models.build(Settings(arch="mlp", depth=1, width=8, batch_norm=False), input_shape=(3, 4, 4),
                             num_classes=3).eval()  # untrained: not every answer right, so the equality says something
    rows, values = accuracies(untrained, splits)
    assert values["logits", BATCH_STATISTICS, "test"] == values["logits", "classifier_accuracy", "test"] < 1.0


def test_the_widest_gap_beyond_the_margin_is_named_and_a_gap_within_it_is_not():
    def checkpoint(iteration, eval_mode, batch):
        return [{"run_id": "run", "iteration": iteration, "layer": "logits", "metric": metric, "split": "test",
                 "value": value} for metric, value in (("classifier_accuracy", eval_mode), (BATCH_STATISTICS, batch))]

    within = pd.DataFrame(checkpoint(64, 0.5, 0.5 + EVAL_MODE_MARGIN - 0.01))
    assert eval_mode_lags(within) == {}
    table = pd.DataFrame([*checkpoint(64, 0.2, 0.5), *checkpoint(128, 0.09, 0.92), *checkpoint(256, 0.8, 0.81)])
    assert eval_mode_lags(table) == {"run": "eval mode 0.09 vs batch statistics 0.92 at iteration 128 (the widest of 2 "
                                            "checkpoints this far apart): BatchNorm running statistics lag (momentum); "
                                            "the metrics are eval mode"}


def test_measuring_with_batch_statistics_leaves_the_model_and_every_other_value_bit_identical(splits):
    model = running_statistics_shifted(trained(tiny_mlp(), splits[0]))
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    others = [name for name in engine.applicable(engine.METRICS, None, OPTIONS) if name != BATCH_STATISTICS]
    alone = keyed(engine.measure(model, *splits, 3, OPTIONS, 0, metrics=others))
    together = keyed(engine.measure(model, *splits, 3, OPTIONS, 0, metrics=[*others, BATCH_STATISTICS]))
    assert together.pop(("logits", BATCH_STATISTICS, "test")) == 1.0
    assert {key: value.hex() for key, value in together.items()} == {key: value.hex() for key, value in alone.items()}
    assert all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())  # running stats too
    assert not model.training and not any(module.training for module in model.modules())


USER_MODULE = '''
    from torch import nn


    def block(channels, width, stride, momentum):
        return nn.Sequential(nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                             nn.BatchNorm2d(width, momentum=momentum), nn.ReLU())


    class LaggingNet(nn.Module):
        """Two convs whose BatchNorm keeps 0.1 % of each batch (momentum 0.001): after 128 steps its running
        statistics have moved 12 % of the way from their start, as a MobileNetV3's (momentum 0.01) lag a longer run."""

        momentum = 0.001

        def __init__(self, width, num_classes, input_shape):
            super().__init__()
            self.conv1 = block(input_shape[0], width, 1, self.momentum)
            self.conv2 = block(width, width, 2, self.momentum)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(width, num_classes))

        def forward(self, x):
            return self.fc(self.pool(self.conv2(self.conv1(x))))


    class HealthyNet(LaggingNet):
        momentum = 0.1  # BatchNorm's default
'''
TRAINING = ["synthetic_train_size=512", "synthetic_test_size=128", "epochs=8", "synthetic_classes=4", "width=16"]


def test_the_report_names_the_lagging_run_with_its_checkpoint_and_both_accuracies(tmp_path, in_process):
    """Two nets that differ in their BatchNorm momentum alone, trained and analysed as a user would: the report's
    Findings name the one whose running statistics lag, with the numbers of the table, and not the other."""
    module = tmp_path / "batch_norm_nets.py"
    module.write_text(textwrap.dedent(USER_MODULE))
    out_dir = tmp_path / "out"
    archs = f"arch=module:{module}:LaggingNet,module:{module}:HealthyNet"
    result = in_process("train.py", [*tiny_words(out_dir, *TRAINING), archs])
    assert result.returncode == 0, result.stderr
    result = in_process("analysis.py", [f"out_dir={out_dir}", "threads=1", "log_level=WARNING",
                                     f"metrics=classifier_accuracy,{BATCH_STATISTICS}"])
    assert result.returncode == 0, result.stderr
    table = analysis.read_table(out_dir / "default")
    lagging, healthy = (next(run for run in table["run_id"].unique() if run.startswith(prefix))
                        for prefix in ("laggingnet", "healthynet"))
    page = (out_dir / "default" / "report.html").read_text()
    line = re.search(re.escape(run_cell(lagging)) + r": eval mode (\S+) vs batch statistics (\S+) at iteration (\d+)",
                     page)
    assert line, page[page.index("<h2>Findings</h2>"):page.index("<h2>Figures</h2>")]
    eval_mode, batch, iteration = float(line[1]), float(line[2]), int(line[3])
    checkpoint = table[(table["run_id"] == lagging) & (table["iteration"] == iteration) & (table["split"] == "test")]
    values = checkpoint.set_index("metric")["value"]
    assert (eval_mode, batch) == (round(values["classifier_accuracy"], 2), round(values[BATCH_STATISTICS], 2))
    assert batch - eval_mode > EVAL_MODE_MARGIN
    assert "Runs measured in eval mode far below their batch statistics (1)" in page
    assert run_cell(healthy) not in page[page.index("<h2>Findings</h2>"):page.index("<h2>Figures</h2>")]
