"""Figures, phase detection and the report, from a small fabricated metrics table (so figure code
cannot rot silently), and the papers' presets checked against their hyper-parameters and schedules."""

import math

import pandas as pd
import pytest
import torch

import data
from conf import EXPERIMENTS, Settings, parse_arguments
from conf.plasticity import lineage_of, parent_settings, run_kind
from folders import ExperimentFolder
from training.stages import checkpoint_schedule
from tests import fabricate
from tests.fabricate import fabricated_similarity, run_frame

ITERATIONS = [0, 1, 2, 4, 8, 16, 32, 64, 128]
LAYERS = ["input", "stem", "block00", "block01", "logits"]


def fabricated_rows(settings: Settings, iterations, parent: str = "", stage: int = 1, offset: float = 0.0):
    """Metric rows of one run with the shapes the papers describe (values made up, smooth in layer and time)."""
    rows = []
    for iteration in iterations:
        time = math.log2(iteration + 1) / 7  # 0 .. ~1 over the run
        for index, layer in enumerate(LAYERS):
            depth_share = index / (len(LAYERS) - 1)
            values = {
                "ncc_accuracy": min(1.0, 0.1 + 0.9 * time * (0.3 + 0.7 * depth_share)),
                "cdnv": 10 ** (1 - 2 * time * depth_share),
                "reconstruction_mse": 0.4 - 0.15 * math.sin(math.pi * min(time, 1)) * depth_share + 0.3 * time * depth_share,
                "transfer_accuracy": 0.8 + 0.1 * math.sin(math.pi * min(time, 1)) * depth_share,
                "nc1": 10 ** (1 - 3 * time * depth_share),  # the new metrics (figures/collapse_nc.py)
                "nc2_equinorm": 0.5 - 0.4 * time * depth_share,
                "nc2_equiangularity": 0.3 - 0.2 * time * depth_share,
                "dormant_fraction": 0.05 + 0.3 * time * depth_share,
                "effective_rank": 30 - 20 * time * depth_share,
            }
            for metric, value in values.items():
                for split in ("train", "test"):
                    rows.append({"layer": layer, "layer_index": index, "metric": metric, "split": split,
                                 "value": value + offset, "iteration": iteration})
        for split in ("train", "test"):
            rows.append({"layer": "logits", "layer_index": 4, "metric": "classifier_accuracy", "split": split,
                         "value": min(1.0, 0.1 + time) - offset, "iteration": iteration})
        rows.append({"layer": "all", "layer_index": -1, "metric": "effective_depth", "split": "train",
                     "value": 2 + settings.label_noise * 5 + settings.seed % 2, "iteration": iteration})
        rows.append({"layer": "all", "layer_index": -1, "metric": "effective_depth_literal", "split": "train",
                     "value": 2 + (settings.label_noise > 0) * (settings.seed % 2), "iteration": iteration})
    return run_frame(rows, settings, stage, parent)


@pytest.fixture(scope="module")
def metrics():
    frames = []
    for depth in (2, 4):
        for label_noise in (0.0, 0.2):
            for seed in (0, 1):
                frames.append(fabricated_rows(Settings(depth=depth, label_noise=label_noise, seed=seed), ITERATIONS))
    for seed in (0, 1):  # scratch, its stage-1 parent and two children, per seed
        base = dict(depth=3, width=16, seed=seed, pretrain_epochs=4, epochs=4)
        frames.append(fabricated_rows(Settings(depth=3, width=16, seed=seed, epochs=4), ITERATIONS, offset=-0.05))
        for reset in (0, 2):
            child = Settings(**base, pretrain_fraction=0.5, reset_last=reset)
            parent = parent_settings(child)
            if reset == 0:
                frames.append(fabricated_rows(parent, ITERATIONS[:6]))
            frames.append(fabricated_rows(child, [16 + step for step in (0, 1, 2, 4, 8, 16)], parent.run_id, 2,
                                          offset=0.05 - 0.03 * (reset > 0)))
    return pd.concat(frames, ignore_index=True)


