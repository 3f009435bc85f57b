"""The `key=value` grammar shared by train.py, train.sh and analysis.py.

`python train.py [experiment=NAME] [key=value ...]`: a value `a,b,c` sweeps that key (commas inside
`[...]` belong to a list value), several swept keys form a Cartesian grid. Every value is validated
before anything runs; a bad one raises `SettingsError` with one line naming the key and the
accepted values.
"""

import dataclasses
import difflib
import itertools
from dataclasses import dataclass

from conf.analysis import Analysis
from conf.cluster import Cluster
from conf.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS
from conf.plasticity import PRETRAINING_DEFAULTS, canonical_scratch
from conf.global_settings import Execution, Settings, SettingsError, describe_accepted, parse_value, show_default

RUN_FIELDS = {item.name: item for item in dataclasses.fields(Settings)}
EXECUTION_FIELDS = {item.name: item for item in dataclasses.fields(Execution)}
CLUSTER_FIELDS = {item.name: item for item in dataclasses.fields(Cluster)}
ANALYSIS_FIELDS = {item.name: item for item in dataclasses.fields(Analysis)}


@dataclass(frozen=True)
class Plan:
    """What one command line asks for: an experiment's grid of runs, how to execute and how to launch them."""

    experiment: str
    grid: tuple[Settings, ...]
    execution: Execution
    cluster: Cluster = Cluster()
    analysis: Analysis = Analysis()
    overrides: tuple = ()  # (key, values) of the run settings typed on the command line, for filters


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
    known = ["experiment", *RUN_FIELDS, *EXECUTION_FIELDS, *CLUSTER_FIELDS, *(ANALYSIS_FIELDS if analysis else ())]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return SettingsError(f"unknown key {key!r}; {hint}see `python {command} --help` for the accepted keys")


def parse_arguments(arguments: list[str], *, analysis: bool = False) -> Plan:
    """Command-line words -> Plan (SettingsError on any bad word). `analysis`: analysis.py's keys too."""
    experiment_name, run_values, execution_values, cluster_values, analysis_values = DEFAULT_EXPERIMENT, {}, {}, {}, {}
    command = "analysis.py" if analysis else "train.py"
    for argument in arguments:
        key, separator, text = argument.partition("=")
        if not separator or not key:
            raise SettingsError(f"cannot read {argument!r}; write key=value (see `python {command} --help`)")
        if key == "experiment":
            if text not in EXPERIMENTS:
                raise SettingsError(f"experiment={text!r} is not known; accepted: {', '.join(EXPERIMENTS)}")
            experiment_name = text
        elif key in RUN_FIELDS:
            run_values[key] = [parse_value(RUN_FIELDS[key], part) for part in split_sweep(text)]
        elif key in EXECUTION_FIELDS:
            execution_values[key] = parse_value(EXECUTION_FIELDS[key], text)
        elif key in CLUSTER_FIELDS:
            cluster_values[key] = parse_value(CLUSTER_FIELDS[key], text)
        elif analysis and key in ANALYSIS_FIELDS:
            analysis_values[key] = parse_value(ANALYSIS_FIELDS[key], text)
        else:
            raise _unknown_key(key, command, analysis)
    grid: dict[str, Settings] = {}
    presets = EXPERIMENTS[experiment_name].grids()
    for preset in presets:  # an experiment's runs: the union of its grids
        sweeps = {key: value if isinstance(value, list) else [value] for key, value in preset.items()}
        sweeps.update(run_values)
        if len(presets) > 1 and not any(fraction != 0 for fraction in sweeps.get("pretrain_fraction", [0])):
            # a from-scratch grid beside a warm-start one (the demo): warm-start keys are the other grid's
            sweeps = {key: values for key, values in sweeps.items() if key not in PRETRAINING_DEFAULTS}
        for settings in expand_grid(sweeps):
            grid.setdefault(settings.run_id, settings)
    overrides = tuple((key, tuple(values)) for key, values in run_values.items())
    return Plan(experiment_name, tuple(grid.values()), Execution(**execution_values), Cluster(**cluster_values),
                Analysis(**analysis_values), overrides)


def expand_grid(sweeps: dict[str, list]) -> tuple[Settings, ...]:
    """Cartesian product of the swept values, in command-line order, duplicates removed. When some
    points pretrain and others not (`pretrain_fraction=0,0.5`), the scratch points drop the
    pretraining keys (conf/plasticity.py): one scratch baseline, however many resets are swept."""
    keys = list(sweeps)
    some_pretrain = any(fraction != 0 for fraction in sweeps.get("pretrain_fraction", [0]))
    grid: dict[str, Settings] = {}
    for combination in itertools.product(*(sweeps[key] for key in keys)):
        values = dict(zip(keys, combination))
        settings = Settings(**(canonical_scratch(values) if some_pretrain else values))
        grid.setdefault(settings.run_id, settings)
    return tuple(grid.values())


def help_text() -> str:
    """`--help`: every key, its default and its doc, run settings first."""
    lines = ["usage: python train.py [experiment=NAME] [key=value | key=a,b,c ...]",
             "       python train.py status [experiment=NAME] [key=value ...]   one row per run of the grid",
             "       sh train.sh [experiment=NAME] [key=value ...]              the same grid as Slurm job arrays", "",
             "A value a,b,c sweeps a run setting; several swept keys form a Cartesian grid.", "",
             "experiments:"]
    lines += [f"  {name:<22} {experiment.description}" for name, experiment in EXPERIMENTS.items()]
    for title, fields in (("run settings (they define the run id)", RUN_FIELDS),
                          ("execution options (never part of the run id)", EXECUTION_FIELDS),
                          ("launch options (never part of the run id; site defaults in conf/cluster.py)", CLUSTER_FIELDS)):
        lines += ["", f"{title}:"]
        for name, item in fields.items():
            lines.append(f"  {name + '=' + show_default(item):<34} {item.metadata['doc']} (accepted: {describe_accepted(item)})")
    return "\n".join(lines)
