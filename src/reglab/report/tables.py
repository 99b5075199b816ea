"""Paper tables that say what they are.

- A row is one **condition** (reglab.identity): runs that differ in anything but the seed are never pooled. Where
  ``--by`` would pool several conditions, the row is split and its label names what differs:
  ``none (model=cnn_small)``. Two completed runs of one condition with the same seed count once.
- A cell is the mean ± sample std (ddof=1) over the row's seeds; with n = 1 it is the value alone.
- Each row is compared with the baseline row of the same context, seed by seed (matched seeds: reglab.report.stats):
  the mean paired difference with its 95% t-interval and the paired t-test's p, Holm-adjusted over the rows of the
  table, per metric; † marks adjusted p < 0.05. With it: a paired bootstrap interval, P(row > baseline), the
  smallest difference the n detects at 80% power and the seeds the observed difference would need. ``test="welch"``
  compares unpaired instead (as does a row whose seeds do not match the baseline's).
- With per-example test predictions (reglab.predictions), test accuracy also gets a two-level interval (seeds and
  test examples) and each seed's pair of runs a McNemar test.
- Bold marks, in columns with a direction (accuracy ↑; loss, ECE, NLL, Brier ↓; gen. gap: closest to 0), the best
  mean within a context and every row that the paired test (unadjusted p < 0.05) cannot tell from it; norms and
  sparsity describe a run and get no bold unless a study declares a goal for them.
- Regime: the baseline's train accuracy and generalization gap. A baseline that does not overfit (gap below
  ``overfit_threshold``) cannot show a regularization benefit, and the table says so; a row whose train accuracy
  falls more than ``underfit_threshold`` below the baseline's is marked as underfitting (‡).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reglab.fit import NOT_MEANINGFUL
from reglab.identity import under
from reglab.report.stats import (Comparison, McNemar, TwoLevel, at_level, holm, paired, probability_of_improvement,
                                 welch)

__all__ = ["Comparison", "holm", "summarize", "to_frame", "to_latex", "to_markdown", "welch"]

DEFAULT_METRICS = ("test/acc", "val/acc", "gen_gap", "weights/zero_frac", "weights/small_frac", "weights/l2")
SIGNIFICANCE = 0.05
SIGNIFICANCE_MARK = "†"
UNDERFIT_MARK = "‡"
OVERFIT_THRESHOLD = 0.01   # the baseline's gap (train - val accuracy) below which it does not overfit
UNDERFIT_THRESHOLD = 0.05  # train accuracy this far below the baseline's: the row underfits
TESTS = ("paired", "welch")
MAX_QUALIFIERS = 4         # keys named in a split row's label; the caption lists them all


@dataclass(frozen=True)
class Metric:
    key: str
    label: str                 # Markdown and console header
    latex: str                 # LaTeX header
    scale: float = 1.0         # shown as value * scale (fractions as % or points)
    better: str | None = None  # "max", "min", "zero" (closest to 0 is best), or None: descriptive (no bold, no test)

    def score(self, value: float) -> float:
        """Higher is better."""
        return value if self.better == "max" else -abs(value) if self.better == "zero" else -value

    @property
    def arrow(self) -> str:
        return {"max": "↑", "min": "↓", "zero": "→0"}.get(self.better or "", "")


def _metrics() -> dict[str, Metric]:
    metrics = [
        Metric("test/acc", "Test acc. (%)", r"Test acc.\ (\%)", 100, "max"),
        Metric("val/acc", "Val. acc. (%)", r"Val.\ acc.\ (\%)", 100, "max"),
        Metric("train/acc", "Train acc. (%)", r"Train acc.\ (\%)", 100),
        Metric("gen_gap", "Gen. gap (pt)", r"Gen.\ gap (pt)", 100, "zero"),
        Metric("test/loss", "Test loss", "Test loss", 1, "min"),
        Metric("val/loss", "Val. loss", r"Val.\ loss", 1, "min"),
        Metric("weights/zero_frac", "Exact zeros (%)", r"Exact zeros (\%)", 100),
        Metric("weights/small_frac", "|w| < ε (%)", r"$|w|<\varepsilon$ (\%)", 100),
        Metric("weights/l2", "‖w‖₂", r"$\lVert w\rVert_2$"),
        Metric("weights/l1", "‖w‖₁", r"$\lVert w\rVert_1$"),
        Metric("weights/nonzero", "Non-zero weights", "Non-zero weights"),
        Metric("weights/sparse_bytes", "Sparse size (B)", "Sparse size (B)"),
        Metric("weights/dense_bytes", "Dense size (B)", "Dense size (B)"),
    ]
    metrics.append(Metric("ts/temperature", "Temperature", "Temperature"))
    for kind, name in (("std", "Std."), ("ts", "TS"), ("mc", "MC")):
        metrics += [Metric(f"{kind}/acc", f"{name} acc. (%)", rf"{name} acc.\ (\%)", 100, "max"),
                    Metric(f"{kind}/nll", f"{name} NLL", f"{name} NLL", 1, "min"),
                    Metric(f"{kind}/ece", f"{name} ECE (%)", rf"{name} ECE (\%)", 100, "min"),
                    Metric(f"{kind}/brier", f"{name} Brier", f"{name} Brier", 1, "min"),
                    Metric(f"{kind}/entropy", f"{name} entropy", f"{name} entropy")]
    return {m.key: m for m in metrics}


METRICS = _metrics()
BY_LABELS = {"reg": "Regularizer", "data": "Data", "model": "Model", "optim": "Optimizer",
             "reg.l1.strength": "L1 λ", "reg.l2.strength": "L2 λ", "reg.dropout.p": "Dropout p",
             "reg.weight_decay.decay": "Weight decay", "setting": "Setting"}
CHOICE_GROUPS = ("data", "model", "reg", "optim", "trainer", "callbacks")


def metric_info(key: str, goals: dict | None = None) -> Metric:
    """The metric's labels, scale and direction; ``goals`` ({key: "max"|"min"}) gives a descriptive metric a
    direction for one study (e.g. exact zeros, where sparsity is the point)."""
    known = METRICS.get(key) or Metric(key, key, latex_escape(key))
    if goals and key in goals:
        return Metric(known.key, known.label, known.latex, known.scale, goals[key])
    return known


@dataclass
class Cell:
    mean: float
    std: float   # sample std (ddof=1); NaN when n = 1
    n: int
    best: bool = False
    comparison: Comparison | None = None

    @property
    def significant(self) -> bool:
        return self.comparison is not None and self.comparison.p_holm < SIGNIFICANCE


@dataclass
class Row:
    label: str
    value: object           # the --by value
    context: str            # what the row shares with its baseline ('' when the table has one context)
    condition: str
    seeds: list
    run_dirs: list[str]
    replicates: list = field(default_factory=list)  # (seed, fold) of each run: what pairs it with the baseline's
    qualifier: str = ""          # what sets it apart from rows of the same value: its label's parentheses
    baseline: str | None = None  # label of the row it is compared with
    underfits: bool = False

    @property
    def n(self) -> int:
        return len(self.run_dirs)


@dataclass
class Regime:
    """How the baseline of one context fits: can a regularizer show a benefit here?"""

    context: str
    baseline: str | None
    train_acc: Cell | None = None
    gen_gap: Cell | None = None
    overfit_threshold: float = OVERFIT_THRESHOLD
    setting: str = ""  # the baseline's data regime: data, training-set size, augmentation, model, budget
    underfit: list[str] = field(default_factory=list)  # why the baseline's runs underfit (reglab.fit), if they do

    @property
    def overfits(self) -> bool | None:
        return None if self.gen_gap is None else self.gen_gap.mean >= self.overfit_threshold


@dataclass
class Table:
    by: str
    metrics: list[str]
    rows: list[Row]
    cells: dict[tuple[str, str], Cell]
    baseline: str | None
    regimes: list[Regime] = field(default_factory=list)
    split_keys: list[str] = field(default_factory=list)  # the condition keys that tell the contexts apart
    split_by: list[str] = field(default_factory=list)    # the same for people: a group whose choice differs
    notes: list[str] = field(default_factory=list)
    not_completed: list[dict] = field(default_factory=list)
    goals: dict = field(default_factory=dict)
    overfit_threshold: float = OVERFIT_THRESHOLD
    underfit_threshold: float = UNDERFIT_THRESHOLD
    replicates: str = "seeds"  # what a row's runs are: seeds, or cross-validation folds (x seeds)
    test: str = "paired"       # how rows are compared with the baseline: paired (matched seeds) or welch
    test_set: dict[str, TwoLevel] = field(default_factory=dict)       # row -> its test accuracy, two levels
    test_set_diff: dict[str, TwoLevel] = field(default_factory=dict)  # row -> minus the baseline, two levels
    mcnemar: dict[str, list[tuple[object, McNemar]]] = field(default_factory=dict)  # row -> (seed, test) per pair
    without_predictions: list[str] = field(default_factory=list)  # rows whose runs saved no per-example predictions

    @property
    def n(self) -> dict[str, int]:
        return {row.label: row.n for row in self.rows}

    def metric(self, key: str) -> Metric:
        return metric_info(key, self.goals)

    def is_baseline(self, value) -> bool:
        """The baseline row's value: the same text, or the same number (--baseline 0 matches a row value 0.0)."""
        if self.baseline is None:
            return False
        if str(value) == self.baseline:
            return True
        try:
            return float(value) == float(self.baseline)
        except (TypeError, ValueError):
            return False

    def tested(self) -> list[str]:
        """Metrics compared with the baseline: those with a direction."""
        return [m for m in self.metrics if self.metric(m).better]