def test_every_figure_type_renders_from_a_fabricated_table(metrics, tmp_path):
    import figures

    # two forked workers (the machine's cores; saving is most of a figure's time): a figure that fails in a worker
    # is skipped with "failed: ..." as in this process (draw_part either way)
    drawn, skipped = figures.draw_all(metrics, tmp_path, similarity_table=fabricated_similarity(),
                                      formats=("png", "pdf"), workers=2)
    # transfer children have their own table (another dataset's parent would join this one's conditions)
    transfer_drawn, transfer_skipped = figures.draw_all(fabricate.transfer_table(), tmp_path, names=["transfer_curve"],
                                                        formats=("png", "pdf"))
    assert set(skipped) == {"transfer_curve"} and not transfer_skipped, (skipped, transfer_skipped)
    drawn.update(transfer_drawn)
    assert set(drawn) == set(figures.FIGURES)
    for paths in drawn.values():
        assert paths and len(paths) % 2 == 0
        for path in paths:
            head = path.read_bytes()[:8]
            assert head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path
    # a row per condition of the runs with phases (4 of depth x label noise, the plasticity scratch run and its
    # stage-1 parent; no child: findings/conditions.py), seeds pooled, six rows to a figure
    assert [path.name for path in drawn["learning_phases"]] == ["learning_phases.png", "learning_phases.pdf"]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_figure_that_the_table_cannot_feed_says_why(metrics, tmp_path):
    import figures

    scratch_only = metrics[metrics["pretrain_fraction"] == 0]
    _, skipped = figures.draw_all(scratch_only[scratch_only["label_noise"] == 0], tmp_path,
                                  names=["plasticity_curves", "warm_start_gap", "ncc_by_layer"])
    assert "no warm-started runs" in skipped["plasticity_curves"] and "warm_start_gap" in skipped
    assert "ncc_by_layer" not in skipped


def test_a_figure_of_many_files_is_drawn_part_by_part_in_the_workers(metrics, tmp_path, monkeypatch):
    """The heatmaps (a file per run) and learning_phases (a file per six conditions) are shared out a file to a
    process: the same files as one process draws; a part that fails fails its figure alone."""
    import figures
    from figures.registry import FigureSpec

    names = ["collapse_heatmaps", "learning_phases", "ncc_by_layer"]
    alone, _ = figures.draw_all(metrics, tmp_path / "alone", names=names, workers=1)
    shared, skipped = figures.draw_all(metrics, tmp_path / "shared", names=names, workers=2)
    assert not skipped and {name: [path.name for path in paths] for name, paths in shared.items()} == \
        {name: [path.name for path in paths] for name, paths in alone.items()}
    runs = figures.FIGURES["collapse_heatmaps"].pieces(metrics, None)
    assert len(runs) > 1 and len(shared["collapse_heatmaps"]) == len(runs)
    assert all(run in path.name for run, path in zip(runs, shared["collapse_heatmaps"]))

    def broken(table, part=None):
        if part == "second":
            raise RuntimeError("this part is broken")
        return figures.FIGURES["ncc_by_layer"].draw(table)

    monkeypatch.setitem(figures.FIGURES, "two_parts", FigureSpec("two_parts", "a test", broken,
                                                                 parts=lambda table: ["first", "second"]))
    drawn, skipped = figures.draw_all(metrics, tmp_path / "broken", names=["two_parts", "ncc_by_layer"], workers=2)
    assert skipped == {"two_parts": "failed: RuntimeError: this part is broken"} and set(drawn) == {"ncc_by_layer"}


PHASES = ("plateau_end", "minimum", "rise")


