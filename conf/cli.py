"""The `key=value` grammar shared by train.py, train.sh and analysis.py.

`python train.py [experiment=NAME|FILE.py] [key=value ...]`: a value `a,b,c` sweeps that key (commas inside
`[...]` belong to a list value), several swept keys form a Cartesian grid. Every value is validated
before anything runs; a bad one raises `SettingsError` with one line naming the key and the
accepted values. `experiment=` takes a preset's name, a name of one's own (the grid from the
command line alone) or a preset file of one's own (conf/experiments.py, `read_experiment`).

The grid's size is counted from the sweeps before any grid point is built (`grid_size`): a grid of
more than `max_runs` runs is refused at once, and the CLI can say how big a grid is before it builds
and checks it.
"""

import dataclasses
import difflib
import itertools
import math
import sys
from dataclasses import dataclass

from conf.analysis import Analysis
from conf.cluster import Cluster
from conf.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS, Experiment, read_experiment
from conf.plasticity import PRETRAINING_DEFAULTS, canonical_scratch, with_start_checkpoints
from conf.words import field_readers, read_key_values
from conf.global_settings import SETTING_FIELDS, Execution, Settings, SettingsError, describe_accepted, show_default

EXECUTION_FIELDS = {item.name: item for item in dataclasses.fields(Execution)}
CLUSTER_FIELDS = {item.name: item for item in dataclasses.fields(Cluster)}
ANALYSIS_FIELDS = {item.name: item for item in dataclasses.fields(Analysis)}
ANNOUNCE_GRID_SIZE = 1000  # runs: building and pre-flighting a grid this size takes seconds, so say it first


@dataclass(frozen=True)
class Plan:
    """What one command line asks for: an experiment's grid of runs, how to execute and how to launch them."""

    experiment: str  # its folder's name: a preset's, one's own, or a preset file's stem
    grid: tuple[Settings, ...]
    execution: Execution
    cluster: Cluster = Cluster()
    analysis: Analysis = Analysis()
    overrides: tuple = ()  # (key, values) of the run settings typed on the command line, for filters
    # The preset the grid came from, by value (a preset file's definition too: a Slurm job never reads the file);
    # None for a name of one's own.
    preset: Experiment | None = None

    @property
    def preset_source(self) -> str:
        """The preset file's absolute path (experiment=FILE.py), else ""."""
        return self.preset.source if self.preset is not None else ""

    def experiment_argument(self) -> str:
        """What `experiment=` takes to name this experiment again: the preset file's absolute path, or the name."""
        return self.preset_source or self.experiment


def describe_filter(overrides: tuple) -> str:
    """The run settings typed on the command line, as typed: `depth=3,5 seed=0`."""
    return " ".join(f"{key}={','.join(map(str, values))}" for key, values in overrides)


def split_sweep(text: str) -> list[str]:
    """'0,0.2' -> ['0', '0.2']; '[60,120],[100]' -> ['[60,120]', '[100]'] (brackets protect commas)."""
    parts, depth, current = [], 0, ""
    for character in text:
        depth += {"[": 1, "]": -1}.get(character, 0)
        if character == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += character
    parts.append(current)
    return parts


def _unknown_key(key: str, command: str, analysis: bool) -> SettingsError:
    known = ["experiment", *SETTING_FIELDS, *EXECUTION_FIELDS, *CLUSTER_FIELDS, *(ANALYSIS_FIELDS if analysis else ())]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return SettingsError(f"unknown key {key!r}; {hint}see `python {command} --help` for the accepted keys")


@dataclass(frozen=True)
class CommandLine:
    """One command line's words, read and validated, before any grid point is built."""

    experiment: str  # the folder's name
    preset: Experiment | None  # None: a name of one's own
    run_values: dict  # run setting -> its swept values, as typed
    execution: Execution
    cluster: Cluster
    analysis: Analysis


def read_command_line(arguments: list[str], *, analysis: bool = False) -> CommandLine:
    """Command-line words -> CommandLine (SettingsError on any bad word). `analysis`: analysis.py's keys too."""
    command = "analysis.py" if analysis else "train.py"
    groups = {"experiment": {"experiment": read_experiment}, "run": field_readers(SETTING_FIELDS, split_sweep),
              "execution": field_readers(EXECUTION_FIELDS), "cluster": field_readers(CLUSTER_FIELDS),
              "analysis": field_readers(ANALYSIS_FIELDS) if analysis else {}}
    values = read_key_values(arguments, groups, lambda key: _unknown_key(key, command, analysis),
                             f" (see `python {command} --help`)")
    default = DEFAULT_EXPERIMENT, EXPERIMENTS[DEFAULT_EXPERIMENT]
    experiment_name, preset = values["experiment"].get("experiment", default)
    run_values, execution_values, cluster_values, analysis_values = (values[group] for group in (
        "run", "execution", "cluster", "analysis"))
    # the options are validated here, before the grid: a bad one is refused before a large grid is built
    return CommandLine(experiment_name, preset, run_values, Execution(**execution_values), Cluster(**cluster_values),
                       Analysis(**analysis_values))


def experiment_sweeps(preset: Experiment | None, run_values: dict) -> list[dict[str, list]]:
    """Each of the preset's grids as {key: values}, the command line's values replacing the preset's (no preset,
    a name of one's own: the command line's grid alone)."""
    presets = preset.grids() if preset is not None else ({},)
    grids = []
    for preset in presets:
        sweeps = {key: value if isinstance(value, list) else [value] for key, value in preset.items()}
        sweeps.update(run_values)
        if len(presets) > 1 and not some_pretrain(sweeps):
            # a from-scratch grid beside a warm-start one (the demo): warm-start keys are the other grid's
            sweeps = {key: values for key, values in sweeps.items() if key not in PRETRAINING_DEFAULTS}
        grids.append(sweeps)
    return grids


