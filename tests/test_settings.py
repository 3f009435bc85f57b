"""Settings, sweeps, run identity and every validation error (conf/)."""

import dataclasses

import pytest

from conf import DATASETS, EXPERIMENTS, Cluster, Execution, Settings, SettingsError, help_text, parse_arguments
from conf.cli import split_sweep
from conf.global_settings import SYNTHETIC_ONLY
from conf.plasticity import PLASTICITY_FIELDS


def test_defaults_form_one_run_of_the_default_experiment():
    plan = parse_arguments([])
    assert plan.experiment == "default"
    assert plan.grid == (Settings(),)
    assert plan.execution == Execution()


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().depth = 3


def test_values_are_parsed_to_their_types():
    plan = parse_arguments(["depth=3", "lr=0.1", "augment=true", "loss=mse", "lr_milestones=[60,120,160]",
                            "checkpoint_extra=[]", "device=cpu", "out_dir=/x", "epochs=200"])
    (settings,) = plan.grid
    assert settings.depth == 3 and settings.lr == 0.1 and settings.augment is True and settings.loss == "mse"
    assert settings.lr_milestones == (60, 120, 160) and settings.checkpoint_extra == ()
    assert plan.execution.device == "cpu" and plan.execution.out_dir == "/x"


def test_sweeps_form_a_cartesian_grid_in_command_line_order():
    plan = parse_arguments("arch=convnet depth=3,5,8 width=64 label_noise=0,0.2 seed=0,1".split())
    assert len(plan.grid) == 12
    assert [(s.depth, s.label_noise, s.seed) for s in plan.grid[:4]] == [(3, 0.0, 0), (3, 0.0, 1), (3, 0.2, 0), (3, 0.2, 1)]
    assert len({settings.run_id for settings in plan.grid}) == 12


def test_list_values_can_be_swept():
    assert split_sweep("[60,120],[100]") == ["[60,120]", "[100]"]
    plan = parse_arguments(["epochs=200", "lr_milestones=[60,120],[100]"])
    assert [settings.lr_milestones for settings in plan.grid] == [(60, 120), (100,)]


def test_duplicate_grid_points_collapse():
    assert len(parse_arguments(["depth=3,3,4"]).grid) == 2


def test_run_id_is_readable_and_a_hash_of_every_setting():
    settings = Settings(arch="mlp", depth=3, width=64, seed=2)
    assert settings.run_id.startswith("mlp3-w64-synthetic-s2-")
    assert Settings(arch="mlp", depth=3, width=64, seed=2).run_id == settings.run_id
    for name, value in [("lr", 0.01), ("weight_decay", 0.0), ("label_noise", 0.1), ("augment", True)]:
        assert dataclasses.replace(settings, **{name: value}).run_id != settings.run_id, name


def test_the_run_id_holds_every_setting_that_applies_to_the_run():
    """Only what does not apply to a run stays out of its id: the plasticity settings of a scratch run (it has no
    stage 1), the synthetic-only ones of a real dataset, the sizes its arch does not take, module_sha256 of an arch
    that is no module, imported_from of a run trained here. Every other setting is in it, at its default too."""
    every = {item.name for item in dataclasses.fields(Settings)}
    not_applying = {"module_sha256", "imported_from", "patch_size", "heads"}  # a convnet takes no ViT sizes
    scratch = Settings()
    assert set(scratch.identity()) == every - not_applying - set(PLASTICITY_FIELDS)
    warm = Settings(pretrain_fraction=0.5, pretrain_epochs=2)
    assert set(warm.identity()) == every - not_applying
    assert warm.identity()["pretrain_dataset"] == "same" and warm.identity()["stages"] == 1
    real = Settings(dataset="cifar10")
    assert set(real.identity()) == every - not_applying - set(PLASTICITY_FIELDS) - set(SYNTHETIC_ONLY)
    assert scratch.identity()["normalization"] == "dataset"
    assert Settings(normalization="[0.5,0.5,0.5]/[0.25,0.25,0.25]").run_id != scratch.run_id


def test_execution_options_never_enter_the_run_id():
    one = parse_arguments(["depth=3", "device=cpu", "out_dir=a", "threads=1"]).grid[0]
    two = parse_arguments(["depth=3", "out_dir=b"]).grid[0]
    assert one.run_id == two.run_id


def test_synthetic_only_settings_do_not_split_real_dataset_runs():
    one, two = Settings(dataset="cifar10", image_size=16), Settings(dataset="cifar10", image_size=32)
    assert one.run_id == two.run_id
    assert Settings(image_size=16).run_id != Settings(image_size=32).run_id


