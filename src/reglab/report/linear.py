"""Report sections for linear models (model=linear): Ng (2004)'s irrelevant-features study, L1 as feature selection
in text, and lasso paths. They read the ``features`` record a linear model's results.json carries (its non-zero
features, by name) besides the metrics.

λ is always chosen on validation: per condition (everything but λ and the seed), the λ with the best mean
validation accuracy over seeds (ties: the lower mean validation loss); test numbers are reported at that λ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reglab.report import figures
from reglab.report.collect import completed_runs

LAMBDA = "lam"  # the studies' shared λ key (reg.<name>.strength interpolates it)


def binary_weight(weights: list[float]) -> float:
    """A feature's effect on the log-odds of class 1 (positive) in a 2-class softmax: w_1 - w_0."""
    return weights[1] - weights[0] if len(weights) == 2 else max(weights, key=abs)


def feature_weights(record: dict) -> dict[str, float]:
    """name -> signed weight (2 classes: toward class 1) of every feature the run lists; unlisted ones are 0."""
    features = record.get("features") or {}
    return {name: binary_weight(w) for name, w in zip(features.get("names", []), features.get("weights", []))}


def choose_by_validation(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of ``keys``: the runs at the λ with the best mean val/acc over seeds (ties: lower val/loss)."""
    runs = completed_runs(runs)
    if runs.empty or LAMBDA not in runs:
        return runs.iloc[0:0]
    means = runs.groupby(keys + [LAMBDA], dropna=False)[["val/acc", "val/loss"]].mean().reset_index()
    means = means.sort_values(["val/acc", "val/loss"], ascending=[False, True], kind="stable")
    best = means.drop_duplicates(keys)[keys + [LAMBDA]]
    return runs.merge(best, on=keys + [LAMBDA])


def mean_std(values) -> str:
    values = np.asarray(list(values), dtype=float)
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.2f}"


def ng2004_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the chosen runs, one row per (relevant, features) with each regularizer's test error and chosen λ)."""
    keys = ["reg", "data.n_relevant", "data.n_features"]
    chosen = choose_by_validation(runs, keys)
    if chosen.empty:
        return chosen, pd.DataFrame()
    rows = []
    for (relevant, n_features), group in chosen.groupby(["data.n_relevant", "data.n_features"]):
        row = {"relevant": int(relevant), "features": int(n_features)}
        for reg, runs_of in group.groupby("reg"):
            errors = 100 * (1 - runs_of["test/acc"])
            row[f"{reg} test error (%)"] = mean_std(errors)
            row[f"{reg} λ"] = f"{float(runs_of[LAMBDA].iloc[0]):g}"
            row[f"{reg} n"] = len(runs_of)
        rows.append(row)
    return chosen, pd.DataFrame(rows)


def ng2004_figure(chosen: pd.DataFrame, out_dir: Path, name: str = "ng2004") -> list[Path]:
    """Test error against the number of features (log x), one line per (regularizer, relevant features): Ng's
    figures 1-3 in one panel each."""
    plt = figures._pyplot()
    relevant_counts = sorted(chosen["data.n_relevant"].unique())
    figure, axes = plt.subplots(1, len(relevant_counts), figsize=(4.2 * len(relevant_counts), 3.4), squeeze=False)
    for axis, relevant in zip(axes[0], relevant_counts):
        subset = chosen[chosen["data.n_relevant"] == relevant]
        for index, (reg, runs_of) in enumerate(subset.groupby("reg")):
            stats = (100 * (1 - runs_of["test/acc"])).groupby(runs_of["data.n_features"]).agg(["mean", "std"])
            axis.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), capsize=3, label=str(reg),
                          **figures.series_style(index))
        axis.set(xscale="log", xlabel="number of features (relevant + irrelevant)", ylabel="test error (%)",
                 title=f"{relevant} relevant feature{'s' if relevant > 1 else ''}", ylim=(0, None))
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figures.save(figure, out_dir, name)