def test_phase_detection_on_learnphase_sample_log():
    from findings.phases import reconstruction_turns  # phase_table's reading of one curve

    # LearnPhase's README log (VGG-8, CIFAR-10): test reconstruction loss at iterations 0, 2, ..., 65536.
    iterations = [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    losses = [46.71, 46.55, 46.30, 45.62, 44.38, 43.48, 41.92, 40.32, 40.54, 41.72, 41.12, 44.30, 48.69, 54.74,
              57.76, 60.00, 62.18]
    phases = reconstruction_turns(iterations, losses, tolerance=0.05)  # τ = 5 % of the 21.9 range = 1.09
    assert [phases[name] for name in PHASES] == [8, 128, 512]
    flat = reconstruction_turns(iterations[:5], [1.0, 1.0, 1.0, 1.0, 1.0], tolerance=0.05)
    assert all(math.isnan(flat[name]) for name in PHASES)
    falling = reconstruction_turns(iterations[:5], [5.0, 4.0, 3.0, 2.0, 1.0], tolerance=0.05)
    assert falling["plateau_end"] == 0 and falling["minimum"] == 16 and math.isnan(falling["rise"])


def test_phase_boundaries_are_strict_inequalities():
    """τ = 5 % of the range 10 = 0.5: a loss exactly τ above the minimum has not risen yet (rise at index 4,
    not 3), and one exactly τ below the first value has not fallen yet (plateau ends at index 1, not 0)."""
    from findings.phases import reconstruction_turns

    indices = [0, 1, 2, 3, 4]  # iterations equal to the indices: the results read as indices
    turns = reconstruction_turns(indices, [10, 5, 0, 0.5, 1], tolerance=0.05)
    assert [turns[name] for name in PHASES] == [0, 2, 4]
    flat_then_falls = reconstruction_turns(indices, [10, 9.5, 0, 0, 0], tolerance=0.05)
    assert (flat_then_falls["plateau_end"], flat_then_falls["minimum"]) == (1, 2)
    assert math.isnan(flat_then_falls["rise"])


def test_phase_and_stop_tables(metrics):
    from findings.phases import phase_table, stop_table

    phases = phase_table(metrics)
    assert set(phases.columns) >= {"run_id", "layer", "plateau_end", "minimum", "rise", "transfer_peak",
                                   "classifier_best"}
    advice = stop_table(phases, by="run_id")
    assert len(advice) == metrics["run_id"].nunique()
    assert (advice["read_at_layer"] == "block01").all()  # the last hidden layer
    scratch = advice[advice["run_id"].isin(metrics[metrics["pretrain_fraction"] == 0]["run_id"])]
    assert scratch["before_classifier_best"].all()  # the fabricated probe peaks mid-run, the classifier at the end


def test_report_lists_runs_figures_and_phases(metrics, tmp_path):
    import figures
    from figures.report import write_report
    from findings.readout import readout

    drawn, skipped = figures.draw_all(metrics, tmp_path / "figures", names=["ncc_by_layer"])
    runs = pd.DataFrame([{"run_id": run, "kind": "scratch", "state": "done", "iteration": "8/8", "parent": "",
                          "depth": depth} for run, depth in metrics.groupby("run_id")["depth"].first().items()])
    path = write_report(ExperimentFolder(tmp_path), "Experiment test", "fabricated", runs, drawn, {"x": "why not"}, readout(metrics),
                        ["1 run(s) not done"])
    page = path.read_text()
    assert "figures/ncc_by_layer.png" in page and "why not" in page and "Learning phases (LearnPhase), per condition" in page
    assert page.index("<h2>Findings</h2>") < page.index("<table class='findings-table'>") < page.index("<h2>Figures</h2>")
    assert "<td>depth</td>" in page and all(run in page for run in runs["run_id"])


def test_learnphase_preset_matches_the_seed_and_checkpoints_at_powers_of_two():
    (settings,) = parse_arguments(["experiment=learnphase"]).grid
    assert (settings.dataset, settings.arch, settings.depth, settings.width) == ("cifar10", "vgg", 8, 32)
    assert (settings.optimizer, settings.lr, settings.momentum, settings.batch_size) == ("sgd", 0.002, 0.9, 128)
    per_epoch = 50000 // settings.batch_size  # CIFAR-10's training split
    schedule = checkpoint_schedule(total_iterations=settings.epochs * per_epoch, iterations_per_epoch=per_epoch)
    assert {0, *(2 ** power for power in range(1, 17))} <= set(schedule)  # 0, 2, 4, ..., 65536 as their log
    assert schedule[-1] == settings.epochs * per_epoch >= 65536


@pytest.mark.parametrize("name, arch, depths, noise", [
    ("intermediate_nc", "convnet", {3, 5, 8, 12, 16, 20}, {0.0}),
    ("intermediate_nc_mlp", "mlp", {3, 5, 8, 12, 16, 20}, {0.0}),
    ("intermediate_nc_noise", "convnet", {8}, {0.0, 0.1, 0.2, 0.3, 0.5}),
])
def test_intermediate_nc_presets_follow_the_papers_condition(name, arch, depths, noise):
    grid = parse_arguments([f"experiment={name}"]).grid
    assert {settings.depth for settings in grid} == depths and {settings.label_noise for settings in grid} == noise
    for settings in grid:
        assert (settings.arch, settings.width, settings.dataset, settings.batch_size) == (arch, 400, "cifar10", 128)
        assert (settings.lr, settings.lr_schedule, settings.lr_milestones, settings.lr_gamma) == (0.1, "multistep",
                                                                                               (60, 120, 160), 0.1)
        assert (settings.momentum, settings.weight_decay, settings.epochs) == (0.9, 5e-4, 500)
    per_epoch = 50000 // 128
    schedule = checkpoint_schedule(total_iterations=500 * per_epoch, iterations_per_epoch=per_epoch,
                                   every_epochs=grid[0].checkpoint_every_epochs)
    assert {0, 1, 2, 4, 8, 60 * 0 + 25 * per_epoch, 500 * per_epoch} <= set(schedule)


def test_plasticity_preset_is_scratch_vs_half_then_all_with_resets():
    from conf.plasticity import with_parents
    from training import stages

    grid = parse_arguments(["experiment=plasticity"]).grid
    runs = with_parents(grid)
    kinds = [run_kind(settings) for settings in runs]
    shapes = {(settings.depth, settings.width) for settings in grid}
    assert shapes == {(depth, width) for depth in (1, 2, 3) for width in (32, 64)}
    assert kinds.count("scratch") == 6 and kinds.count("stage1") == 6 and kinds.count("child") == 18
    labels = torch.arange(50000) % 10  # CIFAR-10's training labels, in size
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(50000, 3, 32, 32)  # a view: no memory
    cifar10 = data.ImageDataset(name="cifar10", train_images=images, train_labels=labels, test_images=images[:10],
                                test_labels=labels[:10], num_classes=10, mean=torch.zeros(3), std=torch.ones(3))
    for settings in grid:
        assert (settings.arch, settings.dataset) == ("resnet", "cifar10")
        if run_kind(settings) == "scratch":
            assert settings.epochs == 500 and settings.reset_last == 0
            continue
        assert (settings.pretrain_fraction, settings.pretrain_epochs, settings.epochs) == (0.5, 350, 500)
        assert settings.reset_last in (0, 4, 5)
        first = stages.planned_first(lineage_of(settings), lambda run: cifar10, ExperimentFolder("."))  # its parent's length
        stage = stages.plan_stage(settings, labels, 10, stages.StartPoint(first, 350.0, "final"))
        assert stage.number == 2 and stage.first_iteration == 350 * (25000 // 128)  # stage 1: half the data
        total = stage.first_iteration + 500 * (50000 // 128)
        schedule = checkpoint_schedule(total_iterations=total, iterations_per_epoch=50000 // 128,
                                       first_iteration=stage.first_iteration,
                                       every_epochs=settings.checkpoint_every_epochs)
        assert schedule[0] == stage.first_iteration and schedule[-1] == total
        assert stage.first_iteration + 1 in schedule and stage.first_iteration + 1024 in schedule


def test_demo_holds_the_three_stories():
    """The demo's grid holds the three stories, and its figures show them: effective depth against label noise
    and depth (collapse), scratch vs warm start vs warm start with a reset (plasticity)."""
    from matplotlib import pyplot

    import figures

    grid = parse_arguments(["experiment=demo"]).grid
    assert {settings.dataset for settings in grid} == {"synthetic"}
    assert {settings.label_noise for settings in grid if run_kind(settings) == "scratch"} >= {0.0, 0.2}
    assert {run_kind(settings) for settings in grid} == {"scratch", "child"}
    assert all(name in EXPERIMENTS for name in ("learnphase", "intermediate_nc", "plasticity", "demo"))
    from findings.readout import readout

    metrics = fabricated_experiment(grid)
    depth = figures.FIGURES["effective_depth"].draw(metrics, readout(metrics))["effective_depth"]
    curves = figures.FIGURES["plasticity_curves"].draw(metrics)["plasticity_curves"]
    # collapse: effective depth vs label noise at each depth, and vs depth at each noise level
    assert [axis.get_title() for axis in depth.axes] == ["effective depth vs label_noise", "effective depth vs depth"]
    assert [held_fixed(axis) for axis in depth.axes] == [["depth=2", "depth=4"], ["label_noise=0.0", "label_noise=0.2"]]
    # plasticity: scratch, warm start and warm start with a reset, side by side in one panel
    assert sorted(legend(curves.axes[0])) == ["scratch", "warm start", "warm start, reset last 2"]
    pyplot.close(depth)
    pyplot.close(curves)


def fabricated_experiment(grid) -> pd.DataFrame:
    """Fabricated metric rows of every run of a grid and of its stage-1 runs, as the analysis would write."""
    from conf.plasticity import with_parents

    frames = []
    for settings in with_parents(grid):
        kind = run_kind(settings)
        if kind == "stage1":
            frames.append(fabricated_rows(settings, ITERATIONS[:6]))
        elif kind == "child":
            frames.append(fabricated_rows(settings, [16 + step for step in (0, 1, 2, 4, 8, 16)],
                                          parent_settings(settings).run_id, 2))
        else:
            frames.append(fabricated_rows(settings, ITERATIONS))
    return pd.concat(frames, ignore_index=True)


def legend(axis) -> list[str]:
    return [text.get_text() for text in axis.get_legend().get_texts()]


def held_fixed(axis) -> list[str]:
    """The first setting each line of an effective-depth panel holds fixed (its legend: "depth=2, width=32, ...")."""
    return [label.split(",")[0] for label in legend(axis)]
