"""Paper figures from results.json records (PNG and PDF; line styles and markers, not colour alone, tell
series apart, so they read in grayscale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reglab.report.collect import completed_runs

STYLES = [dict(color="black", linestyle="-", marker="o"), dict(color="0.45", linestyle="--", marker="s"),
          dict(color="0.25", linestyle=":", marker="^"), dict(color="0.6", linestyle="-.", marker="D"),
          dict(color="0.1", linestyle=(0, (5, 1)), marker="v"), dict(color="0.7", linestyle="-", marker="x")]
LABELS = {"test/acc": "test accuracy (fraction)", "val/acc": "validation accuracy (fraction)",
          "gen_gap": "generalization gap (train − val accuracy)", "weights/zero_frac": "weights exactly zero (fraction)",
          "weights/small_frac": "weights with |w| < ε (fraction)", "weights/l2": "weight L2 norm ‖w‖₂"}
CALIBRATION_KINDS = (("std", "standard inference"), ("mc", "MC dropout"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    _pyplot().close(figure)
    return paths


def weight_histograms(records: list[dict], out_dir: Path, regs=("none", "l1", "l2")) -> list[Path]:
    """|w| distribution of the final weights, one line per regularizer (summed over seeds): L1 piles
    weights up near zero, L2 shrinks them all."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    drawn = 0
    for style, reg in zip(STYLES, regs):
        hists = [r["weight_histogram"] for r in records
                 if r.get("status") == "completed" and r.get("choices", {}).get("reg") == reg and r.get("weight_histogram")]
        if not hists:
            continue
        counts = np.sum([h["counts"] for h in hists], axis=0).astype(float)
        total = sum(h["total"] for h in hists)
        edges = np.asarray(hists[0]["edges"])
        centers = np.sqrt(edges[:-1] * edges[1:])
        zeros = sum(h["zeros"] for h in hists) / total
        axis.plot(centers, counts / total, label=f"{reg} (exact zeros {zeros:.1%})", markersize=3, **style)
        drawn += 1
    if not drawn:
        plt.close(figure)
        return []
    axis.set_xscale("log")
    axis.set_xlabel("|w| (log scale)")
    axis.set_ylabel("fraction of weights per bin")
    axis.set_title("Weight magnitudes after training")
    axis.legend(frameon=False)
    return save(figure, out_dir, "weight_histograms")


def metric_vs_parameter(runs: pd.DataFrame, parameter: str, metrics: list[str], out_dir: Path, name: str,
                        xlabel: str, log_x: bool = False) -> list[Path]:
    """Mean ± std over seeds of each metric against a swept parameter (λ, dropout rate), one panel each."""
    done = completed_runs(runs)
    if parameter not in done or done[parameter].dropna().nunique() < 2:
        return []
    metrics = [m for m in metrics if m in done]
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    grouped = done.groupby(parameter)
    for axis, metric, style in zip(axes[0], metrics, STYLES):
        stats = grouped[metric].agg(["mean", "std"]).sort_index()
        axis.errorbar(stats.index.astype(float), stats["mean"], yerr=stats["std"].fillna(0), capsize=3, **style)
        if log_x:
            axis.set_xscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(LABELS.get(metric, metric))
    figure.tight_layout()
    return save(figure, out_dir, name)


def training_curves(records: list[dict], out_dir: Path, by: str = "reg", name: str = "curves") -> list[Path]:
    """Train (eval-mode subset) and validation accuracy per epoch, mean over seeds, one line per row value."""
    completed = [r for r in records if r.get("status") == "completed" and r.get("history")]
    if not completed:
        return []
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    groups: dict[str, list[dict]] = {}
    for record in completed:
        groups.setdefault(str(record.get("choices", {}).get(by, "?")), []).append(record)
    from matplotlib.ticker import MaxNLocator

    from reglab.report.tables import row_order

    for style, label in zip(STYLES * 3, row_order(groups)):
        group = groups[label]
        for axis, key in zip(axes, ("train/acc", "val/acc")):
            frame = pd.DataFrame([{"epoch": h["epoch"] + 1, key: h.get(key)} for r in group for h in r["history"]])
            mean = frame.groupby("epoch")[key].mean()
            axis.plot(mean.index, mean.values, label=label, markersize=3, **style)
    for axis, title in zip(axes, ("train subset, eval mode", "validation")):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(title)
    axes[0].set_ylabel("accuracy (fraction)")
    axes[1].legend(frameon=False, fontsize=8)
    figure.tight_layout()
    return save(figure, out_dir, name)


def tradeoff(runs: pd.DataFrame, x: str, y: str, by: str, out_dir: Path, name: str, baseline: str = "none"
             ) -> list[Path]:
    """y against x, one line per value of ``by`` (mean over seeds of each swept setting), the baseline's y as a
    horizontal line: e.g. accuracy against exact-zero fraction for subgradient vs proximal L1 across λ."""
    done = completed_runs(runs)
    if x not in done or y not in done or done[by].nunique() < 2:
        return []
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.6))
    base = done[done[by] == baseline]
    if not base.empty:
        axis.axhline(base[y].mean(), color="0.5", linestyle=":", label=f"{baseline} (mean)")
    for style, (label, group) in zip(STYLES, ((k, g) for k, g in done.groupby(by) if k != baseline)):
        points = group.groupby("setting")[[x, y]].mean().sort_values(x)
        axis.plot(points[x], points[y], label=label, **style)
    axis.set_xlabel(LABELS.get(x, x))
    axis.set_ylabel(LABELS.get(y, y))
    axis.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    return save(figure, out_dir, name)


def reliability_diagrams(records: list[dict], out_dir: Path, name: str = "reliability") -> list[Path]:
    """One panel per regularizer: accuracy per confidence bin, standard inference vs MC dropout, with the bins of
    all seeds pooled (weighted by count) from each results.json's ``calibration`` record."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        if record.get("status") == "completed" and record.get("calibration"):
            groups.setdefault(record["choices"]["reg"], []).append(record["calibration"]["reliability"])
    if not groups:
        return []
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(groups), figsize=(3.8 * len(groups), 3.8), squeeze=False)
    for axis, (reg, bins_list) in zip(axes[0], sorted(groups.items())):
        axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
        for style, (kind, label) in zip(STYLES, CALIBRATION_KINDS):
            count = np.sum([b[kind]["count"] for b in bins_list], axis=0)
            weights = [np.asarray(b[kind]["count"]) for b in bins_list]
            conf = np.sum([w * np.asarray(b[kind]["confidence"]) for w, b in zip(weights, bins_list)], axis=0)
            acc = np.sum([w * np.asarray(b[kind]["accuracy"]) for w, b in zip(weights, bins_list)], axis=0)
            used = count > 0
            axis.plot(conf[used] / count[used], acc[used] / count[used], label=label, markersize=4, **style)
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"reg={reg}")
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(frameon=False, fontsize=8, loc="upper left")
    figure.tight_layout()
    return save(figure, out_dir, name)