def text_path_table(runs: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """One row per (regularizer, λ): validation and test accuracy, words kept (of the vocabulary)."""
    runs = completed_runs(runs)
    if runs.empty or LAMBDA not in runs:
        return pd.DataFrame()
    by_dir = {r["run_dir"]: r for r in records}
    rows = []
    for _, run in runs.sort_values(["reg", LAMBDA]).iterrows():
        features = by_dir.get(run["run_dir"], {}).get("features") or {}
        rows.append({"reg": run["reg"], "λ": float(run[LAMBDA]), "val acc (%)": 100 * run["val/acc"],
                     "test acc (%)": 100 * run["test/acc"], "words kept": features.get("nonzero"),
                     "vocabulary": features.get("n_features"), "run_dir": run["run_dir"]})
    return pd.DataFrame(rows)


def sparse_choice(path: pd.DataFrame, sparse_reg: str = "prox_l1", budget: float = 0.10) -> pd.Series | None:
    """The sparse model the lecture's table shows: of the ``sparse_reg`` runs that keep at most ``budget`` of the
    vocabulary, the best by validation accuracy (never by test); without such a run, the sparsest one."""
    sparse = path[(path["reg"] == sparse_reg) & (path["words kept"].fillna(0) > 0)]
    if sparse.empty:
        return None
    within = sparse[sparse["words kept"] <= budget * sparse["vocabulary"]]
    if within.empty:
        return sparse.sort_values("words kept", kind="stable").iloc[0]
    return within.sort_values("val acc (%)", ascending=False, kind="stable").iloc[0]


def top_words(record: dict, k: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The k most positive and the k most negative words of a run (weights toward class 1)."""
    ranked = sorted(feature_weights(record).items(), key=lambda item: item[1])
    return ranked[::-1][:k], [item for item in ranked[:k] if item[1] < 0]


def accuracy_vs_words_figure(path: pd.DataFrame, out_dir: Path, name: str = "text_feature_selection"
                             ) -> list[Path]:
    plt = figures._pyplot()
    figure, axis = plt.subplots(figsize=(5.2, 3.6))
    for index, (reg, rows) in enumerate(path.groupby("reg")):
        rows = rows[rows["words kept"].fillna(0) > 0].sort_values("words kept")
        axis.plot(rows["words kept"], rows["test acc (%)"], label=str(reg), **figures.series_style(index))
    axis.set(xscale="log", xlabel="words with a non-zero weight", ylabel="dev accuracy (%)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figures.save(figure, out_dir, name)


def lasso_path_figure(records: list[dict], out_dir: Path, name: str, title: str, highlight=None,
                      label_top: int = 0) -> list[Path]:
    """|weight| of every listed feature against λ (log x) over the runs of one λ path. ``highlight(name)``: the
    features drawn in colour (the synthetic set's relevant ones); ``label_top``: that many largest features are
    drawn in colour and named (text)."""
    plt = figures._pyplot()
    runs = sorted(records, key=lambda r: float(r["config"][LAMBDA]))
    lams = [float(r["config"][LAMBDA]) for r in runs]
    paths = [feature_weights(r) for r in runs]
    names = sorted({n for p in paths for n in p})
    magnitude = {n: [abs(p.get(n, 0.0)) for p in paths] for n in names}
    top = sorted(names, key=lambda n: -max(magnitude[n]))[:label_top]
    figure, axis = plt.subplots(figsize=(5.4, 3.8))
    coloured = 0
    for n in names:
        if (highlight and highlight(n)) or n in top:
            axis.plot(lams, magnitude[n], label=n, linewidth=1.6, **figures.series_style(coloured))
            coloured += 1
        else:
            axis.plot(lams, magnitude[n], color="0.75", linewidth=0.6)
    axis.set(xscale="log", xlabel="λ", ylabel="|weight| (toward class 1)", title=title)
    if coloured:
        axis.legend(fontsize=7, ncol=2 if coloured > 8 else 1)
    figure.tight_layout()
    return figures.save(figure, out_dir, name)


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return ""
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, *body])


def format_cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:g}"
    return "" if value is None else str(value)


def latex_table(frame: pd.DataFrame, label: str) -> str:
    if frame.empty:
        return ""
    body = frame.to_latex(index=False, escape=True, float_format=lambda v: f"{v:.2f}")
    return f"\\begin{{table}}[h]\\centering\\small\n{body}\\label{{{label}}}\\end{{table}}"
