"""Paper tables that say what they are.

- A row is one **condition** (reglab.identity): runs that differ in anything but the seed are never pooled. Where
  ``--by`` would pool several conditions, the row is split and its label names what differs:
  ``none (model=cnn_small)``. Two completed runs of one condition with the same seed count once.
- A cell is the mean ± sample std (ddof=1) over the row's seeds; with n = 1 it is the value alone.
- Each row is compared with the baseline row of the same context: the difference in means with a 95% Welch
  t-interval and Welch's p, Holm-adjusted over the rows of the table, per metric. † marks adjusted p < 0.05.
- Bold marks the best mean only in columns with a direction (accuracy ↑; loss, gap, ECE, NLL, Brier ↓), within a
  context; norms and sparsity describe a run and get no bold unless a study declares a goal for them.
- Regime: the baseline's train accuracy and generalization gap. A baseline that does not overfit (gap below
  ``overfit_threshold``) cannot show a regularization benefit, and the table says so; a row whose train accuracy
  falls more than ``underfit_threshold`` below the baseline's is marked as underfitting (‡).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from reglab.fit import NOT_MEANINGFUL
from reglab.identity import under

DEFAULT_METRICS = ("test/acc", "val/acc", "gen_gap", "weights/zero_frac", "weights/small_frac", "weights/l2")
SIGNIFICANCE = 0.05
SIGNIFICANCE_MARK = "†"
UNDERFIT_MARK = "‡"
OVERFIT_THRESHOLD = 0.01   # the baseline's gap (train - val accuracy) below which it does not overfit
UNDERFIT_THRESHOLD = 0.05  # train accuracy this far below the baseline's: the row underfits
MAX_QUALIFIERS = 4         # keys named in a split row's label; the caption lists them all


@dataclass(frozen=True)
class Metric:
    key: str
    label: str                 # Markdown and console header
    latex: str                 # LaTeX header
    scale: float = 1.0         # shown as value * scale (fractions as % or points)
    better: str | None = None  # "max", "min", or None: descriptive (no bold, no test)


def _metrics() -> dict[str, Metric]:
    metrics = [
        Metric("test/acc", "Test acc. (%)", r"Test acc.\ (\%)", 100, "max"),
        Metric("val/acc", "Val. acc. (%)", r"Val.\ acc.\ (\%)", 100, "max"),
        Metric("train/acc", "Train acc. (%)", r"Train acc.\ (\%)", 100),
        Metric("gen_gap", "Gen. gap (pt)", r"Gen.\ gap (pt)", 100, "min"),
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
class Comparison:
    """Row minus baseline, in the metric's own units."""

    diff: float
    low: float   # 95% Welch t-interval
    high: float
    p: float     # Welch's t-test, two-sided
    p_holm: float = math.nan


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

    @property
    def n(self) -> dict[str, int]:
        return {row.label: row.n for row in self.rows}

    def metric(self, key: str) -> Metric:
        return metric_info(key, self.goals)

    def tested(self) -> list[str]:
        """Metrics compared with the baseline: those with a direction."""
        return [m for m in self.metrics if self.metric(m).better]


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
    if se == 0:  # both constant: no spread to test against
        return Comparison(diff, diff, diff, math.nan)
    df = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    half = float(student_t.ppf(0.975, df)) * se
    return Comparison(diff, diff - half, diff + half, float(2 * student_t.sf(abs(diff / se), df)))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment; NaN p-values stay NaN and do not count towards the family size."""
    valid = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        adjusted[i] = running
    return adjusted


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
        kept = keep[(keep[key] == dropped[key]).all(axis=1)].iloc[0]
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
                        [r["seed"] for r in entry["runs"]], [r["run_dir"] for r in entry["runs"]], qualifier))
    contexts = {c: i for i, c in enumerate(dict.fromkeys(e["context"] for e in entries))}
    value_rank = {v: i for i, v in enumerate(row_order([r.value for r in rows]))}
    return sorted(rows, key=lambda r: (contexts.get(r.context, 0), value_rank[r.value], r.label))


def compare_context(table: Table, members: list[Row], samples: dict, context_name: str) -> Regime:
    """Within one context: compare each row with the baseline row, mark underfitting rows, bold the best."""
    bases = [r for r in members if table.baseline is not None and str(r.value) == table.baseline]
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
            for metric in table.tested():
                if (row.label, metric) in cells:
                    cells[(row.label, metric)].comparison = welch(samples[(row.label, metric)],
                                                                  samples.get((base.label, metric), []))
            train = cells.get((row.label, "train/acc"))
            row.underfits = bool(train and regime.train_acc
                                 and train.mean < regime.train_acc.mean - table.underfit_threshold)
    for metric in table.metrics:
        better = table.metric(metric).better
        column = [cells[(r.label, metric)].mean for r in members if (r.label, metric) in cells]
        best = (max(column) if better == "max" else min(column)) if better and column else None
        if best is not None and not all(math.isclose(m, best, rel_tol=1e-6) for m in column):  # all equal: none
            for r in members:  # ties (up to float32 noise in the means) are all bold
                if (r.label, metric) in cells:
                    cells[(r.label, metric)].best = math.isclose(cells[(r.label, metric)].mean, best, rel_tol=1e-6)
    return regime


def summarize(runs: pd.DataFrame, by: str = "reg", metrics=DEFAULT_METRICS, baseline="none",
              row_keys: tuple[str, ...] | None = None, goals: dict | None = None,
              overfit_threshold: float = OVERFIT_THRESHOLD, underfit_threshold: float = UNDERFIT_THRESHOLD) -> Table:
    """The table of ``runs`` (reglab.report.collect.runs_frame) with one row per (``by`` value, condition).

    ``row_keys``: the condition keys the row variable stands for (default: ``by`` and everything under it, so
    reg covers reg.l1.strength); rows whose conditions differ in other keys are in different contexts, and each
    row is compared only with the baseline of its own context."""
    done = runs[runs["status"] == "completed"] if "status" in runs else runs.iloc[0:0]
    done = done[done[by].notna()] if by in done else done.iloc[0:0]
    done, notes = deduplicate(done, by) if not done.empty else (done, [])
    metrics = [m for m in metrics if m in done.columns and done[m].notna().any()]
    entries = condition_entries(done, by, row_keys or (by,))
    contexts = list(dict.fromkeys(e["context"] for e in entries))
    split_keys = differing([e["context_keys"] for e in entries]) if len(contexts) > 1 else []
    rows = labelled_rows(entries, split_keys)

    # train/acc and gen_gap are always summarized: the regime check needs them even when they are not columns
    samples = {(row.label, m): done.loc[done["run_dir"].isin(row.run_dirs), m].dropna().astype(float).tolist()
               for row in rows for m in dict.fromkeys(metrics + ["train/acc", "gen_gap"]) if m in done}
    cells = {key: Cell(float(pd.Series(s).mean()), float(pd.Series(s).std(ddof=1)) if len(s) > 1 else math.nan,
                       len(s)) for key, s in samples.items() if s}
    table = Table(by, metrics, rows, cells, None if baseline is None else str(baseline), split_keys=split_keys,
                  split_by=key_names(split_keys, entries), notes=notes, goals=dict(goals or {}),
                  overfit_threshold=overfit_threshold, underfit_threshold=underfit_threshold)
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
        for comparison, adjusted in zip(compared, holm([c.p for c in compared])):
            comparison.p_holm = adjusted
    table.cells = {key: cell for key, cell in cells.items() if key[1] in metrics}
    failed = runs[runs["status"] != "completed"] if "status" in runs else runs
    table.not_completed = [{"run_dir": r["run_dir"], "status": r["status"], "error": r.get("error")}
                           for r in failed.to_dict("records")]
    return table


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
        directions = ", ".join(f"{table.metric(m).label} {'↑' if table.metric(m).better == 'max' else '↓'}"
                               for m in table.metrics if table.metric(m).better)
        parts.append(f"bold: best per column{' within each context' if table.split_keys else ''} ({directions}); "
                     "other columns describe the runs and have no best")
    if any(c.comparison for c in table.cells.values()):
        parts.append(f"{SIGNIFICANCE_MARK}: differs from {table.by}={table.baseline} with Holm-adjusted p < "
                     f"{SIGNIFICANCE} (Welch's t-test, unequal variances; Holm over the rows of this table, per "
                     "column)" + ("" if any(c.significant for c in table.cells.values()) else
                                  ": no row does") + "; differences and 95% CIs below")
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
    if given("data.augment") is not None:
        parts.append("augmented" if bool(given("data.augment")) else "no augmentation")
    if given("model"):
        parts.append(f"model {given('model')}")
    steps, epochs = given("trainer.max_steps"), given("trainer.max_epochs")
    if steps is not None and int(steps) > 0 and (epochs is None or int(epochs) < 0):
        parts.append(f"{int(steps):,} steps")
    elif epochs is not None:
        parts.append(f"{int(epochs)} epochs")
    return ", ".join(parts)


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


def comparison_rows(table: Table) -> list[list[str]]:
    """Row, metric, Δ, 95% CI, p, Holm p: every comparison with the baseline, in display units."""
    out = []
    for row in table.rows:
        for metric in table.tested():
            cell = table.cells.get((row.label, metric))
            if cell is None or cell.comparison is None:
                continue
            info, c = table.metric(metric), cell.comparison
            spec = column_format(table, metric)
            p = "–" if math.isnan(c.p) else f"{c.p:.3g}"
            p_holm = "–" if math.isnan(c.p_holm) else f"{c.p_holm:.3g}"
            out.append([row.label, info.label, shown(c.diff, info, spec, sign=True),
                        f"[{shown(c.low, info, spec)}, {shown(c.high, info, spec)}]", p, p_holm])
    return out


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
    return [by_label(table.by), "Metric", f"Δ vs {table.baseline}", "95% CI", "p (Welch)", "p (Holm)"]


def to_markdown(table: Table) -> str:
    header = [by_label(table.by), "n", *(table.metric(m).label for m in table.metrics)]
    lines = [markdown_row(header), "|" + "|".join("---" for _ in header) + "|"]
    for row, cells in row_cells(table, latex=False):
        lines.append(markdown_row([row_name(row), str(row.n), *cells]))
    lines += ["", *caption(table), "", *regime_lines(table)]
    comparisons = comparison_rows(table)
    if comparisons:
        head = comparison_header(table)
        lines += ["", f"Difference from the baseline ({table.by}={table.baseline}) of the same context:", "",
                  markdown_row(head), "|" + "|".join("---" for _ in head) + "|", *map(markdown_row, comparisons)]
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
    baseline. ``label`` (default: one derived from the table's rows, so two tables never share it) is the
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
    comparisons = comparison_rows(table)
    if comparisons:
        lines += [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{llrrrr}", r"\toprule",
                  " & ".join(latex_escape(h) for h in comparison_header(table)) + r" \\", r"\midrule",
                  *(" & ".join(latex_escape(c) for c in r) + r" \\" for r in comparisons),
                  r"\bottomrule", r"\end{tabular}",
                  rf"\caption{{Difference from {latex_escape(f'{table.by}={table.baseline}')} of the same "
                  r"context, with its 95\% Welch $t$-interval, Welch's $p$ and Holm-adjusted $p$ (per column).}",
                  rf"\label{{{label}-diff}}", r"\end{table}"]
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
            for part in ("diff", "low", "high", "p", "p_holm"):
                name = {"low": "ci_low", "high": "ci_high"}.get(part, part)
                record[f"{metric} {name}"] = getattr(comparison, part) if comparison else None
        records.append(record)
    return pd.DataFrame(records)
