"""The findings of figures/findings.py in words: one plain-English sentence each, stating only what its
numbers support (one seed: "no spread"; a degenerate measure: said, not given as a number).

    texts = sentences(findings(metrics, runs))   # figures/publish.py: the report's Findings, first
"""

from __future__ import annotations

# The report's headings over the findings, one per paper's story (figures/report.py: findings_section).
DEPTH, PHASES, PLASTICITY = ("Effective depth (IntermediateNC)", "Learning phases (LearnPhase)",
                              "Warm start and resets (Berariu et al.)")
HEADINGS = {"effective_depth": DEPTH, "effective_depth_trend": DEPTH, "stop_pretraining": PHASES,
            "warm_start_gap": PLASTICITY, "intervention": PLASTICITY}


def sentences(found: list[dict]) -> list[str]:
    return [sentence(finding) for finding in found]


def headed_sentences(found: list[dict]) -> list[tuple[str, str]]:
    """(heading, sentence) per finding, in the findings' order: the report groups them under their story."""
    return [(HEADINGS[finding["kind"]], sentence(finding)) for finding in found]


def sentence(finding: dict) -> str:
    """The finding in one plain-English sentence that states only what its numbers support."""
    text = SENTENCES[finding["kind"]](finding)
    if finding.get("unfinished"):
        text += f" ({len(finding['unfinished'])} of its runs not done: read at their newest measured checkpoint.)"
    return text


def seeds_words(values: dict, unit: str = "seed", digits: str = ".3g") -> str:
    """"0.12 (1 seed, no spread)" or "mean m over n seeds, min a, max b, std s"."""
    if values["n"] == 0:
        return f"no {unit}"
    if values["n"] == 1:
        return f"{values['mean']:{digits}} (1 {unit}, no spread)"
    return (f"mean {values['mean']:{digits}} over {values['n']} {unit}s, min {values['min']:{digits}}, "
            f"max {values['max']:{digits}}, std {values['std']:.2g}")


def depth_sentence(finding: dict) -> str:
    runs, collapsed = finding["seeds"], finding["intermediate_collapse"]
    where = f"at iteration {', '.join(map(str, finding['iterations']))}"
    if collapsed == 0:
        first = (f"{finding['recipe']}: no intermediate collapse {where} in {runs} of {runs} run(s) — effective "
                 "depth (within ε of the last layer's NCC train accuracy) is the last layer itself, which is no depth")
    else:
        layers = sorted({entry["effective_depth_layer"] for entry in finding["per_run"] if not entry["no_intermediate_collapse"]})
        first = (f"{finding['recipe']}: {collapsed} of {runs} run(s) collapse at an intermediate layer {where} "
                 f"({', '.join(layers)}; effective depth {seeds_words(finding['effective_depth'], 'run')})"
                 + (f", {runs - collapsed} reach it only at the last layer (no intermediate collapse)" if collapsed < runs else ""))
    if not finding["literal_measured"]:
        return first + "; the paper's definition (NCC train error ≤ ε) is not measured."
    defined = finding["literal_defined"]
    if defined == 0:
        return first + f"; by the paper's definition (NCC train error ≤ ε) it is undefined in {finding['literal_measured']} of {finding['literal_measured']}: no layer reaches it."
    return first + (f"; by the paper's definition (NCC train error ≤ ε) it is defined in {defined} of "
                    f"{finding['literal_measured']} ({seeds_words(finding['effective_depth_literal'], 'run')}).")


