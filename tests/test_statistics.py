"""The report's statistics against independent computations, and the matched-seed design they rely on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from reglab.report import stats


# --- matched seeds: a seed fixes the initial weights and the batches, whatever the regularizers -------------------

def first_weights_and_batches(tmp_path, reg: str) -> tuple[dict, list]:
    import pytorch_lightning as pl

    from conftest import compose_config
    from reglab.job import build_run
    from reglab.preflight import validate
    from reglab.results import RunRecord

    class Record(pl.Callback):
        def __init__(self):
            self.weights, self.batches = {}, []

        def on_fit_start(self, trainer, module):
            self.weights = {k: v.detach().clone() for k, v in module.model.state_dict().items()}

        def on_train_batch_start(self, trainer, module, batch, batch_idx):  # after augmentation
            self.batches.append(tuple(t.detach().clone() for t in batch))

    # Crops and flips on, so the augmentation stream is part of what must match.
    cfg = compose_config(tmp_path / reg, ["data=digits", f"reg={reg}", "seed=3", "+trainer.max_steps=4",
                                          "trainer.max_epochs=-1", "data.crop_padding=2", "data.hflip=true",
                                          "data.batch_size=500", "+trainer.limit_val_batches=0"])
    recorder = Record()
    run = validate(cfg)
    parts = build_run(run, RunRecord.start(cfg, run.label), extra_callbacks=(recorder,))
    parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    from reglab.loggers import finish_wandb

    finish_wandb(exit_code=0)
    return recorder.weights, recorder.batches


def test_matched_seeds_share_initial_weights_and_augmented_batches(tmp_path):
    """Dropout draws from the global RNG in every step; the batches' crops and flips must not (they did: the
    second batch of reg=dropout differed from reg=none's)."""
    weights, batches = first_weights_and_batches(tmp_path, "none")
    assert len(batches) == 4
    for reg in ("dropout", "[l1,dropout]", "dropconnect"):
        other_weights, other_batches = first_weights_and_batches(tmp_path, reg)
        assert other_weights.keys() == weights.keys()
        assert all(torch.equal(weights[k], other_weights[k]) for k in weights), reg
        assert len(other_batches) == len(batches)
        for step, (a, b) in enumerate(zip(batches, other_batches)):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"{reg}: batch {step} differs"


# --- paired comparisons --------------------------------------------------------------------------------------------