def some_pretrain(sweeps: dict[str, list]) -> bool:
    """Whether some point of a grid pretrains (on a subset, or on another dataset)."""
    return (any(fraction != 0 for fraction in sweeps.get("pretrain_fraction", [0]))
            or any(name != "same" for name in sweeps.get("pretrain_dataset", ["same"])))


def count_grid_points(grids: list[dict[str, list]]) -> int:
    """The grids' points, counted without building any: an upper bound on the runs, as duplicate points
    (depth=3,3) and the scratch points of a pretraining sweep collapse only once built."""
    return sum(math.prod(len(values) for values in sweeps.values()) for sweeps in grids)


def grid_size(arguments: list[str], *, analysis: bool = False) -> int:
    """How many runs a command line asks for (an upper bound: duplicates not yet removed), in
    milliseconds whatever the size, so the CLI can say it before building the grid. SettingsError as
    parse_arguments: on a bad word or a grid over max_runs (so the CLI announces only grids it builds)."""
    words = read_command_line(arguments, analysis=analysis)
    size = count_grid_points(experiment_sweeps(words.preset, words.run_values))
    check_grid_size(size, words.cluster.max_runs)
    return size


def announce_grid(arguments: list[str]) -> None:
    """train.py's first word on a grid of ANNOUNCE_GRID_SIZE runs or more, on stderr before it is built: building
    and pre-flighting it takes seconds. SettingsError as grid_size (a grid over max_runs is refused at once)."""
    size = grid_size(arguments)
    if size >= ANNOUNCE_GRID_SIZE:
        print(f"building and checking a grid of up to {size:,} runs ...", file=sys.stderr, flush=True)


def check_grid_size(size: int, max_runs: int) -> None:
    if size > max_runs:
        raise SettingsError(f"the grid has up to {size:,} runs, over max_runs={max_runs}; pass max_runs={size} "
                            "to launch it anyway (or sweep fewer values)")


def parse_arguments(arguments: list[str], *, analysis: bool = False) -> Plan:
    """Command-line words -> Plan (SettingsError on any bad word, or on a grid over max_runs, refused
    before any of it is built). `analysis`: analysis.py's keys too."""
    words = read_command_line(arguments, analysis=analysis)
    grids = experiment_sweeps(words.preset, words.run_values)
    check_grid_size(count_grid_points(grids), words.cluster.max_runs)
    runs: dict[str, Settings] = {}
    for sweeps in grids:  # an experiment's runs: the union of its grids
        for settings in expand_grid(sweeps):
            runs.setdefault(settings.run_id, settings)
    overrides = tuple((key, tuple(values)) for key, values in words.run_values.items())
    return Plan(words.experiment, tuple(runs.values()), words.execution, words.cluster, words.analysis, overrides,
                words.preset)


def expand_grid(sweeps: dict[str, list]) -> tuple[Settings, ...]:
    """Cartesian product of the swept values, in command-line order, duplicates removed. When some
    points pretrain and others not (`pretrain_fraction=0,0.5`), the scratch points drop the
    pretraining keys (conf/plasticity.py): one scratch baseline, however many resets are swept."""
    keys = list(sweeps)
    pretraining = some_pretrain(sweeps)
    grid: dict[str, Settings] = {}
    for combination in itertools.product(*(sweeps[key] for key in keys)):
        values = dict(zip(keys, combination))
        settings = Settings(**(canonical_scratch(values) if pretraining else values))
        grid.setdefault(settings.run_id, settings)
    return with_start_checkpoints(tuple(grid.values()))


def help_text() -> str:
    """`--help`: every key, its default and its doc, run settings first."""
    lines = ["usage: python train.py [experiment=NAME|FILE.py] [key=value | key=a,b,c ...]",
             "       python train.py status [experiment=NAME|FILE.py] [key=value ...]   one row per run of the grid",
             "       sh train.sh [experiment=NAME|FILE.py] [key=value ...]              the same grid as Slurm job arrays",
             "", "A value a,b,c sweeps a run setting; several swept keys form a Cartesian grid.", "",
             "experiments (results in <out_dir>/<experiment>/; analysis.py takes the same experiment=):"]
    lines += [f"  {name:<22} {experiment.description}" for name, experiment in EXPERIMENTS.items()]
    lines += [f"  {'NAME':<22} a name of your own: its own folder, the grid from the command line alone",
              f"  {'path/to/my_study.py':<22} a preset of your own: a file that defines EXPERIMENT = Experiment(\"my_study\", "
              "\"what it studies\", {\"depth\": [2, 4]}) (from conf.experiments import Experiment), an entry as "
              "conf/experiments.py's, named as the file's stem (its folder; docs/experiments.md#choosing-an-experiment)"]
    for title, fields in (("run settings (they define the run id)", SETTING_FIELDS),
                          ("execution options (never part of the run id)", EXECUTION_FIELDS),
                          ("launch options (never part of the run id; site defaults in conf/cluster.py)", CLUSTER_FIELDS)):
        lines += ["", f"{title}:"]
        for name, item in fields.items():
            lines.append(f"  {name + '=' + show_default(item):<34} {item.metadata['doc']} (accepted: {describe_accepted(item)})")
    return "\n".join(lines)