def trend_sentence(finding: dict) -> str:
    key, values = finding["key"], finding["values"]
    held = f" ({finding['recipe']} held fixed)" if finding["held"] else ""
    parts = [f"{key}={entry['value']}: " + (f"{entry['effective_depth']['mean']:.3g} in {entry['intermediate_collapse']} of "
                                            f"{entry['runs']} run(s)" if entry["intermediate_collapse"] else
                                            f"no intermediate collapse in {entry['runs']} run(s)") for entry in values]
    verdict = {"no intermediate collapse": f"no run collapses at an intermediate layer, so the data show no effect of {key} on effective depth",
               "not comparable": f"some runs have no intermediate collapse, so no trend with {key} can be read",
               "rises": f"among runs that collapse, effective depth rises with {key}",
               "falls": f"among runs that collapse, effective depth falls with {key}",
               "unchanged": f"among runs that collapse, effective depth does not change with {key}",
               "not monotone": f"among runs that collapse, effective depth is not monotone in {key}"}[finding["direction"]]
    if finding["direction"] in ("rises", "falls") and finding["seed_ranges_overlap"]:
        verdict += " on average (the seeds' ranges overlap)"
    return f"Effective depth vs {key}{held}: {'; '.join(parts)} — {verdict}."


def iteration_band(at, low, high) -> str:
    return f"iteration {at:g}" + (f" (within τ of its best from {low:g} to {high:g})" if low == low else "")


def stop_sentence(finding: dict) -> str:
    seeds, stop = finding["seeds"], finding["stop"]
    over = f"the mean of {seeds} seeds' curves" if seeds > 1 else "1 seed, no spread"
    if stop != stop:
        reason = "; ".join(part for part in finding["missing_reason"].split("; ") if "transfer" in part) or "no transfer probe"
        return f"{finding['recipe']}: no 'stop pre-training here' at {finding['layer']} ({over}): {reason}."
    text = f"{finding['recipe']}: stop pre-training at {iteration_band(stop, finding['stop_low'], finding['stop_high'])}, " \
           f"the transfer-probe peak of {finding['layer']} ({over}"
    if seeds > 1:
        spread_of = finding["stop_seeds"]
        span = (f"every seed's own peak is at {spread_of['min']:g}" if spread_of["min"] == spread_of["max"] else
                f"the seeds' own peaks span {spread_of['min']:g}–{spread_of['max']:g}")
        text += f"; {span}, {spread_of['found']} of {seeds} seeds show one" if spread_of["found"] else "; no single seed shows a peak"
    text += ")"
    best = finding["classifier_best"]
    if best != best:
        return text + "; the classifier's best is not established."
    order = "before" if stop < best else "at" if stop == best else "after"
    return text + f"; the classifier is best at {iteration_band(best, finding['classifier_best_low'], finding['classifier_best_high'])}, so the stop comes {order} it."


def gap_sentence(finding: dict) -> str:
    if not finding["paired"]:
        return f"{finding['recipe']}: warm start without its from-scratch twin in the table: no gap measured."
    gap = finding["gap"]
    sign = "worse" if gap["mean"] > 0 else "better" if gap["mean"] < 0 else "no different"
    return (f"{finding['recipe']}: warm start ends {sign} than training from scratch — final test accuracy gap "
            f"(scratch − warm start) {seeds_words(gap, 'seed')}; warm start is worse in {finding['worse']} of {finding['paired']} seed(s).")


def intervention_sentence(finding: dict) -> str:
    if not finding["paired"]:
        return f"{finding['recipe']} ({finding['protocol']}): no plain warm start of the same seed in the table to compare with."
    recovered, share = finding["recovered"], finding["share_of_gap"]
    text = (f"{finding['recipe']} ({finding['protocol']}): final test accuracy minus the plain warm start's "
            f"{seeds_words(recovered, 'seed')}")
    if share["n"]:
        text += f"; that is {share['mean']:.0%} of the warm-start gap (mean over {share['n']} seed(s) with a positive gap)"
    else:
        text += "; no seed has a positive warm-start gap to recover"
    return text + "."


SENTENCES = {"effective_depth": depth_sentence, "effective_depth_trend": trend_sentence,
             "stop_pretraining": stop_sentence, "warm_start_gap": gap_sentence, "intervention": intervention_sentence}
