"""Transfer from any checkpoint and growing data (conf/plasticity.py, training/stages.py): a parent trained once
on one dataset serves children on another from several iterations; start=phase reads the phase
table; Berariu et al.'s App. A.3 stages follow the appendix; every bad input is one line, exit 2."""

from __future__ import annotations

import dataclasses
import shutil

import pandas as pd
import pytest
import torch

import data
from conf import Execution, SettingsError, parse_arguments
from conf.plasticity import parent_settings, run_kind
from folders import ExperimentFolder, RunFolder
from conf.plasticity import with_parents
from tests import fabricate
from tests.test_resume import train_until_state
from training import loop, stages

# 192 training images of 28 px, batch 32: 6 iterations per epoch; the parent trains 4 epochs (24 iterations).
TRANSFER = ["arch=convnet", "depth=2", "width=8", "batch_size=32", "lr=0.05", "dataset=fashionmnist",
            "pretrain_dataset=mnist", "pretrain_epochs=4", "epochs=2", "progress=off", "threads=1", "download=false"]
STARTS = (0, 8, 12, 24)  # 12 is off the log schedule: the grid adds it to the parent's checkpoints


@pytest.fixture(scope="module")
def grayscale_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("grayscale")
    fabricate.fabricate_mnist(root, 192, 64, seed=1)
    fabricate.fabricate_fashionmnist(root, 192, 64, seed=2)
    return root


def transfer_plan(root, out_dir, *extra):
    return parse_arguments([*TRANSFER, f"data_root={root}", f"out_dir={out_dir}", *extra])


def train_grid(plan) -> dict:
    """Every run of the plan with its parents, in this process, parents first: {run id: (settings, folder)}."""
    experiment = ExperimentFolder.of(plan.execution.out_dir, plan.experiment)
    trained = {}
    for settings in with_parents(plan.grid):
        assert loop.run(settings, experiment.run(settings.run_id).path, plan.execution) == "done"
        trained[settings.run_id] = (settings, experiment.run(settings.run_id))
    return trained


@pytest.fixture(scope="module")
def transfer_grid(grayscale_root, tmp_path_factory):
    plan = transfer_plan(grayscale_root, tmp_path_factory.mktemp("transfer"),
                         "start_from_iteration=0,8,12,final", "stage2_train=all,head")
    return plan, train_grid(plan)


def test_one_parent_serves_children_from_its_checkpoints_bitwise_head_aside(transfer_grid, one_thread):
    plan, trained = transfer_grid
    parents = [folder for settings, folder in trained.values() if run_kind(settings) == "scratch"]
    assert len(parents) == 1 and len(trained) == 9  # the parent once, 4 starts x 2 ways of training
    (parent,) = parents
    assert parent.read_settings().dataset == "mnist" and parent.read_settings().checkpoint_extra == (12,)
    assert 12 in parent.read_manifest()["schedule"]
    for settings, folder in trained.values():
        if run_kind(settings) != "child":
            continue
        lineage = folder.read_lineage()
        start = 24 if settings.start_from_iteration == "final" else int(settings.start_from_iteration)
        assert lineage["parent_run_id"] == parent.path.name and lineage["parent_iteration"] == start
        assert lineage["parent_state_sha256"] == parent.checkpoint_entries()[start]["sha256"]
        assert lineage["rebuilt_modules"] == ["head: the classes of another dataset"]
        parent_state = parent.load_checkpoint(start)["model"]
        first = folder.load_checkpoint(start)["model"]  # a child's clock starts at its parent's iteration
        body = [key for key in parent_state if not key.startswith("head.")]
        assert body and all(torch.equal(first[key], parent_state[key]) for key in body)
        assert not torch.equal(first["head.linear.weight"], parent_state["head.linear.weight"])
        last = folder.load_checkpoint(max(folder.checkpoint_entries()))["model"]
        frozen_unchanged = all(torch.equal(last[key], parent_state[key]) for key in body)
        assert frozen_unchanged == (settings.stage2_train == "head")  # head only: BatchNorm statistics too
        assert (folder.read_status()["total_iterations"], folder.read_settings().dataset) == (start + 12, "fashionmnist")


def test_a_killed_child_resumes_bitwise(transfer_grid, tmp_path, monkeypatch, one_thread):
    plan, trained = transfer_grid
    child, reference = next((settings, folder) for settings, folder in trained.values()
                            if settings.start_from_iteration == "8" and settings.stage2_train == "all")
    parent_settings_, parent = trained[parent_settings(child).run_id]
    runs = tmp_path / "default" / "runs"
    execution = dataclasses.replace(plan.execution, out_dir=str(tmp_path), resume_every_seconds=0.0)
    assert loop.run(parent_settings_, runs / parent.path.name, execution) == "done"
    train_until_state(child, execution, runs / child.run_id, monkeypatch, iteration=13)  # 5 steps in: a counted event
    assert loop.run(child, runs / child.run_id, execution) == "done"
    resumed = RunFolder(runs / child.run_id)
    assert resumed.read_manifest()["files"] == reference.read_manifest()["files"]
    assert resumed.log_path.read_text() == reference.log_path.read_text()