def test_paired_comparison_equals_scipy_ttest_rel_and_a_hand_computation():
    from scipy.stats import t as student_t
    from scipy.stats import ttest_rel

    row = {0: 0.641, 1: 0.652, 2: 0.629, 3: 0.660}
    base = {0: 0.630, 1: 0.633, 2: 0.627, 3: 0.641}
    comparison = stats.paired(row, base)
    reference = ttest_rel(list(row.values()), list(base.values()))
    diffs = [row[k] - base[k] for k in row]  # 0.011, 0.019, 0.002, 0.019
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    half = student_t.ppf(0.975, 3) * sd / 2
    assert comparison.diff == pytest.approx(mean) == pytest.approx(0.01275)
    assert comparison.p == pytest.approx(reference.pvalue)
    assert (comparison.low, comparison.high) == pytest.approx((mean - half, mean + half))
    assert (comparison.low, comparison.high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert comparison.test == "paired" and comparison.n == 4
    # all four differences positive: of the 2^4 sign patterns, only all-plus and all-minus reach |mean|
    assert comparison.p_sign_flip == pytest.approx(2 / 16)
    assert math.isnan(comparison.boot_low)  # fewer than 10 pairs: no bootstrap interval
    many = stats.paired({k: v + 0.01 * (k % 3) for k, v in enumerate(np.linspace(0.6, 0.7, 12))},
                        dict(enumerate(np.linspace(0.6, 0.7, 12))))
    assert many.boot_low <= many.diff <= many.boot_high


def test_paired_pairs_by_seed_not_by_position_and_only_when_the_seeds_match():
    row = {2: 0.70, 0: 0.60, 1: 0.65}
    base = {0: 0.58, 1: 0.64, 2: 0.66}
    comparison = stats.paired(row, base)
    assert comparison.n == 3 and comparison.diff == pytest.approx((0.02 + 0.01 + 0.04) / 3)
    assert stats.paired({**row, 7: 0.99}, base) is None  # a run without a partner: not paired (Welch instead)
    assert stats.paired({0: 0.5}, {0: 0.4}) is None  # one pair: nothing to test


def test_welch_detectable_difference_has_80_percent_power():
    comparison = stats.welch([0.60, 0.62, 0.61, 0.63], [0.58, 0.59, 0.61, 0.60])
    assert stats.two_sample_power(comparison.detectable / comparison.spread, 4) == pytest.approx(0.8)


def test_paired_beats_welch_when_seeds_share_their_noise():
    """A seed effect common to both conditions cancels in the pairs: the paired test sees a small steady gain
    that Welch's test cannot."""
    seed_effect = {0: -0.02, 1: 0.0, 2: 0.025}
    base = {s: 0.63 + e for s, e in seed_effect.items()}
    row = {s: v + 0.007 + 0.001 * s for s, v in base.items()}
    assert stats.paired(row, base).p < 0.01
    assert stats.welch(list(row.values()), list(base.values())).p > 0.5


def test_probability_of_improvement_counts_pairs_and_ties_half():
    value, low, high = stats.probability_of_improvement([1, 2, 3], [0, 2, 2.5])
    # pairs (x > y): 1>0; 2>0; 3>0, 3>2, 3>2.5 -> 5 of 9, one tie (2, 2) -> (5 + 0.5) / 9
    assert value == pytest.approx(5.5 / 9)
    assert 0 <= low <= value <= high <= 1
    assert stats.probability_of_improvement([0.1], [0.2], higher_is_better=False)[0] == 1.0


# --- the test set is a sample too ----------------------------------------------------------------------------------

def test_two_level_interval_covers_a_known_mean_in_at_least_93_percent_of_200_studies():
    """Each study: 3 seeds (a seed shifts every example's logit), 500 test examples drawn from a population of
    examples of varying difficulty. The known mean is the population's expected accuracy over seeds."""
    from scipy.special import expit

    rng = np.random.default_rng(7)
    mu, spread, seed_sd, seeds, examples = 1.0, 1.5, 0.15, 3, 500
    truth = expit(rng.normal(mu, spread, 2_000_000) + rng.normal(0, seed_sd, 2_000_000)).mean()
    covered = 0
    for _ in range(200):
        difficulty = rng.normal(mu, spread, examples)
        shift = rng.normal(0, seed_sd, seeds)
        correct = rng.random((seeds, examples)) < expit(difficulty[None, :] + shift[:, None])
        interval = stats.two_level(correct.astype(float), samples=1000)
        covered += interval.low <= truth <= interval.high
    assert covered / 200 >= 0.93


def test_two_level_with_one_seed_has_the_test_sets_variance_only():
    correct = np.array([[1.0] * 60 + [0.0] * 40])
    interval = stats.two_level(correct)
    assert interval.estimate == pytest.approx(0.6) and interval.seed_se == 0
    assert interval.test_se == pytest.approx(math.sqrt(0.6 * 0.4 / 100), rel=0.1)  # the binomial standard error


def test_mcnemar_equals_worked_examples():
    # Wikipedia's McNemar example: 121 discordant one way, 59 the other (and 101 + 33 concordant).
    first = np.r_[np.ones(121), np.zeros(59), np.ones(101), np.zeros(33)]
    second = np.r_[np.zeros(121), np.ones(59), np.ones(101), np.zeros(33)]
    result = stats.mcnemar(first, second)
    assert (result.only_first, result.only_second) == (121, 59) and not result.exact
    assert result.statistic == pytest.approx((62 - 1) ** 2 / 180)  # with continuity correction: 20.67
    assert result.p == pytest.approx(5.45e-6, rel=0.01)
    # Exact below 25 discordant: 3 vs 10 -> p = 2 * P(X <= 3), X ~ Binomial(13, 1/2) = 2 * 378 / 8192
    small = stats.mcnemar(np.r_[np.ones(3), np.zeros(10), np.ones(50)], np.r_[np.zeros(3), np.ones(10), np.ones(50)])
    assert small.exact and small.p == pytest.approx(2 * 378 / 8192)
    assert stats.mcnemar(np.ones(5), np.ones(5)).p == 1.0
    balanced = stats.mcnemar(np.r_[np.ones(13), np.zeros(13)], np.r_[np.zeros(13), np.ones(13)])
    assert balanced.statistic == 0 and balanced.p == 1.0  # b = c: no evidence either way


# --- power ---------------------------------------------------------------------------------------------------------

def test_power_equals_statsmodels_and_a_simulation():
    # statsmodels: TTestPower().power(effect_size=1, nobs=10, alpha=0.05) = 0.8031;
    # TTestPower().solve_power(effect_size=0.5, power=0.8) = 33.37; TTestIndPower().power(0.5, nobs1=64) = 0.8015
    assert stats.paired_power(1.0, 10) == pytest.approx(0.8031, abs=1e-4)
    assert stats.seeds_needed(0.5, 1.0) == 34
    assert stats.two_sample_power(0.5, 64) == pytest.approx(0.8015, abs=1e-4)
    assert stats.paired_power(stats.detectable_difference(2.0, 10) / 2.0, 10) == pytest.approx(0.8)
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(0)
    rejected = np.mean([ttest_1samp(rng.normal(0.8, 1.0, 12), 0).pvalue < 0.05 for _ in range(4000)])
    assert rejected == pytest.approx(stats.paired_power(0.8, 12), abs=0.025)
    assert stats.seeds_needed(0.0, 1.0) == math.inf and math.isnan(stats.seeds_needed(0.5, 0.0))


# --- the report -----------------------------------------------------------------------------------------------------

def write_predicted_run(root, reg, seed, correct, labels):
    from reglab import predictions

    folder = root / f"reg={reg},seed={seed}"
    folder.mkdir(parents=True)
    pred = np.where(correct, labels, (labels + 1) % 10)
    entry = predictions.save(folder, {"label": labels, "pred": pred, "confidence": np.full(len(labels), 0.9)})
    acc = float(np.mean(correct))
    record = {"status": "completed", "study": "s", "seed": seed,
              "choices": {"data": "digits", "model": "cnn", "reg": reg, "optim": "adamw"},
              "config": {"reg": {reg: {"p": 0.5}} if reg != "none" else {}},
              "metrics": {"test/acc": acc, "train/acc": 1.0, "gen_gap": 1.0 - acc}, "test_predictions": entry}
    (folder / "results.json").write_text(json.dumps(record))


def test_report_shows_two_level_intervals_mcnemar_and_power(tmp_path):
    from reglab.report.collect import load_results, runs_frame
    from reglab.report.tables import summarize, to_frame, to_latex, to_markdown

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 400)
    base_correct = {seed: rng.random(400) < 0.6 for seed in range(3)}
    for seed, correct in base_correct.items():
        write_predicted_run(tmp_path, "none", seed, correct, labels)
        better = correct | (rng.random(400) < 0.1)  # the same examples right, and some more
        write_predicted_run(tmp_path, "dropout", seed, better, labels)
    table = summarize(runs_frame(load_results([tmp_path])), by="reg", metrics=["test/acc"])
    level, diff = table.test_set["dropout"], table.test_set_diff["dropout"]
    assert level.seeds == 3 and level.examples == 400 and level.low < level.estimate < level.high
    assert diff.estimate == pytest.approx(table.cells[("dropout", "test/acc")].comparison.diff)
    tests = table.mcnemar["dropout"]
    assert [seed for seed, _ in tests] == [0, 1, 2] and all(m.only_second == 0 and m.p < 1e-4 for _, m in tests)
    markdown = to_markdown(table)
    assert "95% interval (seeds + test examples)" in markdown and "McNemar" in markdown
    assert "- dropout vs none, Test acc. (%): +" in markdown and "at 80% power" in markdown
    assert r"\label{tab:" in to_latex(table) and "test/acc two_level low" in to_frame(table)
    welch_table = summarize(runs_frame(load_results([tmp_path])), by="reg", metrics=["test/acc"], test="welch")
    assert welch_table.cells[("dropout", "test/acc")].comparison.test == "welch"
    assert "Welch's t-test" in to_markdown(welch_table)