def row_order(values) -> list:
    """'none' first, then numbers ascending, then names in first-seen order."""
    values = list(dict.fromkeys(values))
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    named = [v for v in values if v not in numeric]
    return [v for v in named if v == "none"] + sorted(numeric) + [v for v in named if v != "none"]


def differing(conditions: list[dict]) -> list[str]:
    """Keys whose values are not the same in every one of ``conditions``: first those every condition sets (a value
    that differs), then those only some set (∅ where absent: often runs made before a setting existed)."""
    keys = list(dict.fromkeys(k for c in conditions for k in c))
    differ = [k for k in keys if len({repr(c.get(k, "∅")) for c in conditions}) > 1]
    return sorted(differ, key=lambda k: not all(k in c for c in conditions))  # stable: first-seen within each


def chosen_groups(keys: list[str], entries: list[dict]) -> set[str]:
    """The config groups among ``keys`` whose choice differs among ``entries``: named by the choice."""
    groups = {key.split(".")[0] for key in keys} & set(CHOICE_GROUPS)
    return {g for g in groups if len({str(e["choices"].get(g)) for e in entries}) > 1}


def key_names(keys: list[str], entries: list[dict]) -> list[str]:
    """['model.widths', 'model.fc_hidden', 'trainer.max_epochs'] -> ['model', 'trainer.max_epochs']."""
    chosen = chosen_groups(keys, entries)
    return list(dict.fromkeys(k.split(".")[0] if k.split(".")[0] in chosen else k for k in keys))


def qualifiers(keys: list[str], entries: list[dict], limit: int | None = MAX_QUALIFIERS) -> list[str]:
    """What sets each of ``entries`` (condition dict + choices) apart, e.g. 'model=cnn_small, trainer.max_epochs=5':
    a config group whose choice differs among them is named by its choice, not by each of its keys."""
    chosen = chosen_groups(keys, entries)
    texts = []
    for entry in entries:
        parts, seen = [], set()
        for key in keys:
            group = key.split(".")[0]
            if group in chosen:
                if group not in seen:
                    seen.add(group)
                    parts.append(f"{group}={entry['choices'].get(group)}")
                continue
            parts.append(f"{key}={entry['keys'].get(key, '∅')}")
        if limit is not None and len(parts) > limit:
            parts = parts[:limit] + [f"+{len(parts) - limit} more"]
        texts.append(", ".join(parts))
    return texts


