"""The statistics behind a report's comparisons, each a plain function of numbers (no tables, no files).

Every condition of a study runs the same seeds, and a seed fixes the initial weights and the batches
(reglab.data.batching, the augmentation stream in reglab.data.image_tensors), so ``reg=none, seed=2`` and
``reg=dropout, seed=2`` are a matched pair. The default comparison is therefore paired:

- ``paired``: the mean of the per-seed differences, a 95% t-interval and the paired t-test's p (scipy's
  ``ttest_rel``), plus an exact sign-flip permutation p over the same differences (valid at any n; its smallest
  value is 2 / 2^n) and, from 10 pairs on, a paired bootstrap interval (below that a bootstrap of the pairs has
  too few distinct resamples to trust).
- ``welch``: the unpaired alternative (report ``--test welch``), for runs whose seeds do not match.
- ``two_level``: the test set is a sample too. With per-example predictions (reglab.predictions), an interval for a
  mean accuracy (or a paired difference of two) whose variance has both levels: the test examples' (a bootstrap
  that resamples the test examples, the same draw for every seed and both conditions, so the pairing holds) and
  the seeds' (the sample variance of the per-seed values over n, with n - 1 degrees of freedom; it also holds each
  seed's own test-example noise, so the interval errs slightly wide). The quantile is Student's t with
  Welch-Satterthwaite degrees of freedom. (A percentile bootstrap over 3 seeds has only 10 distinct
  resamples and covers far less than 95%; the seed level is why a t quantile is used.)
- ``mcnemar``: two runs on one test set, example by example: exact binomial below 25 discordant examples, else
  chi-square with continuity correction.
- ``paired_power`` / ``detectable_difference`` / ``seeds_needed``: the paired t-test's power, the smallest
  difference n seeds detect at 80% power, and the n the observed difference would need (taking the observed
  spread of the differences as the true one).
- ``probability_of_improvement``: P(row > baseline) over all pairs of runs (ties count half), with a stratified
  bootstrap interval, as rliable (Agarwal et al. 2021) reports it.

Bootstraps use a fixed generator, so a report is the same every time it is made from the same runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
POWER = 0.80
BOOTSTRAP_SAMPLES = 2000
MAX_SEEDS = 10_000  # seeds_needed gives up here: the difference is too small for its spread
MIN_BOOTSTRAP_PAIRS = 10  # fewer pairs: no bootstrap interval (3 pairs have 10 distinct resamples)
EXACT_SIGN_FLIPS = 16     # up to 2^16 sign patterns enumerated; more pairs: a Monte Carlo sample of them
EXACT_BELOW = 25    # McNemar: exact binomial test below this many discordant examples


def rng() -> np.random.Generator:
    return np.random.default_rng(20211)


@dataclass
class Comparison:
    """Row minus baseline, in the metric's own units."""

    diff: float
    low: float                 # 95% interval of the test named by ``test``
    high: float
    p: float                   # two-sided
    test: str = "paired"       # paired | welch
    n: int = 0                 # pairs (paired) or the smaller sample (welch)
    spread: float = math.nan   # sd of the differences (paired) or the pooled sd (welch): what power is computed from
    p_holm: float = math.nan
    boot_low: float = math.nan  # paired bootstrap interval (paired, n >= MIN_BOOTSTRAP_PAIRS)
    boot_high: float = math.nan
    p_sign_flip: float = math.nan  # exact sign-flip permutation p (paired)
    detectable: float = math.nan  # the smallest difference this n detects at 80% power
    seeds_needed: float = math.nan  # the n at which the observed difference would be detected at 80% power
    improvement: float = math.nan  # P(row > baseline), ties half
    improvement_low: float = math.nan
    improvement_high: float = math.nan


def no_spread(sd: float, values) -> bool:
    """A spread at the level of float rounding (metrics are float32: a gap of 1/360 minus 1/360 is not 0) is no
    spread: testing against it would call any difference significant. Below 1e-6 (or a millionth of the values'
    size) is rounding: no test set of under a million examples resolves it."""
    return sd <= 1e-6 * max(1.0, max((abs(v) for v in values), default=0.0))


def t_interval(mean: float, se: float, df: float, alpha: float = ALPHA) -> tuple[float, float]:
    from scipy.stats import t as student_t

    half = float(student_t.ppf(1 - alpha / 2, df)) * se
    return mean - half, mean + half


def paired(sample: dict, baseline: dict) -> Comparison | None:
    """``sample`` and ``baseline`` map a replicate key (the seed) to a value. None unless both have the same keys
    (at least 2): pairing only some runs would compare other means than the table shows."""
    from scipy.stats import t as student_t

    keys = list(sample)
    if len(keys) < 2 or set(keys) != set(baseline):
        return None
    diffs = np.array([sample[k] - baseline[k] for k in keys], dtype=float)
    n, mean, sd = len(diffs), float(diffs.mean()), float(diffs.std(ddof=1))
    if no_spread(sd, [*sample.values(), *baseline.values()]):  # every pair differs by the same amount
        return Comparison(mean, mean, mean, math.nan, "paired", n)
    se = sd / math.sqrt(n)
    low, high = t_interval(mean, se, n - 1)
    p = float(2 * student_t.sf(abs(mean / se), n - 1))
    comparison = Comparison(mean, low, high, p, "paired", n, spread=sd)
    comparison.p_sign_flip = sign_flip_p(diffs)
    if n >= MIN_BOOTSTRAP_PAIRS:
        comparison.boot_low, comparison.boot_high = paired_bootstrap(diffs)
    comparison.detectable = detectable_difference(sd, n)
    comparison.seeds_needed = seeds_needed(mean, sd)
    return comparison


