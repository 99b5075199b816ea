"""Paper figures from a report table and its runs' results.json records (PNG and PDF).

Series follow the table's rows, so a figure never pools what the table keeps apart. No two series share both
colour and line style (Okabe-Ito colours, which colour-blind readers can tell apart, crossed with line styles),
and every panel has a legend or shares one."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from reglab.report.tables import Table, metric_info

PALETTE = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#F0E442"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
CALIBRATION_KINDS = (("std", "standard inference"), ("ts", "temperature-scaled"), ("mc", "MC dropout"))
SPARSE_BIN = 30  # a reliability bin with fewer test examples is drawn faded: its accuracy is a noisy estimate


def bin_colours(colour: str, counts) -> list[tuple]:
    """``colour`` per bin, fading (alpha down to 0.15) as the bin's count falls below SPARSE_BIN."""
    from matplotlib.colors import to_rgb

    rgb = to_rgb(colour)
    return [(*rgb, float(min(1.0, max(0.15, n / SPARSE_BIN)))) for n in counts]


def series_style(index: int) -> dict:
    """The index-th series' colour, line style and marker: (colour, line style) pairs are distinct for the first
    len(PALETTE) * len(LINESTYLES) = 32 series (same colour -> a different style)."""
    colours, styles = len(PALETTE), len(LINESTYLES)
    return dict(color=PALETTE[index % colours], linestyle=LINESTYLES[(index + index // colours) % styles],
                marker=MARKERS[(index // styles) % len(MARKERS)])


def axis_label(metric: str) -> str:
    return metric_info(metric).label


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


def records_of(table: Table, records: list[dict]) -> dict[str, list[dict]]:
    """Each row's completed records, by row label."""
    by_dir = {r["run_dir"]: r for r in records if r.get("status") == "completed"}
    return {row.label: [by_dir[d] for d in row.run_dirs if d in by_dir] for row in table.rows}


def weight_histograms(table: Table, records: list[dict], out_dir: Path,
                      name: str = "weight_histograms") -> list[Path]:
    """|w| distribution of the final weights, one line per row of the table (a section that wants fewer passes a
    table of fewer rows), counts summed over the row's seeds: L1 piles weights up near zero, L2 shrinks them all.
    The underflow bin (|w| below the first edge, exact zeros included) is drawn apart and labelled."""
    per_row = records_of(table, records)
    series = [(row.label, [r["weight_histogram"] for r in per_row[row.label] if r.get("weight_histogram")])
              for row in table.rows]
    series = [(label, hists) for label, hists in series if hists]
    if not series:
        return []
    edges = series[0][1][0]["edges"]  # one binning per figure: runs of another reglab version may bin otherwise
    series = [(label, kept) for label, hists in series
              if (kept := [h for h in hists if list(h.get("edges") or []) == list(edges)])]
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.6))
    edges = np.asarray(series[0][1][0]["edges"])
    underflow_x = edges[0] / 10 ** 1.5
    centers = np.sqrt(edges[:-1] * edges[1:])
    for index, (label, hists) in enumerate(series):
        style = series_style(index)
        total = sum(h["total"] for h in hists)
        counts = np.sum([h["counts"] for h in hists], axis=0).astype(float) / total
        zeros = sum(h["zeros"] for h in hists)
        low = (zeros + sum(h.get("underflow", 0) for h in hists)) / total
        axis.plot(centers, counts, label=f"{label} (exact zeros {zeros / total:.1%})", markersize=3, **style)
        axis.plot([underflow_x], [low], linestyle="none", marker=style["marker"], color=style["color"],
                  markersize=6)
    axis.axvline(edges[0] / 10 ** 0.75, color="0.7", linewidth=0.8)
    axis.set_xscale("log")
    decades = range(math.ceil(math.log10(edges[0])), math.floor(math.log10(edges[-1])) + 1, 2)
    ticks = [underflow_x] + [10.0 ** k for k in decades]
    axis.set_xticks(ticks, [f"<{edges[0]:.0e}\n(incl. 0)"] + [f"1e{k}" for k in decades], fontsize=7)
    axis.minorticks_off()
    axis.set_xlabel("|w| (log scale); left of the line: underflow bin")
    axis.set_ylabel("fraction of weights per bin")
    axis.set_title("Weight magnitudes after training")
    axis.legend(frameon=False, fontsize=7)
    return save(figure, out_dir, name)


def metric_vs_parameter(table: Table, metrics: list[str], out_dir: Path, name: str, xlabel: str,
                        log_x: bool = False) -> list[Path]:
    """Mean ± std over seeds of each metric against the table's numeric row variable (λ, dropout rate), one
    panel per metric, one line per context (rows that share everything but the row variable)."""
    numeric = [r for r in table.rows if isinstance(r.value, (int, float)) and not isinstance(r.value, bool)
               and (r.value > 0 or not log_x)]
    metrics = [m for m in metrics if any((r.label, m) in table.cells for r in numeric)]
    if len({r.value for r in numeric}) < 2 or not metrics:
        return []
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    contexts = list(dict.fromkeys(r.context for r in numeric))
    names = {r.context: r.qualifier or "runs" for r in numeric}
    for axis, metric in zip(axes[0], metrics):
        info = metric_info(metric, table.goals)
        for index, context in enumerate(contexts):
            points = sorted(((float(r.value), table.cells[(r.label, metric)]) for r in numeric
                             if r.context == context and (r.label, metric) in table.cells), key=lambda p: p[0])
            if not points:
                continue
            x = [p[0] for p in points]
            y = [p[1].mean * info.scale for p in points]
            err = [0.0 if math.isnan(p[1].std) else p[1].std * info.scale for p in points]
            n = sorted({p[1].n for p in points})
            axis.errorbar(x, y, yerr=err, capsize=3, label=f"{names[context]} (mean ± std, n={'/'.join(map(str, n))})",
                          **series_style(index))
        if log_x:
            axis.set_xscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(info.label)
        axis.legend(frameon=False, fontsize=7)
    figure.tight_layout()
    return save(figure, out_dir, name)


def learning_curves(table: Table, records: list[dict], out_dir: Path, metrics=("test/acc", "gen_gap"),
                    name: str = "learning_curves") -> list[Path]:
    """Each metric against the number of training examples (log x), one line per row value (the regularizer),
    mean over seeds with a ± std band: the table's rows at every training-set size (data.train_size)."""
    per_row = records_of(table, records)
    series: dict[str, list[tuple[int, object]]] = {}
    for row in table.rows:
        sizes = {r.get("split_sizes", {}).get("train") for r in per_row.get(row.label, [])} - {None}
        if len(sizes) == 1:
            series.setdefault(str(row.value), []).append((sizes.pop(), row))
    if not series or max(len({x for x, _ in points}) for points in series.values()) < 2:
        return []
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        info = metric_info(metric, table.goals)
        for index, (label, points) in enumerate(series.items()):
            cells = sorted(((x, table.cells[(row.label, metric)]) for x, row in points
                            if (row.label, metric) in table.cells), key=lambda c: c[0])
            if not cells:
                continue
            x = np.array([c[0] for c in cells], dtype=float)
            mean = np.array([c[1].mean for c in cells]) * info.scale
            std = np.array([0.0 if math.isnan(c[1].std) else c[1].std for c in cells]) * info.scale
            style = series_style(index)
            n = sorted({c[1].n for c in cells})
            axis.plot(x, mean, label=f"{label} (n={'/'.join(map(str, n))})", markersize=4, **style)
            axis.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
        axis.set_xscale("log")
        axis.set_xlabel("training examples (log scale)")
        axis.set_ylabel(f"{info.label}, mean ± std")
        axis.legend(frameon=False, fontsize=7)
    figure.tight_layout()
    return save(figure, out_dir, name)


def training_curves(table: Table, records: list[dict], out_dir: Path, name: str = "curves") -> list[Path]:
    """Train (eval-mode subset) and validation accuracy per epoch, one line per table row: the mean over seeds,
    with a band of ± one sample std over seeds (where a row has 2 or more), and one legend shared by both
    panels."""
    per_row = {label: [r for r in recs if r.get("history")] for label, recs in records_of(table, records).items()}
    rows = [row for row in table.rows if per_row.get(row.label)]
    if not rows:
        return []
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for index, row in enumerate(rows):
        for axis, key in zip(axes, ("train/acc", "val/acc")):
            epochs: dict[int, list[float]] = {}
            for record in per_row[row.label]:
                for entry in record["history"]:
                    if entry.get(key) is not None:
                        epochs.setdefault(entry["epoch"] + 1, []).append(100 * entry[key])
            xs = sorted(epochs)
            style = series_style(index)
            mean = np.array([np.mean(epochs[x]) for x in xs])
            axis.plot(xs, mean, label=f"{row.label} (n={row.n})", markersize=3, **style)
            spread = np.array([np.std(epochs[x], ddof=1) if len(epochs[x]) > 1 else np.nan for x in xs])
            if not np.isnan(spread).all():
                axis.fill_between(xs, mean - spread, mean + spread, color=style["color"], alpha=0.15, linewidth=0)
    for axis, title in zip(axes, ("train subset, eval mode", "validation")):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(title)
    axes[0].set_ylabel("accuracy (%), mean ± std over seeds")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), frameon=False, fontsize=7,
                  bbox_to_anchor=(0.5, -0.02 - 0.05 * math.ceil(len(labels) / 3)))
    figure.tight_layout()
    return save(figure, out_dir, name)


def tradeoff(table: Table, series_of: dict[str, str], x: str, y: str, out_dir: Path, name: str) -> list[Path]:
    """y against x, one point per row (mean over its seeds), one line per series (``series_of``: row label ->
    series name, e.g. the method); the baseline row's y as a horizontal line. E.g. accuracy against the
    exact-zero fraction for subgradient vs proximal L1 across λ."""
    xi, yi = metric_info(x, table.goals), metric_info(y, table.goals)
    points: dict[str, list[tuple[float, float]]] = {}
    for row in table.rows:
        if (row.label, x) in table.cells and (row.label, y) in table.cells and str(row.value) != table.baseline:
            points.setdefault(series_of.get(row.label, row.label), []).append(
                (table.cells[(row.label, x)].mean * xi.scale, table.cells[(row.label, y)].mean * yi.scale))
    if len(points) < 1:
        return []
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.6))
    bases = [r for r in table.rows if str(r.value) == table.baseline and (r.label, y) in table.cells]
    for index, row in enumerate(bases):
        axis.axhline(table.cells[(row.label, y)].mean * yi.scale, color=PALETTE[index % len(PALETTE)],
                     linestyle=LINESTYLES[(index + 1) % len(LINESTYLES)], linewidth=1, label=f"{row.label} (mean)")
    for index, (label, pts) in enumerate(points.items()):
        pts.sort()
        axis.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **series_style(index + len(bases)))
    axis.set_xlabel(xi.label)
    axis.set_ylabel(yi.label)
    axis.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    return save(figure, out_dir, name)


