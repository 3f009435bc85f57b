"""The options of analysis.py's subcommands, read with the one grammar of every command line here.

    python analysis.py features RUN_DIR iteration=256 split=test out=feats.npz
    python analysis.py similarity RUN_DIR_A RUN_DIR_B align=stage out=cka.csv

As for train.py: one key=value a word, each value read and checked by its field's type and range
(global_settings.parse_value), an unknown key refused with the closest known one, every error one line.
Every subcommand takes the execution options train.py and analysis.py take (out_dir, data_root, download,
device, threads, log_level, progress, ...: `train.py --help`), so one set of common options serves every
command; each applies those that bear on it (threads and log_level all; data_root, download and device
where data is loaded and a model run). (`import DIR` takes run settings and reads them with
conf.cli.parse_arguments itself.)
"""

import dataclasses
import difflib
from dataclasses import dataclass

from conf.errors import SettingsError
from conf.global_settings import Execution, check_fields, setting
from conf.words import field_readers, read_key_values

EXECUTION_FIELDS = {item.name: item for item in dataclasses.fields(Execution)}


@dataclass(frozen=True)
class FeatureOptions:
    """`features RUN_DIR ...`: one checkpoint's features of every layer."""

    iteration: int = setting(-1, "the checkpoint's iteration (required)", minimum=-1)
    split: str = setting("test", "the split whose features are written", choices=("train", "test"))
    subset: str = setting("all", "all examples of the split, or the probe snapshot's", choices=("all", "probe"))
    out: str = setting("features.npz", "the .npz file written")
    features_at: str = setting("post_activation", "the feature point (analysis.py --help)",
                               choices=("post_activation", "pre_activation"))
    probe_subset_size: int = setting(1024, "subset=probe: the probe subset's test examples", minimum=1)
    probe_dimensions: int = setting(512, "subset=probe: the features' pooled width", minimum=1)

    def __post_init__(self):
        check_fields(self)


# features ran on the CPU and never downloaded before it took every execution option: so it still does
# unless device= or download= is typed.
FEATURE_EXECUTION = {"device": "cpu", "download": False}


@dataclass(frozen=True)
class CompareOptions:
    """`similarity RUN_DIR_A RUN_DIR_B ...`: CKA of two runs' layers."""

    align: str = setting("iteration", "line checkpoints up by iteration, or by stage (a warm start's stage 2 "
                         "against a run from scratch)", choices=("iteration", "stage"))
    out: str = setting("", "also write the table to this CSV file ('' = print only)")
    options: str = setting("auto", "the snapshots taken under these analysis options, as their rows' options column "
                           "says them (e.g. options=layers=blocks.0,blocks.1; '' = the defaults; auto = the defaults', or "
                           "the one set of options both runs' snapshots were taken under when they have no default ones)")

    def __post_init__(self):
        check_fields(self)


def parse_subcommand(command: str, arguments: list[str], positional: tuple[str, ...], options_class, usage: str,
                     execution_defaults: dict | None = None):
    """(the positional words, an `options_class` of its key=value words, the Execution of the execution
    options typed over `execution_defaults`); SettingsError (one line, the usage after it) for a missing or
    extra positional word or an unknown key (the closest one named)."""
    words = [argument for argument in arguments if "=" not in argument]
    if len(words) != len(positional):
        raise SettingsError(f"{command} needs {' '.join(positional)}, got {len(words)} word(s) without '='; {usage}")
    fields = {item.name: item for item in dataclasses.fields(options_class)}
    typed = read_key_values([argument for argument in arguments if "=" in argument],
                            {"options": field_readers(fields), "execution": field_readers(EXECUTION_FIELDS)},
                            lambda key: unknown_key(key, fields, usage))
    values, execution = typed["options"], {**(execution_defaults or {}), **typed["execution"]}
    return words, options_class(**values), Execution(**execution)


def unknown_key(key: str, fields: dict, usage: str) -> SettingsError:
    """The one line for a key neither the subcommand nor the execution options know: the closest, and all."""
    close = difflib.get_close_matches(key, [*fields, *EXECUTION_FIELDS], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return SettingsError(f"unknown key {key!r}; {hint}accepted: {', '.join(fields)}, and the execution options "
                         f"{', '.join(EXECUTION_FIELDS)}; {usage}")