def deduplicate(done: pd.DataFrame, by: str) -> tuple[pd.DataFrame, list[str]]:
    """One run per (row value, condition, seed, fold): the latest; the others are named in a note."""
    order = done.sort_values("started_at", kind="stable", na_position="first") if "started_at" in done else done
    key = [by, "condition", "seed"] + (["fold"] if "fold" in done else [])
    keep = order.drop_duplicates(key, keep="last")
    notes = []
    for _, dropped in order[~order.index.isin(keep.index)].iterrows():
        same = (keep[key].astype(str) == dropped[key].astype(str)).all(axis=1)  # NaN == NaN as text
        kept = keep[same].iloc[0]
        notes.append(f"{dropped['run_dir']} repeats {kept['run_dir']} (same condition, seed {dropped['seed']}"
                     + (f", fold {int(dropped['fold'])}" if dropped.get("fold", -1) >= 0 else "") + "): "
                     "counted once")
    return order.loc[order.index.isin(keep.index)], notes  # in the order the runs started: a sweep's order


def condition_entries(done: pd.DataFrame, by: str, row_keys: tuple[str, ...]) -> list[dict]:
    """One entry per (row value, condition): its runs, condition keys, choices and context (the condition minus
    the keys the row variable stands for)."""
    choice_columns = [c for c in CHOICE_GROUPS if c in done]
    groups: dict[tuple, dict] = {}
    for _, run in done.iterrows():
        entry = groups.setdefault((run[by], run["condition"]), {
            "value": run[by], "condition": str(run["condition"]), "runs": [], "keys": run["condition_keys"],
            "choices": {c: run[c] for c in choice_columns}})
        entry["runs"].append(run)
    for entry in groups.values():
        entry["context_keys"] = {k: v for k, v in entry["keys"].items() if not under(k, row_keys)}
        entry["context"] = repr(sorted(entry["context_keys"].items(), key=lambda kv: kv[0]))
    return list(groups.values())


def labelled_rows(entries: list[dict], split_keys: list[str]) -> list[Row]:
    """A row per entry, its label the row value plus what sets it apart: its context's keys where the table has
    several contexts, and the differing keys of other conditions with the same value in the same context."""
    short = dict(zip((e["context"] for e in entries), qualifiers(split_keys, entries))) if split_keys else {}
    rows = []
    for entry in entries:
        siblings = [e for e in entries if e["value"] == entry["value"] and e["context"] == entry["context"]]
        within = differing([e["keys"] for e in siblings]) if len(siblings) > 1 else []
        names = [short[entry["context"]]] if split_keys else []
        if within:
            position = next(i for i, e in enumerate(siblings) if e is entry)
            names.append(qualifiers(within, siblings, limit=None)[position])
        qualifier = "; ".join(names)
        rows.append(Row(f"{entry['value']}" + (f" ({qualifier})" if qualifier else ""), entry["value"],
                        entry["context"] if split_keys else "", entry["condition"],
                        [r["seed"] for r in entry["runs"]], [r["run_dir"] for r in entry["runs"]],
                        [(r["seed"], r.get("fold", -1)) for r in entry["runs"]], qualifier))
    contexts = {c: i for i, c in enumerate(dict.fromkeys(e["context"] for e in entries))}
    value_rank = {v: i for i, v in enumerate(row_order([r.value for r in rows]))}
    return sorted(rows, key=lambda r: (contexts.get(r.context, 0), value_rank[r.value], r.label))


def compare(table: Table, sample: dict, baseline: dict, metric: Metric | None = None) -> Comparison | None:
    """``sample`` minus ``baseline`` (each {replicate: value}): paired over the replicates both have (table.test
    "paired", needs 2 pairs), else Welch. With ``metric``, P(sample better than baseline) too."""
    comparison = paired(sample, baseline) if table.test == "paired" else None
    if comparison is None or math.isnan(comparison.p):
        # Welch asked for, or the seeds do not match the baseline's, or every pair differs by the same amount (a
        # paired test has no spread to go on; the rows' own spread still tells a 25-point gap from noise)
        unpaired = welch(list(sample.values()), list(baseline.values()))
        comparison = unpaired if comparison is None or (unpaired and not math.isnan(unpaired.p)) else comparison
    if comparison is not None and metric is not None and metric.better:
        comparison.improvement, comparison.improvement_low, comparison.improvement_high = \
            probability_of_improvement([metric.score(v) for v in sample.values()],
                                       [metric.score(v) for v in baseline.values()])
    return comparison


def seed_of(replicate):
    """(seed, fold) -> the seed, or 'seed/fold' under cross-validation."""
    seed, fold = replicate if isinstance(replicate, tuple) else (replicate, -1)
    return seed if fold == -1 else f"{seed}/{int(fold)}"


def compare_context(table: Table, members: list[Row], samples: dict, context_name: str) -> Regime:
    """Within one context: compare each row with the baseline row, mark underfitting rows, bold the best."""
    bases = [r for r in members if table.is_baseline(r.value)]
    base = bases[0] if len(bases) == 1 else None
    if len(bases) > 1:
        table.notes.append(f"{len(bases)} baseline rows ({', '.join(b.label for b in bases)}) in one context: "
                           "no comparison")
    cells = table.cells
    regime = Regime(context_name, base.label if base else None, overfit_threshold=table.overfit_threshold)
    if base is not None:
        regime.train_acc, regime.gen_gap = cells.get((base.label, "train/acc")), cells.get((base.label, "gen_gap"))
        for row in (r for r in members if r is not base):
            row.baseline = base.label
            ours, theirs = set(row.replicates), set(base.replicates)
            if table.test == "paired" and ours != theirs and len(ours) > 1 and len(theirs) > 1:
                table.notes.append(f"{row.label}: its runs' seeds {sorted(seed_of(k) for k in ours)} are not the "
                                   f"baseline's {sorted(seed_of(k) for k in theirs)}: compared by Welch's test, "
                                   "unpaired")
            for metric in table.tested():
                if (row.label, metric) in cells:
                    cells[(row.label, metric)].comparison = compare(
                        table, samples[(row.label, metric)], samples.get((base.label, metric), {}),
                        table.metric(metric))
            train = cells.get((row.label, "train/acc"))
            row.underfits = bool(train and regime.train_acc
                                 and train.mean < regime.train_acc.mean - table.underfit_threshold)
    for metric in table.metrics:
        info = table.metric(metric)
        present = [r for r in members if (r.label, metric) in cells]
        if not info.better or not present:
            continue
        scores = {r.label: info.score(cells[(r.label, metric)].mean) for r in present}
        best = max(present, key=lambda r: scores[r.label])
        if all(math.isclose(v, scores[best.label], rel_tol=1e-6) for v in scores.values()):
            continue  # all equal: none is best
        best_scores = {k: info.score(v) for k, v in samples[(best.label, metric)].items()}
        for r in present:
            tie = math.isclose(scores[r.label], scores[best.label], rel_tol=1e-6)  # float32 noise in the means
            if not tie:
                against = compare(table, {k: info.score(v) for k, v in samples[(r.label, metric)].items()},
                                  best_scores)
                # no p at all (both rows constant, or one run each) counts as told apart
                tie = against is not None and not math.isnan(against.p) and against.p >= SIGNIFICANCE
            cells[(r.label, metric)].best = tie
    return regime


