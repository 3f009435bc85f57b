"""Record facts, not defaults (issue): `analysis.py import` records the training settings it was told and null
(shown `unknown`) for the others — never the lab's lr=0.02 or epochs=20 — and every label, title and the report
say so; an unknown lr is a value of its own when runs are grouped. `normalization=` feeds a model the inputs it was
trained on, in training and in the analysis. Model sizes an arch does not take (a torchvision builder's depth and
width, those a module class's __init__ does not name) stay out of run ids and labels."""

import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import analysis
import data
import models
from conf import Settings, parse_arguments
from conf.global_settings import TRAINING_FACTS
from figures.publish import (
    describe_differences,
    describe_grid,
    run_table,
    swept_words,
    varying_keys,
)
from figures.style import condition_groups, varying
from findings.conditions import condition_labels, run_rows
from folders import ExperimentFolder
from tests.conftest import only_run_dir, read_json
from tests.test_any_model import QUICK, SMALL, fabricated_checkpoints
from training import loop

DATA = ["image_size=16", "synthetic_train_size=256", "synthetic_test_size=64"]  # no training facts: SMALL has two
MODEL = ["arch=convnet", "depth=2", "width=8"]
IMAGENET = "[0.485,0.456,0.406]/[0.229,0.224,0.225]"
MODULE = '''
    from torch import nn


    class SmallCNN(nn.Module):
        """A user's network that fixes its own sizes."""

        def __init__(self, num_classes, input_shape):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))

        def forward(self, x):
            return self.fc(self.conv(x))


    class WiderCNN(SmallCNN):
        """Its __init__ is SmallCNN's (a base class of the same file)."""


    class SizedNet(nn.Module):
        def __init__(self, depth, width, num_classes, input_shape):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], width))
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(self.body(x))


    class TakesAll(nn.Module):
        def __init__(self, **sizes):
            super().__init__()
            self.fc = nn.Sequential(nn.Flatten(), nn.LazyLinear(sizes["num_classes"]))

        def forward(self, x):
            return self.fc(x)
'''