def reliability_diagrams(table: Table, records: list[dict], out_dir: Path, name: str = "reliability") -> list[Path]:
    """One panel per table row: accuracy per confidence bin, standard inference vs MC dropout, with the bins of
    the row's seeds pooled (weighted by count) from each results.json's ``calibration`` record."""
    groups = {label: [r["calibration"]["reliability"] for r in recs if r.get("calibration")]
              for label, recs in records_of(table, records).items()}
    groups = {label: bins for label, bins in groups.items() if bins}
    if not groups:
        return []
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(groups), figsize=(3.8 * len(groups), 3.8), squeeze=False)
    for axis, (label, bins_list) in zip(axes[0], groups.items()):
        axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
        for index, (kind, kind_label) in enumerate(CALIBRATION_KINDS):
            if any(kind not in b for b in bins_list):  # results from before temperature scaling existed
                continue
            count = np.sum([b[kind]["count"] for b in bins_list], axis=0)
            weights = [np.asarray(b[kind]["count"]) for b in bins_list]
            conf = np.sum([w * np.asarray(b[kind]["confidence"]) for w, b in zip(weights, bins_list)], axis=0)
            acc = np.sum([w * np.asarray(b[kind]["accuracy"]) for w, b in zip(weights, bins_list)], axis=0)
            used = count > 0
            style = series_style(index)
            x, y = conf[used] / count[used], acc[used] / count[used]
            axis.plot(x, y, label=kind_label, color=style["color"], linestyle=style["linestyle"], linewidth=1,
                      alpha=0.5)
            axis.scatter(x, y, s=18, marker=style["marker"], color=bin_colours(style["color"], count[used]),
                         zorder=3)
            if kind == "std":  # how many test examples each bin holds: a bin of 2 says little
                counts_axis = axis.twinx()
                edges = np.linspace(0, 1, len(count) + 1)
                counts_axis.bar(edges[:-1], count, width=np.diff(edges), align="edge", color="0.85", zorder=0)
                counts_axis.set_ylim(0, 4 * max(1, count.max()))
                counts_axis.set_yticks([])
                axis.set_zorder(counts_axis.get_zorder() + 1)
                axis.patch.set_visible(False)
                for left, n in zip(edges[:-1], count):
                    if n:
                        axis.text(left + 0.5 / len(count), 0.01, f"{int(n)}", fontsize=5, ha="center",
                                  va="bottom", rotation=90, color="0.35")
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{label} (n={len(bins_list)})")
        axis.legend(frameon=False, fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("accuracy")
    figure.text(0.5, -0.02, f"grey bars and numbers: test examples per bin (standard inference, seeds pooled); "
                f"points fade below {SPARSE_BIN} examples", ha="center", fontsize=7)
    figure.tight_layout()
    return save(figure, out_dir, name)