def summarize(runs: pd.DataFrame, by: str = "reg", metrics=DEFAULT_METRICS, baseline="none",
              row_keys: tuple[str, ...] | None = None, goals: dict | None = None,
              overfit_threshold: float = OVERFIT_THRESHOLD, underfit_threshold: float = UNDERFIT_THRESHOLD,
              test: str = "paired") -> Table:
    """The table of ``runs`` (reglab.report.collect.runs_frame) with one row per (``by`` value, condition).

    ``row_keys``: the condition keys the row variable stands for (default: ``by`` and everything under it, so
    reg covers reg.l1.strength); rows whose conditions differ in other keys are in different contexts, and each
    row is compared only with the baseline of its own context. ``test``: "paired" (matched seeds) or "welch"."""
    if test not in TESTS:
        raise ValueError(f"test={test!r}: allowed {', '.join(TESTS)}")
    done = runs[runs["status"] == "completed"] if "status" in runs else runs.iloc[0:0]
    done = done[done[by].notna()] if by in done else done.iloc[0:0]
    done, notes = deduplicate(done, by) if not done.empty else (done, [])
    metrics = [m for m in metrics if m in done.columns and done[m].notna().any()]
    entries = condition_entries(done, by, row_keys or (by,))
    contexts = list(dict.fromkeys(e["context"] for e in entries))
    split_keys = differing([e["context_keys"] for e in entries]) if len(contexts) > 1 else []
    rows = labelled_rows(entries, split_keys)

    # train/acc and gen_gap are always summarized: the regime check needs them even when they are not columns
    # {(row, metric): {replicate: value}}, the replicate being (seed, fold): what pairs a run with the baseline's
    replicate = {r["run_dir"]: (r["seed"], r.get("fold", -1)) for r in done.to_dict("records")}
    indexed = done.set_index("run_dir")
    samples = {(row.label, m): {replicate[d]: float(v) for d, v in indexed.loc[row.run_dirs, m].dropna().items()
                                if math.isfinite(float(v))}
               for row in rows for m in dict.fromkeys(metrics + ["train/acc", "gen_gap"]) if m in done}
    for row in rows:
        for m in metrics:
            if m in done:
                values = indexed.loc[row.run_dirs, m]
                if values.notna().any():  # some runs have it: say why the others count out (the cell shows n=k)
                    notes += [f"{d}: {m} is {v} (not a finite number); left out of {row.label}'s {m}"
                              for d, v in values.items() if not math.isfinite(float(v))]
    cells = {key: Cell(float(pd.Series(list(s.values())).mean()),
                       float(pd.Series(list(s.values())).std(ddof=1)) if len(s) > 1 else math.nan, len(s))
             for key, s in samples.items() if s}
    table = Table(by, metrics, rows, cells, None if baseline is None else str(baseline), split_keys=split_keys,
                  split_by=key_names(split_keys, entries), notes=notes, goals=dict(goals or {}),
                  overfit_threshold=overfit_threshold, underfit_threshold=underfit_threshold, test=test)
    if "fold" in done and (done["fold"] >= 0).any():  # -1: not cross-validated
        table.replicates = "folds" if done["seed"].nunique() == 1 else "folds × seeds"
    full_names = dict(zip((e["context"] for e in entries), qualifiers(split_keys, entries, limit=None)))
    by_dir = done.set_index("run_dir", drop=False) if not done.empty else None
    for context in dict.fromkeys(r.context for r in rows):
        regime = compare_context(table, [r for r in rows if r.context == context], samples,
                                 full_names.get(context, "") if split_keys else "")
        base = next((r for r in rows if r.label == regime.baseline), None)
        if base is not None and base.run_dirs and by_dir is not None:
            regime.setting = regime_setting(by_dir.loc[base.run_dirs[0]].to_dict())
            if "underfit" in by_dir:
                regime.underfit = [str(r) for r in by_dir.loc[base.run_dirs, "underfit"] if isinstance(r, str)]
        table.regimes.append(regime)
    for metric in table.tested():  # Holm: the family is this column's comparisons, across the whole table
        compared = [cells[(r.label, metric)].comparison for r in rows
                    if (r.label, metric) in cells and cells[(r.label, metric)].comparison]
        family = sum(not math.isnan(c.p) for c in compared)
        for comparison, adjusted in zip(compared, holm([c.p for c in compared])):
            comparison.p_holm = adjusted
            at_level(comparison, SIGNIFICANCE / max(1, family))  # power at Holm's first step, as the verdict
    table.cells = {key: cell for key, cell in cells.items() if key[1] in metrics}
    if "test/acc" in metrics:
        add_test_set(table, replicate)
    failed = runs[runs["status"] != "completed"] if "status" in runs else runs
    table.not_completed = [{"run_dir": r["run_dir"], "status": r["status"], "error": r.get("error")}
                           for r in failed.to_dict("records")]
    return table