def test_experiment_presets_and_overrides():
    demo = parse_arguments(["experiment=demo"])
    # 4 collapse runs + (scratch, 2 warm starts) x 2 seeds + 5 transfer starts x (fine-tuned, head only)
    assert demo.experiment == "demo" and len(demo.grid) == 4 + 6 + 10
    overridden = parse_arguments(["experiment=demo", "depth=3"])
    assert {settings.depth for settings in overridden.grid} == {3} and len(overridden.grid) == 2 + 6 + 10
    assert "default" in EXPERIMENTS and "demo" in EXPERIMENTS


@pytest.mark.parametrize("words, needle", [
    (["dpeth=3"], "unknown key 'dpeth'; did you mean 'depth'"),
    (["nonsense"], "write key=value"),
    (["experiment=../nope"], "experiment='../nope' is no folder name; accepted: a preset (default, demo"),
    (["depth=0"], "depth=0 is out of range; accepted: an integer >= 1"),
    (["width=0"], "width=0 is out of range"),
    (["width=abc"], "width='abc' cannot be read; accepted: an integer"),
    (["depth=2.5"], "depth='2.5' cannot be read"),
    (["lr=0"], "lr=0.0 is out of range; accepted: a finite number > 0.0"),
    (["lr=-1"], "lr=-1.0 is out of range"),
    (["lr=nan"], "lr=nan is not finite"),
    (["lr=inf"], "lr=inf is not finite"),
    (["label_noise=1.5"], "label_noise=1.5 is out of range; accepted: a finite number >= 0.0 and <= 1.0"),
    (["label_noise=-0.1"], "label_noise=-0.1 is out of range"),
    (["momentum=1"], "momentum=1.0 is out of range"),
    (["weight_decay=-1e-4"], "weight_decay=-0.0001 is out of range"),
    (["arch=trans-former"], "arch='trans-former' is not known; accepted: a built-in family (models/), torchvision:NAME"),
    (["dataset=imagenet"], f"dataset='imagenet' is not known; accepted: {', '.join(DATASETS)}"),
    (["loss=hinge"], "accepted: ce, mse"),
    (["optimizer=lbfgs"], "accepted: sgd, adam"),
    (["augment=maybe"], "accepted: true or false"),
    (["arch=vgg", "depth=9"], "accepted with arch=vgg: 8, 11, 13, 16"),
    (["lr_milestones=[30]"], "must be increasing epochs in [1, epochs=20]"),
    (["lr_milestones=[10,5]"], "must be increasing"),
    (["lr_milestones=60"], "cannot be read; accepted: a list"),
    (["checkpoint_extra=[-1]"], "iterations must be >= 0"),
    (["batch_size=6000"], "batch_size=6000 exceeds the 5000 training examples"),
    (["train_subset=9000"], "exceeds synthetic_train_size"),
    (["image_size=4"], "image_size=4 is out of range"),
    (["device=tpu"], "accepted: auto, cpu, cuda"),
    (["threads=-1"], "threads=-1 is out of range"),
])
def test_every_bad_value_is_one_line_naming_the_key_and_accepted_values(words, needle):
    with pytest.raises(SettingsError) as raised:
        parse_arguments(words)
    message = str(raised.value)
    assert needle in message
    assert "\n" not in message


def test_direct_construction_is_validated_too():
    with pytest.raises(SettingsError, match="wrong type"):
        Settings(depth="3")
    with pytest.raises(SettingsError, match="wrong type"):
        Settings(augment=1)


def test_help_lists_every_key_with_default_and_doc():
    text = help_text()
    for item in dataclasses.fields(Settings) + dataclasses.fields(Execution) + dataclasses.fields(Cluster):
        assert f"  {item.name}=" in text, item.name
        assert item.metadata["doc"] in text
    assert "lr_milestones=[]" in text and "augment=false" in text


def test_readme_settings_tables_match_the_code():
    from conf.global_settings import describe_accepted, show_default
    from tests.conftest import REPOSITORY

    rows = {}
    for line in (REPOSITORY / "docs" / "settings.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].strip("`"), cells[2], cells[3]
    from conf.analysis import Analysis

    for item in (dataclasses.fields(Settings) + dataclasses.fields(Execution) + dataclasses.fields(Cluster)
                 + dataclasses.fields(Analysis)):
        assert rows.get(item.name) == (show_default(item), describe_accepted(item), item.metadata["doc"]), item.name
