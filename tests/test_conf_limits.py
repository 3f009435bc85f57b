"""Limits of the command line (conf/): grid size before any run is built, control characters in text,
the held-out fraction that really works, the accepted devices."""

import dataclasses

import pytest

import conf.cli
from conf import Cluster, Execution, Settings, SettingsError, grid_size, help_text, parse_arguments
from conf.analysis import Analysis, check_heldout_split

SETTINGS_CLASSES = (Settings, Execution, Cluster, Analysis)
TEXT_FIELDS = [item.name for kind in SETTINGS_CLASSES for item in dataclasses.fields(kind) if item.type is str]
# Text options whose value is the user's own (paths, Slurm names, shell lines); every other text option
# has a fixed set of meanings and must list them as `choices`.
# `metrics` names are checked against metrics/registry.py when the analysis starts (tests/test_analysis.py)
FREE_TEXT = {"out_dir", "data_root", "partition", "account", "qos", "constraint", "time", "sbatch_extra", "job_setup",
             "metrics",
             # checked elsewhere: arch by conf.check_arch and the registry's pre-flight, layers against the
             # model's modules; module_sha256 and imported_from are filled in from the files;
             # start_from_iteration (final, phase or digits) by conf.plasticity, start_phase_layer against the
             # parent's phase table; normalization (dataset or [MEAN,...]/[STD,...]) by conf.check_normalization
             "arch", "layers", "module_sha256", "imported_from", "start_from_iteration", "start_phase_layer",
             "normalization"}
MILLION_RUNS = [f"seed={','.join(map(str, range(1000)))}", f"depth={','.join(map(str, range(1, 1001)))}"]


def refusal(words: list[str]) -> str:
    """The one-line message parse_arguments refuses `words` with (analysis.py's keys included)."""
    with pytest.raises(SettingsError) as raised:
        parse_arguments(words, analysis=True)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.fixture
def no_expansion(monkeypatch):
    """Any grid point built fails the test at once (a broken size check must not spend minutes expanding)."""
    def expand_grid(sweeps):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(conf.cli, "expand_grid", expand_grid)


# ---- 1. grid size ---------------------------------------------------------------------------------

def test_a_million_run_grid_is_refused_before_any_run_is_built(no_expansion):
    message = refusal(MILLION_RUNS)
    assert message == ("the grid has up to 1,000,000 runs, over max_runs=10000; pass max_runs=1000000 "
                       "to launch it anyway (or sweep fewer values)")


def test_grid_size_counts_without_building(no_expansion):
    assert grid_size([*MILLION_RUNS, "max_runs=1000000"]) == 1_000_000
    assert grid_size(["depth=3,5,8", "seed=0,1"]) == 6
    with pytest.raises(SettingsError, match="^the grid has up to 1,000,000 runs, over max_runs=10000; "):
        grid_size(MILLION_RUNS)  # the CLI announces only a grid it will build


def test_max_runs_lets_a_grid_of_that_size_through():
    assert len(parse_arguments(["seed=0,1,2", "max_runs=3"]).grid) == 3
    assert "the grid has up to 3 runs, over max_runs=2; pass max_runs=3" in refusal(["seed=0,1,2", "max_runs=2"])


def test_grid_size_is_an_upper_bound_summed_over_an_experiments_grids():
    # the demo: 4 collapse runs + 2 pretrain fractions x 2 resets x 2 seeds, of which the 2 scratch x reset
    # pairs collapse into one scratch run per seed once built, + 5 start iterations x 2 stage2_train transfer
    # children: 22 counted, 20 runs (their parents join at launch)
    assert grid_size(["experiment=demo"]) == 22
    assert len(parse_arguments(["experiment=demo", "max_runs=22"]).grid) == 20
    assert "up to 22 runs, over max_runs=21" in refusal(["experiment=demo", "max_runs=21"])
    assert grid_size(["depth=3,3,4"]) == 3 and len(parse_arguments(["depth=3,3,4"]).grid) == 2


def test_max_runs_is_a_launch_option_with_a_range_and_a_doc():
    assert "max_runs=0 is out of range; accepted: an integer >= 1" in refusal(["max_runs=0"])
    assert "  max_runs=10000 " in help_text()
    assert parse_arguments(["max_runs=5"]).grid[0].run_id == Settings().run_id


def test_options_are_refused_before_the_grid_is_counted(no_expansion):
    assert refusal([*MILLION_RUNS, "partition=a\nb"]).startswith("partition=")


def test_a_bad_swept_value_is_refused_as_it_is_read(no_expansion):
    assert refusal([MILLION_RUNS[0], MILLION_RUNS[1] + ",0"]) == "depth=0 is out of range; accepted: an integer >= 1"


# ---- 2. control characters in text ----------------------------------------------------------------

@pytest.mark.parametrize("name", TEXT_FIELDS)
def test_every_text_option_refuses_a_newline(name):
    message = refusal([f"{name}=gpu\n#SBATCH --exclusive"])
    assert message.startswith(f"{name}='gpu\\n#SBATCH --exclusive' contains the control character '\\n'; accepted: text")


@pytest.mark.parametrize("character", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"])
def test_every_control_character_is_refused(character):
    assert "contains the control character" in refusal([f"sbatch_extra=reservation=r1{character}"])


@pytest.mark.parametrize("kind", SETTINGS_CLASSES)
def test_direct_construction_refuses_control_characters_too(kind):
    name = next(item.name for item in dataclasses.fields(kind) if item.type is str)
    with pytest.raises(SettingsError, match=f"^{name}=.* contains the control character"):
        kind(**{name: "a\rb"})


def test_ordinary_text_is_still_accepted():
    plan = parse_arguments(["partition=gpu-a100", "sbatch_extra=reservation=r1;exclusive", "out_dir=résultats 2",
                            "job_setup=module load cuda/12.4; source venv/bin/activate"])
    assert plan.cluster.partition == "gpu-a100" and plan.execution.out_dir == "résultats 2"


def test_every_text_option_with_fixed_meanings_lists_them():
    fixed = [name for kind in SETTINGS_CLASSES for item in dataclasses.fields(kind)
             if item.type is str and not item.metadata.get("choices") for name in [item.name]]
    assert set(fixed) == FREE_TEXT  # a new text option: give it choices, or name it free text here


# ---- 3. heldout_fraction --------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", ["0.999", "0.9", "0.6", "0.005", "1e-06"])
def test_heldout_fractions_that_leave_a_part_empty_are_refused(fraction):
    message = refusal([f"heldout_fraction={fraction}"])
    assert message == f"heldout_fraction={float(fraction)} is out of range; accepted: a finite number >= 0.01 and <= 0.5"


def test_heldout_fraction_limits_are_accepted():
    for fraction in (0.01, 0.1, 0.5):
        assert Analysis(heldout_fraction=fraction).heldout_fraction == fraction


def test_an_empty_part_of_the_drawn_split_is_one_line():
    check_heldout_split(0.1, 13, 128)
    with pytest.raises(SettingsError, match=r"^heldout_fraction=0.01 left the held-out part of the 40 training examples empty; accepted: "):
        check_heldout_split(0.01, 0, 40)
    with pytest.raises(SettingsError, match="left the fitting part of the 1 training examples empty"):
        check_heldout_split(0.5, 1, 1)


# ---- 4. device ------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["tpu", "cuda:1", "CUDA", "mps", ""])
def test_only_the_devices_training_and_analysis_handle_are_accepted(device):
    assert refusal([f"device={device}"]) == (f"device={device!r} is not known; accepted: auto, cpu, cuda "
                                              "(choose the GPU with CUDA_VISIBLE_DEVICES=N, not cuda:N)")