def add_test_set(table: Table, replicate: dict) -> None:
    """Test accuracy with the test set as a sample too (reglab.report.stats.two_level), from each run's
    per-example predictions: per row, and per row minus its baseline (matched seeds, the same examples), with a
    McNemar test for each seed's pair of runs. Rows whose runs saved no predictions are listed instead."""
    from reglab.predictions import PredictionsError, load
    from reglab.report.stats import mcnemar, two_level

    loaded = {}
    for row in table.rows:
        try:
            loaded[row.label] = {replicate[d]: load(d) for d in row.run_dirs}
        except PredictionsError as err:
            table.without_predictions.append(row.label)
            if "no such file" not in str(err):  # a damaged file is named; a run from before the feature is not
                table.notes.append(f"{row.label}: {err}; no test-set interval for it")
    for row in table.rows:
        runs = loaded.get(row.label)
        if not runs:
            continue
        if not same_test_set(list(runs.values())):
            table.notes.append(f"{row.label}: its runs scored different test sets (cross-validation folds, or other "
                               "data), so it has no test-set interval")
            continue
        correct = {key: (a["pred"] == a["label"]).astype(float) for key, a in runs.items()}
        table.test_set[row.label] = two_level(np.stack(list(correct.values())), bounds=(0.0, 1.0))
        base = loaded.get(row.baseline) if row.baseline else None
        if not base:
            continue
        pairs = list(runs)
        if set(pairs) != set(base):
            table.notes.append(f"{row.label}: its seeds are not the baseline's, so it has no test-set difference "
                               "or McNemar test (they pair runs of one seed)")
        elif not same_test_set(list(runs.values()) + list(base.values())):
            table.notes.append(f"{row.label}: scored another test set than the baseline, so it has no test-set "
                               "difference or McNemar test")
        else:
            base_correct = {key: (base[key]["pred"] == base[key]["label"]).astype(float) for key in pairs}
            table.test_set_diff[row.label] = two_level(np.stack([correct[k] - base_correct[k] for k in pairs]),
                                                       bounds=(-1.0, 1.0))
            table.mcnemar[row.label] = [(key[0] if key[1] == -1 else key, mcnemar(correct[key], base_correct[key]))
                                        for key in pairs]


def same_test_set(arrays: list[dict]) -> bool:
    """Runs scored the same test examples in the same order: their label arrays are equal."""
    first = arrays[0]["label"]
    return all(a["label"].shape == first.shape and np.array_equal(a["label"], first) for a in arrays[1:])


def number_format(value: float) -> str:
    """One format per cell (the mean's), so mean and std line up: 0.0190 ± 0.0004, 1.2e+04 ± 3.1e+02."""
    if value != 0 and (abs(value) >= 1000 or abs(value) < 1e-3):
        return ".2e"
    return ".2f" if abs(value) >= 10 else ".3f"


def metric_format(value: float, metric: Metric) -> str:
    """Percent and points with two decimals (a third would be false precision for a test set of hundreds), else
    number_format."""
    return ".2f" if metric.scale == 100 and (value == 0 or abs(value * metric.scale) >= 1e-2) else \
        number_format(value * metric.scale)


def shown(value: float, metric: Metric, spec: str | None = None, sign: bool = False) -> str:
    text = format(value * metric.scale, ("+" if sign else "") + (spec or metric_format(value, metric)))
    if float(text) == 0:  # float32 noise in a mean must not print as '-0.00'
        text = text.replace("-", "+" if sign else "")
    return text


def column_format(table: Table, metric: str) -> str:
    """One number format per column (from its largest mean), so a column's decimals line up."""
    means = [abs(c.mean) for (_, m), c in table.cells.items() if m == metric and not math.isnan(c.mean)]
    return metric_format(max(means, default=0.0), table.metric(metric))


def cell_text(cell: Cell | None, metric: Metric, row_n: int, latex: bool, spec: str | None = None) -> str:
    if cell is None:
        return "–"
    spec = spec or metric_format(cell.mean, metric)
    text = shown(cell.mean, metric, spec)
    if cell.n > 1:
        text += (r" $\pm$ " if latex else " ± ") + shown(cell.std, metric, spec)
    if cell.best:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if cell.n != row_n:
        text += f" (n={cell.n})"
    if cell.significant:
        text += r"$^\dagger$" if latex else SIGNIFICANCE_MARK
    return text


def by_label(by: str) -> str:
    return BY_LABELS.get(by, by)


def caption(table: Table) -> list[str]:
    """The sentences under a table: what each number is, then the regime, then notes."""
    ns = [row.n for row in table.rows]
    if ns and max(ns) == 1:
        parts = ["One run per row (n = 1): each cell is that run's value; no spread, no tests"]
    else:
        parts = [f"Mean ± sample std over {table.replicates}; n: runs ({table.replicates}) per row"
                 + ("; each cross-validation fold is a replicate, as a seed is (the folds' test sets are disjoint "
                    "parts of one data set)" if "folds" in table.replicates else "")
                 + ("; a row with n = 1 shows its value alone and is not tested" if 1 in ns else "")]
    parts.append(f"runs that differ in anything but the {'seed or fold' if 'folds' in table.replicates else 'seed'} "
                 "are never pooled"
                 + (f"; rows are split by what differs besides {table.by}: {', '.join(table.split_by)}"
                    if table.split_keys else ""))
    if any(c.best for c in table.cells.values()):
        directions = ", ".join(f"{table.metric(m).label} {table.metric(m).arrow}"
                               for m in table.metrics if table.metric(m).better)
        parts.append(f"bold: per column{' within each context' if table.split_keys else ''}, the best mean "
                     f"({directions}) and every row that {test_names(table)} cannot tell from it (p ≥ "
                     f"{SIGNIFICANCE}, unadjusted; with n = 1 only the best mean); other columns describe the runs "
                     "and have no best")
    if any(c.comparison for c in table.cells.values()):
        parts.append(f"{SIGNIFICANCE_MARK}: differs from {table.by}={table.baseline} with Holm-adjusted p < "
                     f"{SIGNIFICANCE} ({test_names(table)}; Holm over the rows of this table, per column)"
                     + ("" if any(c.significant for c in table.cells.values()) else ": no row does")
                     + "; differences, 95% CIs and power below")
    if any(r.underfits for r in table.rows):
        parts.append(f"{UNDERFIT_MARK}: underfits (train accuracy more than {table.underfit_threshold * 100:g} pt "
                     "below the baseline's)")
    return [". ".join(p[0].upper() + p[1:] for p in parts) + "."]