def test_phase_starts_where_the_phase_table_says(transfer_grid, tmp_path, one_thread, in_process):
    plan, trained = transfer_grid
    (parent,) = [folder for settings, folder in trained.values() if run_kind(settings) == "scratch"]
    # the grid's parent holds the off-schedule start 12 among its checkpoints: name it, to name that parent
    phase_words = ["start_from_iteration=phase", "pretrain_checkpoint_extra=[12]"]
    phase_plan = transfer_plan(plan.execution.data_root, plan.execution.out_dir, *phase_words)
    (child,) = phase_plan.grid
    experiment = ExperimentFolder.of(plan.execution.out_dir, plan.experiment)
    words = [*TRANSFER, f"data_root={plan.execution.data_root}", f"out_dir={plan.execution.out_dir}", *phase_words]
    refused = in_process("train.py", words)  # not analysed: one line naming the command
    assert refused.returncode == 2 and "has no phase table yet" in refused.stderr
    assert "python analysis.py experiment=default" in refused.stderr and len(refused.stderr.splitlines()) == 1
    # phases.csv is per condition (findings/phases.py): the parent's row names it among the condition's runs
    header = "condition,runs,layer,layer_index,plateau_end,minimum,rise,transfer_peak,classifier_best\n"
    runs = f'"other-run, {parent.path.name}"'
    experiment.phases_path.write_text(header + f"every run,{runs},block00,1,2,8,16,16,24\n"
                                      f"every run,{runs},block01,2,2,4,8,8,24\n"
                                      f"every run,{runs},logits,3,,,,2,24\n"
                                      "other,another-run,block01,2,2,4,8,4,24\n")
    try:
        assert loop.run(child, experiment.run(child.run_id).path, plan.execution) == "done"
        lineage = experiment.run(child.run_id).read_lineage()
        assert lineage["parent_iteration"] == 8 and "block01" in lineage["start_rule"]  # the last hidden layer's peak
        named = dataclasses.replace(child, start_phase_layer="block00")
        assert stages.phase_start(named, experiment, parent.path.name)[0] == 16
    finally:
        experiment.phases_path.unlink()


def test_a_transfer_child_is_measured_at_its_ends_unless_all_are_asked(transfer_grid, tmp_path, one_thread):
    from conf.analysis import Analysis
    from conf.plasticity import transfers
    from measuring import protocol, snapshots, store

    plan, _ = transfer_grid
    experiment = ExperimentFolder.of(tmp_path, plan.experiment)  # a copy: the grid's folder stays unmeasured
    shutil.copytree(ExperimentFolder.of(plan.execution.out_dir, plan.experiment).runs_path, experiment.runs_path)
    runs = {folder.run_id: (folder.read_settings(), sorted(folder.checkpoint_entries()))
            for folder in experiment.run_folders()}
    children = {run_id for run_id, (settings, _) in runs.items() if transfers(settings)}
    assert children and set(runs) - children and max(len(runs[run_id][1]) for run_id in children) > 2

    def analyse(*words) -> tuple[protocol.Outcome, store.Merged]:  # analysis.py's measuring, without the figures
        analysis = parse_arguments([f"data_root={plan.execution.data_root}", "download=false", "tensorboard=false",
                                    "metrics=classifier_accuracy,ncc_accuracy", "progress=off", *words], analysis=True)
        records = experiment.read_runs()
        outcome = protocol.analyse_runs(list(records.values()), experiment, analysis, torch.device("cpu"))
        return outcome, store.merge(experiment, records)

    def measured() -> dict:
        return {run_id: sorted(set(rows["iteration"])) for run_id, rows in
                pd.read_parquet(experiment.table_path).groupby("run_id")}

    def metrics_of(run_ids) -> set:
        table = pd.read_parquet(experiment.table_path)
        return set(table.loc[table["run_id"].isin(run_ids), "metric"])

    every = {run_id: iterations for run_id, (_, iterations) in runs.items()}
    ends = {run_id: [iterations[0], iterations[-1]] if run_id in children else iterations
            for run_id, iterations in every.items()}
    outcome, _ = analyse()
    assert measured() == ends and outcome.left_out == sum(map(len, every.values())) - sum(map(len, ends.values()))
    # the transfer read takes a child's classifier accuracy only; its parent's layers are measured in full
    assert metrics_of(children) == {"classifier_accuracy"}
    assert metrics_of(set(runs) - children) == {"classifier_accuracy", "ncc_accuracy"}
    again, merged = analyse()  # the checkpoints left out are not pending: nothing new, nothing rewritten
    assert (again.measured, again.fresh, again.skipped, merged.written) == (0, sum(map(len, ends.values())), [], [])
    analyse("child_checkpoints=all")
    assert measured() == every and metrics_of(children) == {"classifier_accuracy", "ncc_accuracy"}
    # the words that trained the children name their dataset only; their parent is measured and read with them
    chosen, _ = protocol.runs_of(experiment.read_runs(), (("dataset", ("fashionmnist",)),), experiment.runs_path)
    assert {run.run_id for run in chosen} == set(runs)
    # the children's layer similarity is left out with their middle checkpoints: under ends no snapshot is taken
    for run_id in children:
        run = experiment.read_runs()[run_id]
        assert run.transfer_child and run.kind == "child"
        assert protocol.metrics_to_measure(run.transfer_child, Analysis()) == ["classifier_accuracy"]
        assert snapshots.SNAPSHOT_METRIC in protocol.metrics_to_measure(run.transfer_child, Analysis(child_checkpoints="all"))