def import_here(capsys, source: Path, out_dir: Path, *words: str) -> tuple[int, str, str]:
    """analysis.py import in this process: (exit code, stdout, stderr)."""
    code = analysis.main(["import", str(source), *words, f"out_dir={out_dir}", "threads=1"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(*settings: Settings) -> pd.DataFrame:
    """Rows as metrics.parquet holds runs' settings (measuring/store.py): a column per setting, lists as JSON text,
    null where a setting is unknown or does not apply."""
    return pd.DataFrame([{"run_id": one.run_id, "metric": "ncc_accuracy",
                          **{key: json.dumps(value) if isinstance(value, list) else value
                             for key, value in one.to_record().items()}} for one in settings])


def imported(**told) -> Settings:
    """An imported run's settings, told `told` (the rest unknown), of its own files."""
    unknown = {name: None for name in TRAINING_FACTS if name not in told}
    return Settings(arch="convnet", depth=2, width=8, imported_from=f"files-{sorted(told.items())}", **told, **unknown)


def test_an_import_records_unknown_training_settings_and_every_label_says_unknown(tmp_path, capsys, one_thread):
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    code, printed, errors = import_here(capsys, source, tmp_path, *MODEL, *DATA)
    assert code == 0, errors
    assert f"recorded unknown (not typed): {', '.join(TRAINING_FACTS)}" in printed
    run = only_run_dir(tmp_path)
    record = read_json(run / "settings.json")["settings"]
    assert {name: record[name] for name in TRAINING_FACTS} == dict.fromkeys(TRAINING_FACTS)  # not lr=0.02, epochs=20
    assert record["depth"] == 2 and record["normalization"] == "dataset"
    # the batch size is unknown, so is the epoch of each checkpoint (its iteration is known)
    epochs = [entry["epoch"] for entry in read_json(run / "manifest.json")["files"].values()]
    assert len(epochs) == 3 and all(math.isnan(epoch) for epoch in epochs)
    assert read_json(run / "manifest.json")["iterations_per_epoch"] is None

    assert analysis.main([f"out_dir={tmp_path}", "threads=1", *QUICK]) == 0
    table = analysis.read_table(tmp_path / "default")
    assert table[["lr", "epochs", "batch_size", "epoch"]].isna().all().all() and table["optimizer"].isna().all()
    ((title, _),) = condition_groups(table[table["metric"] == "ncc_accuracy"])  # a one-condition figure's title
    assert "optimizer=unknown, lr=unknown, epochs=unknown" in title and "0.02" not in title, title
    assert set(condition_labels(run_rows(table)).values()) == {"every run"}
    page = (tmp_path / "default" / "report.html").read_text()
    header = page[page.index("<p class='description'>"):].split("</p>")[0]
    assert "depth=2, width=8, imported; label_noise, augment, loss, optimizer, lr," in header and "unknown" in header
    assert "lr=0.02" not in page and "epochs=20" not in page


def test_an_unknown_setting_is_a_value_of_its_own_when_runs_are_grouped(tmp_path):
    trained, unknown_lr, other_unknown_lr = Settings(arch="convnet", depth=2, width=8), imported(), imported(seed=1)
    told = imported(lr=0.02)
    # two imported runs of unknown lr are not an lr sweep
    twins = table_rows(unknown_lr, other_unknown_lr)
    assert "lr" not in varying(twins, ["lr", "epochs"]) and len(condition_groups(twins)) == 1
    assert "lr" not in varying_keys(run_table_of(tmp_path / "twins", unknown_lr, other_unknown_lr))
    # an imported run of unknown lr never joins a trained run of lr=0.02; its label says unknown
    mixed = table_rows(trained, unknown_lr)
    assert "lr" in varying(mixed, ["lr"]) and len(condition_groups(mixed, plotted=("epochs", "optimizer"))) == 2
    labels = condition_labels(run_rows(mixed))
    assert labels == {trained.run_id: "label_noise=0.0", unknown_lr.run_id: "label_noise=unknown"}
    # told every training setting but its lr: the lr alone tells it from the trained run, and says unknown
    all_but_lr = imported(**{name: getattr(trained, name) for name in TRAINING_FACTS if name != "lr"})
    assert condition_labels(run_rows(table_rows(trained, all_but_lr))) == {trained.run_id: "lr=0.02",
                                                                        all_but_lr.run_id: "lr=unknown"}
    # told lr=0.02, it is a trained run's lr: grouped with it along everything it was told
    assert "lr" not in varying(table_rows(trained, told), ["lr"])
    runs = run_table_of(tmp_path / "mixed", trained, unknown_lr)
    assert "lr" in varying_keys(runs) and "lr (0.02, unknown)" in swept_words(runs)
    assert describe_differences(runs.set_index("run_id").loc[unknown_lr.run_id]).endswith("imported; label_noise, augment, loss, optimizer, lr, momentum, "
                                                       "weight_decay, lr_schedule, lr_milestones, lr_gamma, "
                                                       "warmup_iterations, epochs, batch_size unknown")


def run_table_of(folder: Path, *settings: Settings) -> pd.DataFrame:
    """figures/publish.py's run table of these runs, from their folders (settings.json alone) in `folder`."""
    for one in settings:
        ExperimentFolder(folder).run(one.run_id).prepare(one)
    return run_table(ExperimentFolder(folder).read_runs())


def test_told_facts_and_the_normalization_are_recorded_and_measured_with(tmp_path, capsys, one_thread, monkeypatch):
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    told = ["lr=0.1", "epochs=3", "batch_size=64", f"normalization={IMAGENET}"]
    code, printed, errors = import_here(capsys, source, tmp_path, *MODEL, *DATA, *told)
    assert code == 0, errors
    run = only_run_dir(tmp_path)
    record = read_json(run / "settings.json")["settings"]
    assert (record["lr"], record["epochs"], record["batch_size"], record["normalization"]) == (0.1, 3, 64, IMAGENET)
    assert record["optimizer"] is None and record["weight_decay"] is None  # still not told
    entries = read_json(run / "manifest.json")["files"].values()
    assert sorted((entry["iteration"], entry["epoch"]) for entry in entries) == [(0, 0.0), (16, 4.0), (64, 16.0)]

    used = []  # the mean and std every image the analysis measures is normalised with
    normalize = data.normalize
    monkeypatch.setattr(data, "normalize", lambda images, mean, std: used.append((mean.tolist(), std.tolist()))
                        or normalize(images, mean, std))
    assert analysis.main([f"out_dir={tmp_path}", "threads=1", "figures=false", *QUICK]) == 0  # the table is read
    means, stds = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert used and all(mean == pytest.approx(means) and std == pytest.approx(stds) for mean, std in used)
    table = analysis.read_table(tmp_path / "default")
    assert set(table["lr"]) == {0.1} and set(table["epochs"]) == {3} and set(table["epoch"]) == {0.0, 4.0, 16.0}


def test_training_normalizes_with_the_statistics_a_run_names(tmp_path, tiny_settings, monkeypatch):
    own, execution = tiny_settings()
    named, _ = tiny_settings(f"normalization={IMAGENET}")
    assert own.identity()["normalization"] == "dataset" and named.identity()["normalization"] == IMAGENET
    assert own.run_id != named.run_id  # other inputs, another run
    statistics = data.channel_statistics(loop.load_data(own, execution).train_images)
    assert torch.equal(loop.load_data(own, execution).mean, statistics[0])
    used = []
    normalize = data.stream.normalize
    monkeypatch.setattr(data.stream, "normalize", lambda images, mean, std: used.append((mean.tolist(), std.tolist()))
                        or normalize(images, mean, std))
    assert loop.run(named, tmp_path / "run", execution, handle_signals=False) == "done"
    assert used and all(mean == pytest.approx([0.485, 0.456, 0.406]) and std == pytest.approx([0.229, 0.224, 0.225])
                        for mean, std in used)


@pytest.mark.parametrize("words, needle", [
    (["normalization=[0.5]/[0.25]"], "normalization=[0.5]/[0.25] has 1 value(s) per list, but dataset=synthetic has "
                                     "3 channel(s)"),
    (["normalization=[0.5,0.5,0.5]/[0.2,0,0.2]"], "has a std <= 0"),
    (["normalization=0.5/0.2"], "cannot be read; accepted: dataset, or [MEAN,...]/[STD,...]"),
    (["label_noise=0.2"], "import: label_noise=0.2 cannot be honoured: which training labels were replaced is not known"),
])
def test_bad_facts_are_refused_in_one_line_and_write_nothing(tmp_path, capsys, words, needle):
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    code, printed, errors = import_here(capsys, source, tmp_path / "out", *MODEL, *DATA, *words)
    assert code == 2 and needle in errors and len(errors.strip().splitlines()) == 1, errors
    assert not (tmp_path / "out").exists()


def test_a_torchvision_run_carries_no_depth_or_width(tmp_path, capsys, one_thread):
    settings = Settings(arch="torchvision:mobilenet_v3_small", depth=8, width=64)
    assert settings.run_id == Settings(arch="torchvision:mobilenet_v3_small").run_id
    assert settings.run_id.startswith("mobilenet_v3_small-synthetic-s0-")
    assert {"depth", "width", "batch_norm", "patch_size", "heads"}.isdisjoint(settings.identity())
    assert settings.depth is None and settings.width is None
    # imported with a depth typed: said to be ignored, recorded as not applying
    source = tmp_path / "elsewhere"
    source.mkdir()
    model = models.build(Settings(arch="torchvision:mobilenet_v3_small"), input_shape=(3, 16, 16), num_classes=10)
    torch.save(model.module.state_dict(), source / "step_5.pt")
    code, printed, errors = import_here(capsys, source, tmp_path, "arch=torchvision:mobilenet_v3_small", "depth=8",
                                        *DATA, "lr=0.1")
    assert code == 0, errors
    assert ("import: depth ignored: arch=torchvision:mobilenet_v3_small does not take it (recorded as not applying)"
            in printed)
    run = only_run_dir(tmp_path)
    assert run.name.startswith("mobilenet_v3_small-synthetic-s0-")
    record = read_json(run / "settings.json")["settings"]
    assert record["depth"] is None and record["width"] is None and record["lr"] == 0.1
    runs = run_table(ExperimentFolder(tmp_path / "default").read_runs())
    assert describe_grid("default", runs) == ("one run (image_size=16, synthetic_train_size=256, synthetic_test_size=64, "
                                              "arch=torchvision:mobilenet_v3_small, lr=0.1, imported; label_noise, "
                                              "augment, loss, optimizer, momentum, weight_decay, lr_schedule, "
                                              "lr_milestones, lr_gamma, warmup_iterations, epochs, batch_size unknown)")
    # beside a convnet: its label and its panel's title name no depth or width
    mobilenet, shallow, deep = (Settings(arch="torchvision:mobilenet_v3_small"), Settings(arch="convnet", depth=2),
                                Settings(arch="convnet", depth=4))
    rows = table_rows(mobilenet, shallow, deep)
    assert condition_labels(run_rows(rows)) == {mobilenet.run_id: "arch=torchvision:mobilenet_v3_small",
                                             shallow.run_id: "depth=2", deep.run_id: "depth=4"}
    titles = [title for title, _ in condition_groups(rows, plotted=("depth",))]
    assert titles == ["arch=convnet, width=32, batch_norm=True", "arch=torchvision:mobilenet_v3_small"], titles


@pytest.fixture(scope="module")
def user_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "nets.py"
    path.write_text(textwrap.dedent(MODULE))
    return path


@pytest.mark.parametrize("class_name, prefix, sizes", [
    ("SmallCNN", "smallcnn-synthetic-s0-", {}),
    ("WiderCNN", "widercnn-synthetic-s0-", {}),
    ("SizedNet", "sizednet3-w16-synthetic-s0-", {"depth": 3, "width": 16}),
    ("TakesAll", "takesall3-w16-synthetic-s0-", {"depth": 3, "width": 16, "batch_norm": True, "patch_size": 4, "heads": 4}),
])
def test_a_module_class_keeps_the_sizes_its_init_takes(user_file, class_name, prefix, sizes):
    (settings,) = parse_arguments([f"arch=module:{user_file}:{class_name}", "depth=3", "width=16", *SMALL]).grid
    assert settings.run_id.startswith(prefix), settings.run_id
    taken = {name: getattr(settings, name) for name in ("depth", "width", "batch_norm", "patch_size", "heads")
             if getattr(settings, name) is not None}
    assert taken == sizes
    assert Settings.from_record(settings.to_record()).run_id == settings.run_id  # a record says it again
    model = models.build(settings, input_shape=(3, 16, 16), num_classes=10)  # built with the sizes it takes only
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_no_training_setting_is_unknown_in_a_run_trained_here():
    from conf import SettingsError

    with pytest.raises(SettingsError, match="^lr unknown \\(null\\) in a run trained here"):
        Settings(lr=None)
    assert Settings(lr=None, imported_from="files").unknown() == ("lr",)
