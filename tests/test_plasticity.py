"""Plasticity protocols (Berariu et al. 2021; Ash & Adams 2020): warm start in two stages with a shared
stage-1 run, reset of the last k modules, shrink-and-perturb, lineage, and exact resume in stage 2."""

import copy
import json
import signal

import pytest
import torch

import data
import models
from conf import Settings, SettingsError, parse_arguments
from conf.plasticity import run_kind, parent_settings
from tests.conftest import read_json, tiny_words
from tests.test_resume import kill_server

# 8 iterations per epoch on all 256 examples, 4 on the 128 of a half subset.
WARM = ["pretrain_fraction=0.5", "pretrain_epochs=2", "epochs=2"]


def resnet(seed: int, optimizer_name: str = "sgd"):
    torch.manual_seed(seed)
    model = models.build(Settings(arch="resnet", depth=1, width=4), input_shape=(3, 16, 16), num_classes=5)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer_name == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=0.01))
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8) % 5
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()  # every parameter now has optimizer state (momentum, or Adam's moments and step)
    return model, optimizer


def group_parameters(model, names):
    return {id(parameter) for name, modules in model.module_groups() if name in names
            for module in modules for parameter in module.parameters()}


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("k", [0, 1, 4, 6])
def test_reset_last_k_reinitialises_exactly_those_modules_and_their_optimizer_state(k, optimizer_name):
    model, optimizer = resnet(0, optimizer_name)
    torch.manual_seed(1)
    fresh = models.build(Settings(arch="resnet", depth=1, width=4), input_shape=(3, 16, 16), num_classes=5)
    before_model, before_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    names = [name for name, _ in model.module_groups()]
    assert names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]  # the paper's modules 1-6

    reset = models.reset_last_modules(model, fresh, optimizer, k)

    assert reset == names[len(names) - k:]
    reset_prefixes = tuple(
        qualified + "." for qualified, module in model.named_modules()
        if any(module is member for name, members in model.module_groups() if name in reset for member in members))
    for key, value in model.state_dict().items():  # parameters and buffers (BatchNorm statistics)
        expected = fresh.state_dict()[key] if key.startswith(reset_prefixes) else before_model[key]
        assert torch.equal(value, expected), key
    reset_ids = group_parameters(model, reset)
    for index, parameter in enumerate(model.parameters()):
        if id(parameter) in reset_ids:
            assert parameter not in optimizer.state  # no stale momentum: the unit starts like a new one
        else:
            kept, original = optimizer.state[parameter], before_state["state"][index]
            assert kept.keys() == original.keys() and all(torch.equal(kept[key], original[key]) for key in kept)
    with pytest.raises(ValueError, match="accepted: 0..6"):
        models.reset_last_modules(model, fresh, optimizer, 7)


def test_shrink_and_perturb_follows_its_formula_and_spares_the_reset_modules():
    model, optimizer = resnet(0)
    fresh, _ = resnet(1)
    before = copy.deepcopy(model.state_dict())
    reset = models.reset_last_modules(model, fresh, optimizer, 1)
    models.shrink_and_perturb(model, fresh, shrink=0.4, perturb=0.1, skip=reset)
    parameter_names = {name for name, _ in model.named_parameters()}
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            assert torch.equal(value, fresh.state_dict()[key])  # reset, not shrunk
        elif key in parameter_names:
            expected = before[key].double() * 0.4 + fresh.state_dict()[key].double() * 0.1
            torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(value, before[key]), key  # buffers: left to training


def test_stage1_subset_has_the_requested_size_and_is_drawn_from_the_seed():
    """Stage 1 of the two-stage protocol: stage_indices' first stage (stages=1, stage=1), as training/stages.py draws it."""
    labels = torch.arange(1000) % 10
    half = data.stage_indices(labels, fraction=0.5, unit="examples", seed=0, num_classes=10)
    assert len(half) == 500 and torch.equal(half, half.unique())  # sorted, no repeats
    assert torch.equal(half, data.stage_indices(labels, fraction=0.5, unit="examples", seed=0, num_classes=10))
    assert not torch.equal(half, data.stage_indices(labels, fraction=0.5, unit="examples", seed=1, num_classes=10))
    classes = data.stage_indices(labels, fraction=0.3, unit="classes", seed=0, num_classes=10)
    chosen = labels[classes].unique()
    assert len(chosen) == 3 and torch.equal(classes, torch.isin(labels, chosen).nonzero().flatten())
    with pytest.raises(data.DataError, match="selects 0 of the 10 training classes"):
        data.stage_indices(labels, fraction=0.01, unit="classes", seed=0, num_classes=10)