def test_bold_is_the_best_and_rows_the_paired_test_cannot_tell_from_it(tmp_path):
    """A gap of -0.44 ± 1.43 is not 'best': the gap's best is the one closest to 0, and rows within noise of the
    best are bold too."""
    from reglab.report.collect import load_results, runs_frame
    from reglab.report.tables import summarize

    values = {"none": ([0.60, 0.61, 0.62], [0.30, 0.31, 0.29]), "l2": ([0.66, 0.671, 0.678], [0.15, 0.17, 0.16]),
              "l1": ([0.655, 0.68, 0.67], [-0.02, 0.03, -0.00]), "dropout": ([0.50, 0.62, 0.70], [-0.1, 0.0, -0.2])}
    for reg, (accs, gaps) in values.items():
        for seed, (acc, gap) in enumerate(zip(accs, gaps)):
            folder = tmp_path / f"reg={reg},seed={seed}"
            folder.mkdir()
            (folder / "results.json").write_text(json.dumps({
                "status": "completed", "seed": seed, "choices": {"reg": reg, "data": "d", "model": "m"},
                "config": {"reg": {reg: {}} if reg != "none" else {}},
                "metrics": {"test/acc": acc, "gen_gap": gap, "train/acc": acc + gap}}))
    table = summarize(runs_frame(load_results([tmp_path])), by="reg", metrics=["test/acc", "gen_gap"])
    bold = {m: {r.label for r in table.rows if table.cells[(r.label, m)].best} for m in ("test/acc", "gen_gap")}
    assert bold["test/acc"] == {"l2", "l1", "dropout"}  # l2 best; l1 and noisy dropout within noise; none is not
    assert bold["gen_gap"] == {"l1", "dropout"}  # l1's gap is closest to 0; dropout's -0.10 ± 0.10 not told apart