def regime_setting(run: dict) -> str:
    """Where a run was: 'cifar10, 4,000 train examples, no augmentation, model cnn, 30 epochs'."""
    def given(key):
        value = run.get(key)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    parts = [str(given("data"))] if given("data") else []
    if given("split_sizes.train") is not None:
        parts.append(f"{int(given('split_sizes.train')):,} train examples")
    augmentation = active_augmentation(run) if given("data.augment") is not None else None
    if augmentation is not None:
        parts.append(f"augmented ({augmentation})" if augmentation else "no augmentation")
    if given("model"):
        parts.append(f"model {given('model')}")
    steps, epochs = given("trainer.max_steps"), given("trainer.max_epochs")
    if steps is not None and int(steps) > 0 and (epochs is None or int(epochs) < 0):
        parts.append(f"{int(steps):,} steps")
    elif epochs is not None:
        parts.append(f"{int(epochs)} epochs")
    return ", ".join(parts)


def active_augmentation(run: dict) -> str:
    """The augmentations that really ran: 'crop padding 4, horizontal flip', or '' when data.augment is off or
    every augmentation is (digits: crop padding 0, no flip; text data has none)."""
    if not bool(run.get("data.augment")):
        return ""
    padding, flip = run.get("data.crop_padding"), run.get("data.hflip")
    active = []
    if isinstance(padding, (int, float)) and not math.isnan(padding) and padding > 0:
        active.append(f"random crop, padding {int(padding)}")
    if flip is not None and not (isinstance(flip, float) and math.isnan(flip)) and bool(flip):
        active.append("horizontal flip")
    return ", ".join(active)


def regime_lines(table: Table) -> list[str]:
    lines = []
    acc, gap = metric_info("train/acc"), metric_info("gen_gap")
    for regime in table.regimes:
        where = f" [{regime.context}]" if regime.context else ""
        if regime.baseline is None:
            lines.append(f"Regime{where}: no baseline row ({table.by}={table.baseline}), so no regime check and "
                         "no tests.")
            continue
        if regime.gen_gap is None or regime.train_acc is None:
            lines.append(f"Regime{where}: the baseline {regime.baseline} recorded no train accuracy.")
            continue
        n = regime.gen_gap.n
        text = f"Regime{where}: " + (f"{regime.setting}. The baseline" if regime.setting else "the baseline")
        text += (f" ({table.by}={table.baseline}) reaches train acc. "
                 f"{shown(regime.train_acc.mean, acc)}% with a gen. gap of {shown(regime.gen_gap.mean, gap)} pt "
                 + ("(one run)." if n == 1 else f"(mean of n={n})."))
        if regime.underfit:
            shown_runs = "its run" if n == 1 else f"{len(regime.underfit)} of its {n} runs"
            text += (f" It underfits ({shown_runs}: {regime.underfit[0]}): {NOT_MEANINGFUL}.")
        elif not regime.overfits:
            text += (f" It does not overfit (gap < {table.overfit_threshold * 100:g} pt): this setting cannot show a "
                     "regularization benefit.")
        lines.append(text)
    return lines


TEST_NAMES = {"paired": "the paired t-test over matched seeds", "welch": "Welch's t-test (unpaired, unequal "
                                                                          "variances)"}
FOLD_TEST_NAMES = {**TEST_NAMES, "paired": "the paired t-test over matched folds and seeds"}


def test_names(table: Table) -> str:
    """The tests the table's comparisons used: the paired test, or Welch's where seeds did not match."""
    used = list(dict.fromkeys(c.comparison.test for c in table.cells.values() if c.comparison))
    if not used:
        used = [table.test]
    names = FOLD_TEST_NAMES if "folds" in table.replicates else TEST_NAMES
    if used == ["paired", "welch"] or used == ["welch", "paired"]:
        return names["paired"] + (" (Welch's t-test where the seeds do not match the baseline's, or every pair "
                                  "differs by the same amount)")
    return names[used[0]]


def p_text(p: float, floor: float | None = None) -> str:
    if math.isnan(p):
        return "–"
    return f"<{floor:.2g}" if floor is not None and p < floor else f"{p:.3g}"


def seeds_text(n: float) -> str:
    return "–" if math.isnan(n) else "> 10,000" if math.isinf(n) else f"{int(n)}"


def comparisons(table: Table):
    """(row, metric, its Metric, the comparison, the column's number format) for every comparison made."""
    for row in table.rows:
        for metric in table.tested():
            cell = table.cells.get((row.label, metric))
            if cell is not None and cell.comparison is not None:
                yield row, metric, table.metric(metric), cell.comparison, column_format(table, metric)


def comparison_rows(table: Table) -> list[list[str]]:
    """Every comparison with the baseline, in display units: Δ, 95% CI, test, p, Holm p, the paired bootstrap's
    interval, P(row better), the smallest difference the n detects at 80% power, and the seeds the observed
    difference would need."""
    out = []
    for row, _, info, c, spec in comparisons(table):
        interval = lambda low, high: ("–" if math.isnan(low) else  # noqa: E731
                                      f"[{shown(low, info, spec)}, {shown(high, info, spec)}]")
        improvement = "–" if math.isnan(c.improvement) else \
            f"{c.improvement:.2f} [{c.improvement_low:.2f}, {c.improvement_high:.2f}]"
        detectable = "–" if math.isnan(c.detectable) else shown(c.detectable, info, spec)
        out.append([row.label, info.label, shown(c.diff, info, spec, sign=True), interval(c.low, c.high),
                    f"{c.test} (n={c.n})", p_text(c.p), p_text(c.p_holm), p_text(c.p_sign_flip),
                    interval(c.boot_low, c.boot_high), improvement, detectable, seeds_text(c.seeds_needed)])
    return out