def test_children_name_one_shared_parent_and_a_scratch_arm_stays_one_run():
    grid = parse_arguments(["pretrain_fraction=0,0.5", "pretrain_epochs=350", "epochs=500", "reset_last=0,4,5",
                            "arch=resnet", "lr_schedule=multistep", "lr_milestones=[60,120,160]"]).grid
    kinds = [run_kind(settings) for settings in grid]
    assert kinds.count("scratch") == 1 and kinds.count("child") == 3
    parents = {parent_settings(settings).run_id for settings in grid if run_kind(settings) == "child"}
    assert len(parents) == 1
    (parent_id,) = parents
    parent = parent_settings(grid[1])
    assert parent.run_id == parent_id and "-stage1-" in parent_id and "-warm-" in grid[1].run_id
    assert parent.epochs == 0 and parent.reset_last == 0 and parent.lr_milestones == (60, 120, 160)
    assert parent_settings(Settings(pretrain_fraction=0.5, pretrain_epochs=100, epochs=500,
                                    lr_milestones=(60, 120, 160))).lr_milestones == (60,)  # the ones inside stage 1
    scratch = Settings()
    assert scratch.run_id == Settings(epochs=20).run_id and "-warm" not in scratch.run_id


@pytest.mark.parametrize("words, needle", [
    (["reset_last=4"], "reset_last=4 needs pretraining, but pretrain_fraction=0"),
    (["shrink=0.4", "perturb=0.1"], "shrink=0.4, perturb=0.1 needs pretraining"),
    (["pretrain_fraction=1"], "pretrain_fraction=1.0 is out of range; accepted: a finite number >= 0.0 and < 1.0"),
    (["pretrain_fraction=-0.1"], "is out of range"),
    (["pretrain_fraction=0.5"], "pretrain_fraction=0.5 needs stage 1's length; accepted: pretrain_epochs >= 1"),
    (["pretrain_fraction=0.5", "pretrain_epochs=2", "epochs=0", "reset_last=1"], "epochs=0 has no stage 2"),
    (["epochs=0"], "epochs=0 trains nothing without pretraining"),
    (["pretrain_subset=tasks"], "accepted: examples, classes"),
    (["shrink=1.5"], "shrink=1.5 is out of range"),
])
def test_meaningless_protocols_are_refused(words, needle):
    with pytest.raises(SettingsError) as raised:
        parse_arguments(words)
    assert needle in str(raised.value)


@pytest.mark.parametrize("extra, needle", [
    (["reset_last=5"], "reset_last=5 but convnet has 4 modules (stem, block00, block01, head); accepted: 0..4"),
    (["pretrain_fraction=0.1"], "leaves 26 examples for stage 1, fewer than batch_size=32"),
    (["pretrain_subset=classes", "pretrain_fraction=0.01"], "selects 0 of the 10 training classes"),
])
def test_protocols_that_do_not_fit_the_model_or_data_exit_2_before_writing(tmp_path, in_process, extra, needle):
    result = in_process("train.py", tiny_words(tmp_path / "out", *WARM, *extra))
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def runs_by_kind(out_dir):
    runs = {}
    for folder in (out_dir / "default" / "runs").iterdir():
        settings = Settings.from_record(read_json(folder / "settings.json")["settings"])
        runs.setdefault(run_kind(settings), []).append((settings, folder))
    return runs


def manifest_entries(folder):
    return sorted(read_json(folder / "manifest.json")["files"].values(), key=lambda entry: entry["iteration"])