def paired_bootstrap(diffs: np.ndarray, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """Percentile 95% interval of the mean difference, resampling the pairs."""
    diffs = np.asarray(diffs, dtype=float)
    index = rng().integers(0, len(diffs), size=(samples, len(diffs)))
    low, high = np.quantile(diffs[index].mean(axis=1), [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


def sign_flip_p(diffs: np.ndarray, samples: int = 20_000) -> float:
    """Two-sided permutation p of the mean difference: under 'no effect' each pair's difference is as likely
    positive as negative, so the p is the share of sign patterns whose |mean| reaches the observed one (every
    pattern up to EXACT_SIGN_FLIPS pairs, the observed one included; a random sample of them beyond)."""
    import itertools

    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) <= EXACT_SIGN_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(diffs))))
    else:
        signs = np.vstack([np.ones(len(diffs)), rng().choice((1.0, -1.0), size=(samples, len(diffs)))])
    means = np.abs((signs * diffs).mean(axis=1))
    return float(np.mean(means >= abs(diffs.mean()) * (1 - 1e-12)))


def welch(sample: list[float], baseline: list[float]) -> Comparison | None:
    """Difference in means with its 95% Welch t-interval and two-sided p; None unless both have n >= 2."""
    from scipy.stats import t as student_t

    n1, n2 = len(sample), len(baseline)
    if n1 < 2 or n2 < 2:
        return None
    m1, m2 = sum(sample) / n1, sum(baseline) / n2
    v1 = sum((x - m1) ** 2 for x in sample) / (n1 - 1)
    v2 = sum((x - m2) ** 2 for x in baseline) / (n2 - 1)
    diff, se = m1 - m2, math.sqrt(v1 / n1 + v2 / n2)
    if no_spread(se, [*sample, *baseline]):  # both constant: no spread to test against
        return Comparison(diff, diff, diff, math.nan, "welch", min(n1, n2))
    df = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    low, high = t_interval(diff, se, df)
    pooled = math.sqrt((v1 + v2) / 2)  # two_sample_power's effect is the difference over this common sd
    comparison = Comparison(diff, low, high, float(2 * student_t.sf(abs(diff / se), df)), "welch", min(n1, n2),
                            spread=pooled)
    comparison.detectable = detectable_difference(pooled, min(n1, n2), two_sample=True)
    return comparison


def paired_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired (one-sample) t-test with n pairs at standardised effect ``effect``
    (mean difference / sd of the differences)."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    df = n - 1
    critical = float(student_t.ppf(1 - alpha / 2, df))
    shift = effect * math.sqrt(n)
    return settled(float(nct.sf(critical, df, shift) + nct.cdf(-critical, df, shift)), shift, critical)


def at_level(comparison: Comparison, alpha: float) -> None:
    """Recompute a comparison's detectable difference and seeds needed at level ``alpha`` (e.g. Holm's first step,
    0.05 / the number of comparisons in the column), so they agree with the verdict the table prints."""
    if comparison.test == "paired":
        comparison.detectable = detectable_difference(comparison.spread, comparison.n, alpha=alpha)
        comparison.seeds_needed = seeds_needed(comparison.diff, comparison.spread, alpha=alpha)
    else:
        comparison.detectable = detectable_difference(comparison.spread, comparison.n, two_sample=True, alpha=alpha)


def two_sample_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided two-sample t-test, n per group, effect = difference / common sd."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    df = 2 * n - 2
    critical = float(student_t.ppf(1 - alpha / 2, df))
    shift = effect * math.sqrt(n / 2)
    return settled(float(nct.sf(critical, df, shift) + nct.cdf(-critical, df, shift)), shift, critical)


def settled(power: float, shift: float, critical: float) -> float:
    """scipy's noncentral t returns NaN far in its tail, where the power is plainly 1 (or the size, ~0)."""
    return power if not math.isnan(power) else (1.0 if abs(shift) > critical else 0.0)


def detectable_difference(sd: float, n: int, power: float = POWER, two_sample: bool = False,
                          alpha: float = ALPHA) -> float:
    """The smallest difference (in the data's units) a test at level ``alpha`` with ``n`` pairs (or n per group)
    finds with probability ``power``, when the differences (or each group) have standard deviation ``sd``."""
    from scipy.optimize import brentq

    if n < 2 or not sd > 0:
        return math.nan
    power_of = two_sample_power if two_sample else paired_power
    effect = brentq(lambda d: power_of(d, n, alpha) - power, 1e-9, 200.0)
    return float(effect * sd)