def test_growing_data_follows_the_appendix_and_trains_each_stage_once(tmp_path, one_thread):
    words = ["synthetic_train_size=320", "synthetic_test_size=64", "image_size=16", "batch_size=32", "arch=convnet",
             "depth=2", "width=8", "pretrain_fraction=0.5", "pretrain_subset=classes", "stages=4", "pretrain_epochs=1",
             "epochs=1", "reset_last=0,1", f"out_dir={tmp_path}", "progress=off", "threads=1"]
    plan = parse_arguments(words)
    runs = with_parents(plan.grid)
    kinds = [run_kind(settings) for settings in runs]
    assert kinds == ["stage1", "stage", "stage", "stage", "child", "stage", "stage", "stage", "child"]  # stage 1 shared
    trained = train_grid(plan)
    assert len(trained) == 9
    labels = data.load_dataset(runs[0], data_root=tmp_path, download=False).train_labels
    order = torch.randperm(10, generator=data.subsets.seeded_generator(0, "stage 1 subset", "classes"))
    for settings, folder in trained.values():
        kind = run_kind(settings)
        if kind == "child":
            assert folder.read_subset() is None
            assert folder.read_lineage()["parent_run_id"] == parent_settings(settings).run_id
            continue
        stage = max(settings.stage, 1)
        classes = order[:[5, 6, 8, 9][stage - 1]]  # round(10 * (0.5 + 0.5 (i - 1) / 4)): D_i ⊇ D_i-1, D_5 = D
        assert folder.read_subset()["indices"] == torch.isin(labels, classes).nonzero().flatten().tolist()
        assert {entry["stage"] for entry in folder.checkpoint_entries().values()} == {stage}
        if kind == "stage":  # starts at the end of the stage before it
            parent = trained[parent_settings(settings).run_id][1]
            assert folder.read_lineage()["parent_iteration"] == parent.read_status()["total_iterations"]


@pytest.mark.parametrize("extra, message", [
    (["start_from_iteration=40"], "start_from_iteration=40 is not an iteration of the parent run"),
    (["start_from_iteration=soon"], "start_from_iteration='soon' is not an iteration"),
    (["pretrain_dataset=imagenet"], "pretrain_dataset='imagenet' is not known"),
    (["pretrain_dataset=cifar10"], "cifar10"),  # not on disk and download=false
    (["stage2_train=head", "reset_last=4"], "stage2_train=head trains the head on frozen features"),
    (["pretrain_dataset=same", "pretrain_fraction=0.5", "pretrain_subset=classes", "stages=9"],
     "stages=9 with pretrain_fraction=0.5 gives stages of"),
])
def test_bad_transfer_inputs_are_one_line_and_write_nothing(grayscale_root, tmp_path, in_process, extra, message):
    result = in_process("train.py", [*TRANSFER, f"data_root={grayscale_root}", f"out_dir={tmp_path}", *extra])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "default").exists()


def test_settings_of_transfer_refuse_what_means_nothing():
    with pytest.raises(SettingsError, match="stage2_optimizer=kept needs"):
        parse_arguments(["pretrain_dataset=mnist", "pretrain_epochs=2", "stage2_optimizer=kept"])
    with pytest.raises(SettingsError, match="each stage starts from the previous one's end"):
        parse_arguments(["pretrain_fraction=0.5", "pretrain_epochs=2", "stages=3", "start_from_iteration=4"])
    with pytest.raises(SettingsError, match="needs pretraining"):
        parse_arguments(["start_from_iteration=4"])
    assert Execution().download  # the offline path stays in the code: download=false only where a test says so