def test_children_share_one_stage1_training_and_record_their_lineage(tmp_path, in_process):
    out = tmp_path / "out"
    result = in_process("train.py", tiny_words(out, *WARM, "reset_last=0,2", "stage2_optimizer=kept"))
    assert result.returncode == 0, result.stderr
    assert "3 run(s) of experiment 'default' trained: 3 done" in result.stdout
    runs = runs_by_kind(out)
    ((parent, parent_dir),) = runs["stage1"]
    assert len(runs["child"]) == 2 and "scratch" not in runs
    # Stage 1 trained once: its log holds each of its 2 epochs x 4 iterations exactly once.
    parent_log = [json.loads(line) for line in (parent_dir / "log.jsonl").read_text().splitlines()]
    assert [record["iteration"] for record in parent_log] == list(range(1, 9))
    assert result.stderr.count("starts from " + parent_dir.name) == 2
    subset = read_json(parent_dir / "stage1_subset.json")
    assert subset["size"] == 128 == len(subset["indices"])
    assert [entry["stage"] for entry in manifest_entries(parent_dir)] == [1] * 5  # 0, 1, 2, 4, 8

    for child, child_dir in runs["child"]:
        lineage = read_json(child_dir / "lineage.json")
        assert lineage["parent_run_id"] == parent_dir.name and lineage["parent_iteration"] == 8
        state_path = child_dir / lineage["parent_state"]
        assert lineage["parent_state_sha256"] == state_path.with_suffix(".sha256").read_text().strip()
        assert lineage["reset_modules"] == {0: [], 2: ["block01", "head"]}[child.reset_last]
        entries = manifest_entries(child_dir)
        assert [entry["iteration"] for entry in entries] == [8, 9, 10, 12, 16, 24]  # log-spaced from the switch
        assert {entry["stage"] for entry in entries} == {2}
        status = read_json(child_dir / "status.json")
        assert status["state"] == "done" and status["iteration"] == status["total_iterations"] == 24
        at_switch = torch.load(child_dir / "checkpoints" / "iteration_00000008.pt", weights_only=True)
        parent_final = torch.load(parent_dir / "checkpoints" / "iteration_00000008.pt", weights_only=True)
        assert at_switch["stage"] == 2 and parent_final["stage"] == 1
        same = [torch.equal(at_switch["model"][key], parent_final["model"][key]) for key in parent_final["model"]]
        if child.reset_last == 0:
            assert all(same)  # a plain warm start continues from exactly the parent's weights
        else:
            changed = {key.split(".")[1] for key, equal in zip(parent_final["model"], same)
                       if not equal and key.startswith("blocks.")}
            assert not all(same) and changed <= {"1"}  # block01 (blocks.1) and the head only

    # Again, plus a new child of the same parent: nothing of stage 1 is trained a second time.
    parent_status = read_json(parent_dir / "status.json")
    again = in_process("train.py", tiny_words(out, *WARM, "reset_last=0,1,2", "stage2_optimizer=kept"))
    assert again.returncode == 0, again.stderr
    assert "skipping 3 done run(s)" in again.stdout and "1 run(s) of experiment 'default' trained: 1 done" in again.stdout
    assert read_json(parent_dir / "status.json") == parent_status
    assert len(runs_by_kind(out)["child"]) == 3


@pytest.mark.slow
def test_a_kill_in_stage_2_resumes_bitwise_and_stage_1_keeps_its_subset(tmp_path, in_process):
    """SIGKILLs at counted batches (tests/test_resume.py's kill_server, never after a wait): stage 1 alone, after
    its subset is written; then the child in stage 2; the same command then ends both bitwise as uninterrupted."""
    words = [*WARM, "epochs=12", "reset_last=1", "shrink=0.5", "perturb=0.05", "stage2_optimizer=kept",
             "augment=true", "resume_every_seconds=0"]
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    assert in_process("train.py", tiny_words(reference_dir, *words)).returncode == 0
    reference = runs_by_kind(reference_dir)
    ((_, reference_child),) = reference["child"]
    ((_, reference_parent),) = reference["stage1"]

    # Stage 1 alone (8 iterations), SIGKILLed in its 5th batch (its subset is drawn before the first): a state at 4.
    parent_words = [*WARM, "epochs=0", "augment=true", "resume_every_seconds=0", "pretrain_epochs=2"]
    parent_dir = killed_dir / "default" / "runs" / reference_parent.name
    batch = "data.stream.TrainingStream", "batch"
    with kill_server() as kill:  # both killed processes forked from one interpreter
        assert kill(tiny_words(killed_dir, *parent_words), *batch, 5, False) == -signal.SIGKILL
        assert read_json(parent_dir / "status.json")["iteration"] == 4
        subset_before = (parent_dir / "stage1_subset.json").read_text()

        # The child, SIGKILLed during stage 2: the same command first ends the parent (its batches 5..8), then
        # trains the child from iteration 8; the 10th batch is the child's 6th, to iteration 14.
        child_dir = killed_dir / "default" / "runs" / reference_child.name
        assert kill(tiny_words(killed_dir, *words), *batch, 10, False) == -signal.SIGKILL
    assert read_json(parent_dir / "status.json")["state"] == "done"
    status = read_json(child_dir / "status.json")
    assert status["state"] == "running" and 12 < status["iteration"] < status["total_iterations"], status
    assert (parent_dir / "stage1_subset.json").read_text() == subset_before
    assert in_process("train.py", tiny_words(killed_dir, *words)).returncode == 0
    for reference_folder, folder in ((reference_parent, parent_dir), (reference_child, child_dir)):
        assert manifest_entries(folder) == manifest_entries(reference_folder)  # every checkpoint's sha256
        assert (folder / "log.jsonl").read_text() == (reference_folder / "log.jsonl").read_text()
    assert read_json(child_dir / "lineage.json") == read_json(reference_child / "lineage.json")