def seeds_needed(diff: float, sd: float, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest n (pairs) at which the paired t-test at level ``alpha`` would detect a true difference
    ``diff`` with probability ``power``, if the differences' sd is ``sd``; inf beyond MAX_SEEDS, NaN where there is
    no spread. (The observed difference and spread stand in for the true ones: a planning number, not evidence.)"""
    if not sd > 0 or diff == 0:
        return math.nan if not sd > 0 else math.inf
    effect = abs(diff) / sd
    if paired_power(effect, MAX_SEEDS, alpha) < power:
        return math.inf
    low, high = 2, MAX_SEEDS  # power grows with n: bisect for the first n that reaches it
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if paired_power(effect, middle, alpha) < power else (low, middle)
    return float(low)


def probability_of_improvement(sample: list[float], baseline: list[float], higher_is_better: bool = True,
                               samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float, float]:
    """P(X > Y) for X a run of the row and Y a run of the baseline (ties half): the Mann-Whitney statistic over
    all pairs, as rliable computes it; with a stratified bootstrap 95% interval (each group resampled alone)."""
    x, y = np.asarray(sample, dtype=float), np.asarray(baseline, dtype=float)
    if not higher_is_better:
        x, y = -x, -y
    if len(x) == 0 or len(y) == 0:
        return math.nan, math.nan, math.nan

    def statistic(a, b):  # a: (..., n), b: (..., m)
        greater = (a[..., :, None] > b[..., None, :]).mean(axis=(-2, -1))
        ties = (a[..., :, None] == b[..., None, :]).mean(axis=(-2, -1))
        return greater + 0.5 * ties

    generator = rng()
    xs = x[generator.integers(0, len(x), size=(samples, len(x)))]
    ys = y[generator.integers(0, len(y), size=(samples, len(y)))]
    low, high = np.quantile(statistic(xs, ys), [ALPHA / 2, 1 - ALPHA / 2])
    return float(statistic(x, y)), float(low), float(high)


@dataclass
class TwoLevel:
    """A mean over seeds of a per-example score (accuracy, or a paired difference of accuracies), with both
    sources of variance."""

    estimate: float
    low: float
    high: float
    seeds: int
    examples: int
    seed_se: float  # from the spread over seeds (0 with one seed: that level is then not estimated)
    test_se: float  # from resampling the test examples
    df: float


def two_level(scores: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, alpha: float = ALPHA,
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> TwoLevel:
    """``scores``: (seeds, examples), e.g. 1/0 correctness, or row minus baseline correctness of the same seed
    on the same example (-1, 0, 1). The estimate is the mean over seeds of each seed's mean over examples.
    ``bounds``: where the quantity can lie (an accuracy in [0, 1]); the interval is cut there."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be (seeds, examples), got shape {scores.shape}")
    n, m = scores.shape
    per_seed = scores.mean(axis=1)
    estimate = float(per_seed.mean())
    # One draw of the test examples per replicate, shared by every seed (they were all scored on one test set).
    weights = rng().multinomial(m, np.full(m, 1.0 / m), size=samples) / m
    test_var = float((weights @ scores.T).mean(axis=1).var(ddof=1))
    # The seeds' level: their sample variance over n. It holds each seed's own example-level noise too, which the
    # shared bootstrap also counts, so the interval errs wide (simulated: 95-96% coverage where seeds matter, 98%
    # where they do not). Taking that part out under-covered at 3 seeds (93%), so it stays in.
    seed_var = float(per_seed.var(ddof=1)) / n if n > 1 else 0.0
    variance = seed_var + test_var
    if variance == 0:
        return TwoLevel(estimate, estimate, estimate, n, m, 0.0, 0.0, math.inf)
    parts = (seed_var ** 2 / (n - 1) if n > 1 else 0.0) + test_var ** 2 / (m - 1)
    df = variance ** 2 / parts if parts > 0 else math.inf
    low, high = t_interval(estimate, math.sqrt(variance), df, alpha)
    low, high = max(low, bounds[0]), min(high, bounds[1])
    return TwoLevel(estimate, low, high, n, m, math.sqrt(seed_var), math.sqrt(test_var), df)


@dataclass
class McNemar:
    only_first: int   # examples the first run gets right and the second wrong
    only_second: int
    statistic: float  # chi-square (continuity-corrected); NaN for the exact test
    p: float
    exact: bool


def mcnemar(first_correct, second_correct) -> McNemar:
    """McNemar's test of two runs' correctness on the same test examples (two-sided)."""
    from scipy.stats import binomtest, chi2

    a, b = np.asarray(first_correct).astype(bool), np.asarray(second_correct).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"the runs scored different test sets ({a.shape[0]} vs {b.shape[0]} examples)")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(0, 0, math.nan, 1.0, True)
    if discordant < EXACT_BELOW:
        return McNemar(only_a, only_b, math.nan, float(binomtest(only_a, discordant, 0.5).pvalue), True)
    statistic = max(0, abs(only_a - only_b) - 1) ** 2 / discordant
    return McNemar(only_a, only_b, float(statistic), float(chi2.sf(statistic, 1)), False)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment; NaN p-values stay NaN and do not count towards the family size."""
    valid = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        adjusted[i] = running
    return adjusted