def power_lines(table: Table) -> list[str]:
    """One sentence per comparison of the table's first tested column, where a reader looks:
    'dropout vs none, Test acc. (%): +0.70, not significant (Holm p = 0.47); 3 seeds detect ±2.10 at 80% power;
    about 9 seeds would detect +0.70.'"""
    tested = table.tested()
    lines = []
    for row, metric, info, c, spec in comparisons(table):
        if metric != tested[0]:
            continue
        unit = " pt" if info.scale == 100 else ""
        diff = shown(c.diff, info, spec, sign=True) + unit
        if math.isnan(c.p_holm):
            verdict = "the same difference on every pair: no spread, not testable"
        else:
            verdict = f"{'significant' if c.p_holm < SIGNIFICANCE else 'not significant'} (Holm p = {p_text(c.p_holm)})"
        text = f"{row.label} vs {row.baseline}, {info.label}: {diff}, {verdict}"
        if not math.isnan(c.detectable):
            text += (f"; {c.n} {table.replicates} detect ±{shown(c.detectable, info, spec)}{unit} at 80% power"
                     + ("" if c.test == "paired" else " (unpaired)"))
        if c.p_holm >= SIGNIFICANCE and not math.isnan(c.seeds_needed):
            text += ("; no practical number of seeds would detect it" if math.isinf(c.seeds_needed) else
                     f"; if the true difference were {diff} with this spread, about {int(c.seeds_needed)} "
                     f"{table.replicates} would detect it 4 times in 5")
        lines.append(f"- {text}.")
    return lines


def test_set_rows(table: Table) -> list[list[str]]:
    """Per row: test accuracy with its two-level 95% interval, the seed and test-set standard errors, the
    difference from the baseline with its two-level interval, and McNemar's p per seed."""
    info = table.metric("test/acc")
    spec = ".2f"
    out = []
    for row in table.rows:
        level = table.test_set.get(row.label)
        if level is None:
            continue
        diff = table.test_set_diff.get(row.label)
        tests = table.mcnemar.get(row.label, [])
        out.append([row.label, str(level.seeds), shown(level.estimate, info, spec),
                    f"[{shown(level.low, info, spec)}, {shown(level.high, info, spec)}]",
                    "–" if level.seeds < 2 else shown(level.seed_se, info, spec), shown(level.test_se, info, spec),
                    "–" if diff is None else f"{shown(diff.estimate, info, spec, sign=True)} "
                                             f"[{shown(diff.low, info, spec)}, {shown(diff.high, info, spec)}]"
                                             + (" (one seed: test set only)" if diff.seeds < 2 else ""),
                    ", ".join(f"{p_text(m.p, 1e-4)} (seed {seed}: {m.only_first}/{m.only_second})"
                              for seed, m in tests) or "–"])
    return out


TEST_SET_HEADER = ["Test acc. (%)", "95% interval (seeds + test examples)", "SE seeds", "SE test set",
                   "Δ vs baseline [95% interval]", "McNemar p per seed (right only here / only baseline)"]


def test_set_caption(table: Table) -> str:
    sizes = sorted({level.examples for level in table.test_set.values()})
    examples = f"{sizes[0]:,}" if len(sizes) == 1 else f"{sizes[0]:,} to {sizes[-1]:,}, by row"
    return (f"The test set is a sample too ({examples} examples): each interval adds the test examples' variance "
            "(a bootstrap that resamples them, the same draw for every seed and both rows) to the seeds' (their "
            "sample variance over n), with a t quantile (Welch-Satterthwaite df); with one seed it has the test "
            "set's variance only. The seeds' variance also holds each seed's own test-example noise, so the "
            "interval errs slightly wide (95-96% coverage in simulation). McNemar: the row's and the baseline's run "
            "of one seed, example by example (exact below 25 discordant examples), one test per seed, not "
            "corrected across seeds.")


def not_completed_lines(table: Table) -> list[str]:
    return [f"- {r['run_dir']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else "")
            for r in table.not_completed]


def row_name(row: Row) -> str:
    return row.label + (f" {UNDERFIT_MARK}" if row.underfits else "")