def test_children_wait_for_their_stage1_run_or_are_stranded_by_its_failure(tmp_path):
    from conf.plasticity import lineages
    from slurm.runs import observe, to_launch, waves

    grid = parse_arguments(["pretrain_fraction=0.5", "pretrain_epochs=2", "seed=0,1,2,3", "reset_last=0,1"]).grid
    runs = lineages(grid)
    assert [run.kind for run in runs] == ["stage1", "child", "child"] * 4  # each parent once, first
    parents = runs[0::3]
    for parent, state in zip(parents, ["done", "failed", "running", None]):
        if state:
            folder = observe((parent,), tmp_path, queue={"7_1"})[0].folder
            folder.path.mkdir(parents=True)
            folder.write_status(state, **({"job_id": "7_1"} if state == "running" else {}))
    views = observe(runs, tmp_path, queue={"7_1"})
    (first, second), stranded = waves(views, to_launch(views, "none"))
    seeds = lambda chosen: sorted((view.settings.seed, run_kind(view.settings)) for view in chosen)  # noqa: E731
    assert seeds(first) == [(0, "child"), (0, "child"), (3, "stage1")]  # parent done: its children go now
    assert seeds(second) == [(2, "child"), (2, "child"), (3, "child"), (3, "child")]  # wait for a running or new parent
    assert seeds(stranded) == [(1, "child"), (1, "child")]  # a failed parent, not retried
    (first, second), stranded = waves(views, to_launch(views, "failed"))
    assert not stranded and seeds(second).count((1, "child")) == 2


def test_a_run_record_carries_its_lineage_as_the_rules_give_it(tmp_path):
    """RunRecord's kind, ancestors and transfer flag (worked out once when the folder is read) agree with
    conf/plasticity.py's rules asked step by step, for growing data and for a transfer child."""
    from conf.plasticity import has_parent, lineages, transfers
    from folders import ExperimentFolder

    grids = [["pretrain_fraction=0.25", "pretrain_epochs=2", "stages=3", "reset_last=0,1"],
             ["dataset=fashionmnist", "pretrain_dataset=mnist", "pretrain_epochs=2", "start_from_iteration=final,4"]]
    experiment = ExperimentFolder(tmp_path)
    grid = [run for words in grids for run in lineages(parse_arguments(words).grid)]
    for run in grid:
        experiment.run(run.settings.run_id).prepare(run.settings)
    records = experiment.read_runs()
    assert len(records) == len({run.settings.run_id for run in grid}) > 6
    for run in grid:
        settings, chain = run.settings, []
        while has_parent(settings):
            settings = parent_settings(settings)
            chain.append(settings.run_id)
        record = records[run.settings.run_id]
        assert (record.kind, record.ancestor_ids, record.parent_id) == (run_kind(run.settings), tuple(chain),
                                                                        chain[0] if chain else "")
        assert record.transfer_child == transfers(run.settings)
    kinds = sorted(record.kind for record in records.values())
    assert {"stage1", "stage", "child", "scratch"} <= set(kinds) and any(record.transfer_child for record in records.values())
    assert max(len(record.ancestor_ids) for record in records.values()) == 3  # a child after stages 1, 2 and 3
