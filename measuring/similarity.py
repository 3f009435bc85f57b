"""python analysis.py similarity RUN_DIR_A RUN_DIR_B [align=iteration|stage] [out=FILE.csv] [options=...] — linear CKA (and
debiased CKA) of every layer of run A with the same layer of run B, at matching checkpoints, from their
probe snapshots (measured by `python analysis.py`; measuring/snapshots.py).

align=iteration (default) matches checkpoints of the same iteration; align=stage matches them by epochs
since the run's last stage began, so a warm-started run's stage 2 lines up with a run from scratch
(Berariu et al. 2021). Prints a layer × checkpoint table of CKA; out= also writes the long table as CSV.
options= picks the snapshots taken under other analysis options (`options=layers=blocks.0,blocks.1`, the words of
their rows' options column; options= alone: the defaults'); without it (auto), the defaults', or the one set of
options both runs' snapshots were taken under when they have no default ones (the header says which).

The execution options are analysis.py's (conf/subcommands.py): threads= and log_level= apply; the others
(no data is loaded, no model run) are accepted and bear on nothing here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conf import SettingsError
from conf.analysis import analysis_of
from conf.subcommands import CompareOptions, parse_subcommand
from folders import ExperimentFolder, RunFolder
from measuring.snapshots import SNAPSHOT_METRIC, Snapshot, usable_snapshots, vectors_of
from metrics import registry
from utils import atomic_write_text, ensure_writable_folder, set_cpu_threads, setup_logging

USAGE = ("usage: python analysis.py similarity RUN_DIR_A RUN_DIR_B [align=iteration|stage] [out=FILE.csv] [options=...] "
         "[execution options: threads=N log_level=INFO ...]")


def run_folder(run_dir: str) -> tuple[ExperimentFolder, RunFolder]:
    """The run folder and its experiment's (SettingsError naming the folder when it is not a run)."""
    folder = RunFolder(run_dir)
    if not folder.settings_path.exists():
        raise SettingsError(f"{folder.path} is not a run folder (it has no settings file); {USAGE}")
    return ExperimentFolder(folder.path.parent.parent), folder


def run_snapshots(run_dir: str, options: str) -> tuple[RunFolder, list[Snapshot]]:
    """A run folder's current snapshots under the analysis options `options` (SettingsError naming the folder when
    it is not a run or has none, and the options its snapshots were taken under)."""
    experiment, folder = run_folder(run_dir)
    found = usable_snapshots(experiment, folder.run_id, None, options)
    if not found:
        under = f" under options={options}" if options else " under the default analysis options"
        others = options_taken(run_dir)
        taken = (f"; it has snapshots under {', '.join(f'options={text}' if text else 'the defaults' for text in others)}"
                 if others else "")
        raise SettingsError(f"{folder.path} has no probe snapshots{under}{taken}; measure them first: python "
                            f"analysis.py experiment={experiment.path.name} out_dir={experiment.path.parent} "
                            f"{options + ' ' if options else ''}(cka_previous_layer in metrics=, probe_subset_size > 0)")
    return folder, found


def options_taken(run_dir: str) -> list[str]:
    """The analysis options (as rows say them) the run's current snapshots were taken under, sorted."""
    experiment, folder = run_folder(run_dir)
    return sorted({snapshot.options for snapshot in usable_snapshots(experiment, folder.run_id, None)})


def compared_options(first_dir: str, second_dir: str, typed: str) -> str:
    """The options whose snapshots are compared: those typed (as rows say them: sorted, the defaults left out;
    SettingsError for a word that is no analysis option), or with `auto` the defaults', unless both runs' snapshots
    were taken under one other set of options alone (a study measured with probe_dimensions=64 throughout)."""
    if typed != "auto":
        return registry.options_text(registry.METRICS[SNAPSHOT_METRIC], analysis_of(typed))
    shared = set(options_taken(first_dir)) & set(options_taken(second_dir))
    if "" in shared or len(shared) != 1:  # the defaults' or none in common (run_snapshots names what each has)
        if len(shared) > 1 and "" not in shared:
            raise SettingsError(f"the two runs' snapshots were taken under {len(shared)} sets of analysis options "
                                f"({'; '.join(sorted(shared))}); name one: options=...")
        return ""
    return shared.pop()


def alignment_key(snapshot: Snapshot, folder: RunFolder, align: str) -> float:
    """The checkpoint's position for matching: its iteration, or its epochs since its stage began."""
    if align == "iteration":
        return snapshot.iteration
    offset = folder.read_settings().pretrain_epochs if snapshot.stage == 2 else 0
    return round(snapshot.epoch - offset, 6)


def compare_runs(first_dir: str, second_dir: str, align: str = "iteration", options: str = "") -> pd.DataFrame:
    """Rows (key, iteration_a, iteration_b, layer, cka, cka_debiased) for every layer both runs have, at
    every checkpoint position both have, of their snapshots under `options` (as rows say them); SettingsError when
    none match or the probe subsets differ."""
    (first, first_snapshots), (second, second_snapshots) = run_snapshots(first_dir, options), run_snapshots(second_dir, options)
    if (len(first_snapshots[0].indices) != len(second_snapshots[0].indices)
            or (first_snapshots[0].indices != second_snapshots[0].indices).any()):
        raise SettingsError("the two runs' probe subsets differ (another dataset, test split or probe_subset_size); "
                            "measure both with the same probe_subset_size on the same dataset")
    by_key = {alignment_key(snapshot, second, align): snapshot for snapshot in second_snapshots}
    pairs = [(key, snapshot, by_key[key]) for snapshot in first_snapshots
             if (key := alignment_key(snapshot, first, align)) in by_key]
    if not pairs:
        raise SettingsError(f"no checkpoint of {first.path.name} matches one of {second.path.name} by {align} "
                            f"({sorted(alignment_key(s, first, align) for s in first_snapshots)} against "
                            f"{sorted(by_key)}); try align={'stage' if align == 'iteration' else 'iteration'}")
    rows = []
    for key, one, other in pairs:
        vectors, others = vectors_of(one), vectors_of(other)
        rows += [{align: key, "iteration_a": one.iteration, "iteration_b": other.iteration, "layer": name,
                  "cka": float(vector[0] @ others[name][0]), "cka_debiased": float(vector[1] @ others[name][1])}
                 for name, vector in vectors.items() if name in others]
    return pd.DataFrame(rows)


def similarity_command(arguments: list[str]) -> int:
    """`similarity RUN_DIR_A RUN_DIR_B [align=...] [out=...]`: print the table, write the CSV if asked."""
    runs, options, execution = parse_subcommand("similarity", arguments, ("RUN_DIR_A", "RUN_DIR_B"), CompareOptions,
                                                USAGE)
    setup_logging(execution.log_level)
    set_cpu_threads(execution.threads)
    align = options.align
    out = Path(options.out) if options.out else None
    if out is not None:
        ensure_writable_folder(out.parent)  # before any work: a read-only folder is the environment's (exit 1)
    under = compared_options(*runs, options.options)
    table = compare_runs(*runs, align=align, options=under)
    print(f"linear CKA, {Path(runs[0]).name} (A) vs {Path(runs[1]).name} (B), by {align} (columns)"
          f"{f', snapshots under {under}' if under else ''}:")
    print(table.pivot(index="layer", columns=align, values="cka").reindex(table["layer"].unique()).round(3).to_string())
    if out is not None:
        atomic_write_text(out, table.to_csv(index=False))
        print(f"wrote {out}: {len(table)} rows (cka and cka_debiased)")
    return 0