def markdown_row(cells: list[str]) -> str:
    """A table line; a '|' inside a cell (the header |w| < ε) is escaped so it does not start a new column."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def row_cells(table: Table, latex: bool) -> list[tuple[Row, list[str]]]:
    """Each row with its cells as text, one number format per column (computed once per column)."""
    formats = {m: column_format(table, m) for m in table.metrics}
    return [(row, [cell_text(table.cells.get((row.label, m)), table.metric(m), row.n, latex, formats[m])
                   for m in table.metrics]) for row in table.rows]


def comparison_header(table: Table) -> list[str]:
    return [by_label(table.by), "Metric", f"Δ vs {table.baseline}", "95% CI", "test", "p", "p (Holm)",
            "p (sign-flip)", "bootstrap 95% CI", "P(better) [95% CI]", "detectable at 80% power", "seeds needed"]


def to_markdown(table: Table) -> str:
    header = [by_label(table.by), "n", *(table.metric(m).label for m in table.metrics)]
    lines = [markdown_row(header), "|" + "|".join("---" for _ in header) + "|"]
    for row, cells in row_cells(table, latex=False):
        lines.append(markdown_row([row_name(row), str(row.n), *cells]))
    lines += ["", *caption(table), "", *regime_lines(table)]
    power = power_lines(table)
    if power:
        lines += ["", *power]
    compared = comparison_rows(table)
    if compared:
        head = comparison_header(table)
        lines += ["", f"Difference from the baseline ({table.by}={table.baseline}) of the same context "
                      f"({test_names(table)}; sign-flip: the exact permutation p over the pairs, at least "
                      "2/2^n; bootstrap interval: from 10 pairs; P(better): a run of the row beats a run of the "
                      "baseline, over all pairs of runs, ties half, stratified bootstrap interval; detectable: the "
                      "smallest difference this n finds 4 times in 5; seeds needed: the n that would find a true "
                      "difference equal to the observed one 4 times in 5, if the spread is as observed; both at "
                      "Holm's first-step level, 0.05 / the comparisons in the column):", "",
                  markdown_row(head), "|" + "|".join("---" for _ in head) + "|", *map(markdown_row, compared)]
    test_rows = test_set_rows(table)
    if test_rows:
        head = [by_label(table.by), "n", *TEST_SET_HEADER]
        lines += ["", test_set_caption(table), "", markdown_row(head), "|" + "|".join("---" for _ in head) + "|",
                  *map(markdown_row, test_rows)]
    if table.without_predictions and test_rows:
        lines += ["", f"No per-example test predictions (runs made before reglab saved them): "
                      f"{', '.join(table.without_predictions)}."]
    if table.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in table.notes)]
    if table.not_completed:
        lines += ["", "Not completed (excluded from the table):", *not_completed_lines(table)]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                          ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(char, escaped)
    for char, command in (("λ", r"$\lambda$"), ("ε", r"$\varepsilon$"), ("∅", r"$\emptyset$"),
                          ("±", r"$\pm$"), ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"), ("≥", r"$\geq$"),
                          ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("Δ", r"$\Delta$"), ("−", "-"),
                          ("‖w‖₂", r"$\lVert w\rVert_2$"), ("‖w‖₁", r"$\lVert w\rVert_1$")):
        text = text.replace(char, command)
    return text


def default_label(table: Table) -> str:
    import hashlib
    import re

    digest = hashlib.sha1("|".join([table.by, *table.metrics, *(r.condition for r in table.rows)]).encode())
    return f"tab:{re.sub(r'[^A-Za-z0-9]+', '-', table.by).strip('-')}-{digest.hexdigest()[:6]}"


def to_latex(table: Table, label: str | None = None) -> str:
    """Booktabs tables, ready for \\input (needs \\usepackage{booktabs}): the results, then the differences from the
    baseline. Needs \\usepackage{booktabs}, {graphicx} and {amsmath}. ``label`` (default: one derived from the table's rows, so two tables never share it) is the
    results table's; the differences table gets ``<label>-diff``."""
    label = label or default_label(table)
    columns = "l" + "r" * (len(table.metrics) + 1)
    header = " & ".join([latex_escape(by_label(table.by)), "$n$", *(table.metric(m).latex for m in table.metrics)])
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{columns}}}", r"\toprule", header + r" \\",
             r"\midrule"]
    for row, cells in row_cells(table, latex=True):
        lines.append(" & ".join([latex_escape(row_name(row)), str(row.n), *cells]) + r" \\")
    text = " ".join(latex_escape(t) for t in caption(table) + regime_lines(table) + table.notes)
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{text}}}", rf"\label{{{label}}}", r"\end{table}"]
    compared = comparison_rows(table)
    if compared:
        lines += [r"\begin{table}[t]", r"\centering", r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{llrrlrrrrrrr}",
                  r"\toprule", " & ".join(latex_escape(h) for h in comparison_header(table)) + r" \\", r"\midrule",
                  *(" & ".join(latex_escape(c) for c in r) + r" \\" for r in compared),
                  r"\bottomrule", r"\end{tabular}}",
                  rf"\caption{{Difference from {latex_escape(f'{table.by}={table.baseline}')} of the same "
                  rf"context: 95\% interval and $p$ of {latex_escape(test_names(table))}, Holm-adjusted $p$ (per "
                  r"column), the exact sign-flip permutation $p$, the paired bootstrap interval (from 10 pairs), P(row better) with a stratified bootstrap interval, the smallest "
                  r"difference detectable at 80\% power with this $n$, and the seeds the observed difference "
                  r"would need. " + " ".join(latex_escape(line[2:]) for line in power_lines(table)) + "}",
                  rf"\label{{{label}-diff}}", r"\end{table}"]
    test_rows = test_set_rows(table)
    if test_rows:
        head = [by_label(table.by), "n", *TEST_SET_HEADER]
        lines += [r"\begin{table}[t]", r"\centering", r"\resizebox{\linewidth}{!}{%",
                  r"\begin{tabular}{lrrrrrll}", r"\toprule", " & ".join(latex_escape(h) for h in head) + r" \\",
                  r"\midrule", *(" & ".join(latex_escape(c) for c in r) + r" \\" for r in test_rows),
                  r"\bottomrule", r"\end{tabular}}", rf"\caption{{{latex_escape(test_set_caption(table))}}}",
                  rf"\label{{{label}-test}}", r"\end{table}"]
    return "\n".join(lines)


def to_frame(table: Table) -> pd.DataFrame:
    """CSV form: numbers in the metrics' own units (fractions, not %), one row per table row: mean, std, n and,
    against the baseline, diff, ci_low, ci_high, p and p_holm per metric."""
    records = []
    for row in table.rows:
        record = {table.by: row.label, "n": row.n, "value": row.value, "condition_id": row.condition,
                  "seeds": " ".join(map(str, row.seeds)), "baseline": row.baseline, "underfits": row.underfits}
        for metric in table.metrics:
            cell = table.cells.get((row.label, metric))
            comparison = cell.comparison if cell else None
            record |= {f"{metric} mean": cell.mean if cell else None, f"{metric} std": cell.std if cell else None,
                       f"{metric} n": cell.n if cell else 0}
            for part in ("diff", "low", "high", "p", "p_holm", "test", "boot_low", "boot_high", "p_sign_flip",
                         "improvement", "improvement_low", "improvement_high", "detectable", "seeds_needed"):
                name = {"low": "ci_low", "high": "ci_high"}.get(part, part)
                record[f"{metric} {name}"] = getattr(comparison, part) if comparison else None
        level, diff = table.test_set.get(row.label), table.test_set_diff.get(row.label)
        if table.test_set:
            record |= {"test/acc two_level low": level.low if level else None,
                       "test/acc two_level high": level.high if level else None,
                       "test/acc diff two_level low": diff.low if diff else None,
                       "test/acc diff two_level high": diff.high if diff else None,
                       "test/acc mcnemar p": " ".join(f"{m.p:.4g}" for _, m in table.mcnemar.get(row.label, []))
                       or None}
        records.append(record)
    return pd.DataFrame(records)
