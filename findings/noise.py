"""A number over seeds with its noise, and the one rule that turns it into a verdict word.

    estimate = over_seeds([0.031, 0.052, 0.044], resolution=3 / 10_000)
    estimate.verdict        # "higher": the interval over seeds excludes 0 by more than the resolution
    estimate.words("accuracy points", scale=100)   # "+4.2 (97.5 % interval 1.6 to 6.8 over 3 seeds)"

The values are one per seed: a difference paired by seed (warm start − its scratch twin of the same seed),
or a quantity whose sign is the question. The interval is Student's t-interval of their mean at 97.5 %:
with the 2–6 seeds a study has, the seeds' min–max would cover the true mean half the time for 2 seeds
(the chance that it lies between two draws) and a bootstrap resamples too few values to be wider than
the spread it sees; the t-interval covers it as often as it says under normal seed noise, and is honestly
wide for few seeds (t = 25.5 for 2, 6.2 for 3, 3.2 for 6). 97.5 % rather than 95 %: a report states a
verdict per condition and question, and at 95 % a question with no effect gets a direction in 5 % of
studies, the very limit the read-out is held to (tests/test_readout.py measures it over 200 null grids
per question); at 97.5 % that is 2.5 %, with room for seed noise heavier-tailed than normal. A direction ("higher", "lower") is stated only when the interval excludes 0 by
more than `resolution`, the smallest difference the measurement can tell (a few test examples for an
accuracy: docs/experiments.md); otherwise "no measurable difference" with the interval's half-width. One
seed gives its value and no direction; none, or only undefined values, stay undefined.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from scipy import stats

CONFIDENCE = 0.975
INTERVAL = f"{CONFIDENCE * 100:g} % interval"  # how every sentence and table names it
HIGHER, LOWER, NO_DIFFERENCE, ONE_SEED, UNDEFINED = ("higher", "lower", "no measurable difference", "one seed",
                                                     "undefined")
VERDICTS = (HIGHER, LOWER, NO_DIFFERENCE, ONE_SEED, UNDEFINED)
DIRECTIONS = (HIGHER, LOWER)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The mean over seeds, its CONFIDENCE t-interval (NaN for fewer than two seeds), the seed count, the resolution
    the verdict used and the verdict (one of VERDICTS)."""

    estimate: float
    low: float
    high: float
    seeds: int
    resolution: float
    verdict: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def words(self, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
        """The estimate with its interval in words, scaled (100: accuracy points): `+4.2 points (97.5 % interval
        1.6 to 6.8 over 3 seeds)`, `0.31 (1 seed, no interval)`, `undefined (no seed)`."""
        unit = f" {unit}" if unit else ""
        if self.verdict == UNDEFINED:
            return "undefined (no seed with a value)"
        value = f"{self.estimate * scale:+.{digits}f}{unit}"
        if self.seeds == 1:
            return f"{value} (1 seed, no interval)"
        return (f"{value} ({INTERVAL} {self.low * scale:+.{digits}f} to {self.high * scale:+.{digits}f} over "
                f"{self.seeds} seeds)")


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of Student's t-interval at CONFIDENCE for the mean of `values` (two or more)."""
    mean = statistics.fmean(values)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def seed_band(values) -> tuple[float, float]:
    """The figures' band over seeds (seaborn's errorbar=seed_band): the same t-interval as every verdict, so a
    figure and its sentence read the same numbers; none (NaN) for one seed."""
    finite = [float(value) for value in values if math.isfinite(float(value))]
    if len(finite) < 2:
        return math.nan, math.nan
    return t_interval(finite)[1:]


def over_seeds(values, resolution: float) -> Estimate:
    """The verdict on one value per seed (module docstring); NaN values are undefined and left out."""
    finite = [float(value) for value in values if value is not None and math.isfinite(float(value))]
    if not finite:
        return Estimate(math.nan, math.nan, math.nan, 0, resolution, UNDEFINED)
    if len(finite) == 1:
        return Estimate(finite[0], math.nan, math.nan, 1, resolution, ONE_SEED)
    mean, low, high = t_interval(finite)
    verdict = HIGHER if low > resolution else LOWER if high < -resolution else NO_DIFFERENCE
    return Estimate(mean, low, high, len(finite), resolution, verdict)


def accuracy_resolution(test_examples: float, examples: int = 3) -> float:
    """The smallest accuracy difference a verdict may rest on: `examples` test examples' worth (3 of N)."""
    return examples / test_examples if test_examples and test_examples == test_examples else math.nan
