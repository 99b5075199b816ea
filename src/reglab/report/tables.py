"""Paper tables: one row per value of the varied choice, mean ± std over seeds with n, the best cell per column
in bold, and a mark where a row differs from the baseline (Welch's t-test, p < 0.05)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

DEFAULT_METRICS = ("test/acc", "val/acc", "gen_gap", "weights/zero_frac", "weights/small_frac", "weights/l2", "test/ece")
# Which way is better, for the bold "best" cell. Metrics not listed get no bold.
HIGHER_IS_BETTER = {"test/acc": True, "val/acc": True, "train/acc": True, "gen_gap": False, "test/loss": False,
                    "val/loss": False, "weights/zero_frac": True, "weights/small_frac": True, "weights/l2": False,
                    "weights/l1": False, "test/ece": False, "test/nll": False, "weights/sparse_bytes": False,
                    **{f"{kind}/{metric}": better for kind in ("std", "mc") for metric, better in
                       (("acc", True), ("nll", False), ("brier", False), ("ece", False))}}
SIGNIFICANCE = 0.05
SIGNIFICANCE_MARK = "†"
TEST_NAME = "Welch's t-test"


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    p_value: float | None = None  # vs the baseline row
    best: bool = False

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE


@dataclass
class Table:
    by: str
    metrics: list[str]
    rows: list[str]
    cells: dict[tuple[str, str], Cell]
    n: dict[str, int]
    baseline: str | None
    not_completed: list[dict] = field(default_factory=list)


def welch_p_value(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # identical samples: scipy warns, and the p-value is NaN (no mark)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = ttest_ind(a, b, equal_var=False)
    return None if math.isnan(result.pvalue) else float(result.pvalue)


def row_order(values) -> list:
    """'none' first, then numbers ascending, then names in first-seen order."""
    values = list(dict.fromkeys(values))
    numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    named = [v for v in values if v not in numeric]
    return [v for v in named if v == "none"] + sorted(numeric) + [v for v in named if v != "none"]


def summarize(runs: pd.DataFrame, by: str = "reg", metrics=DEFAULT_METRICS, baseline="none") -> Table:
    done = runs[runs["status"] == "completed"] if "status" in runs else runs.iloc[0:0]
    metrics = [m for m in metrics if m in done.columns and done[m].notna().any()]
    rows = row_order(done[by].dropna().tolist()) if by in done else []
    values = {(row, m): done.loc[done[by] == row, m].dropna().astype(float).tolist() for row in rows for m in metrics}
    baseline = next((r for r in rows if str(r) == str(baseline)), None)
    cells = {}
    for (row, metric), sample in values.items():
        if not sample:
            continue
        std = float(pd.Series(sample).std(ddof=1)) if len(sample) > 1 else float("nan")
        p_value = welch_p_value(sample, values[(baseline, metric)]) if baseline and row != baseline else None
        cells[(row, metric)] = Cell(float(pd.Series(sample).mean()), std, len(sample), p_value)
    for metric in metrics:
        if metric in HIGHER_IS_BETTER:
            column = [(cells[(r, metric)].mean, r) for r in rows if (r, metric) in cells]
            if len({mean for mean, _ in column}) > 1:  # nothing is best when all rows are equal
                best = (max if HIGHER_IS_BETTER[metric] else min)(mean for mean, _ in column)
                for mean, row in column:  # ties are all bold
                    cells[(row, metric)].best = mean == best
    n = {row: int((done[by] == row).sum()) for row in rows}
    failed = runs[runs["status"] != "completed"] if "status" in runs else runs
    not_completed = [{"run_dir": r["run_dir"], "status": r["status"], "error": r.get("error")}
                     for r in failed.to_dict("records")]
    return Table(by, metrics, [str(r) for r in rows], {(str(r), m): c for (r, m), c in cells.items()},
                 {str(r): c for r, c in n.items()}, None if baseline is None else str(baseline), not_completed)


def number_format(value: float) -> str:
    """One format per cell (the mean's), so mean and std line up: 0.0190 ± 0.0004, 1.2e+04 ± 3.1e+02."""
    if value != 0 and (abs(value) >= 1000 or abs(value) < 1e-3):
        return ".2e"
    return ".2f" if abs(value) >= 100 else ".4f"


def cell_text(cell: Cell | None, latex: bool) -> str:
    if cell is None:
        return "–"
    pm = r" $\pm$ " if latex else " ± "
    spec = number_format(cell.mean)
    text = format(cell.mean, spec) + ("" if math.isnan(cell.std) else pm + format(cell.std, spec))
    if cell.best:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if cell.significant:
        text += r"$^\dagger$" if latex else SIGNIFICANCE_MARK
    return text


def caption(table: Table) -> str:
    parts = ["Mean ± std over seeds (n runs per row); best per column in bold"]
    if table.baseline is not None:
        parts.append(f"{SIGNIFICANCE_MARK}: differs from {table.by}={table.baseline} with p < {SIGNIFICANCE} "
                     f"({TEST_NAME}, unequal variances)")
    return "; ".join(parts) + "."


def not_completed_lines(table: Table) -> list[str]:
    return [f"- {r['run_dir']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else "")
            for r in table.not_completed]


def to_markdown(table: Table) -> str:
    header = [table.by, "n", *table.metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.rows:
        cells = [cell_text(table.cells.get((row, m)), latex=False) for m in table.metrics]
        lines.append("| " + " | ".join([row, str(table.n[row]), *cells]) + " |")
    lines += ["", caption(table)]
    if table.not_completed:
        lines += ["", "Not completed (excluded from the table):", *not_completed_lines(table)]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                          ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        text = text.replace(char, escaped)
    return text


def to_latex(table: Table, label: str = "tab:results") -> str:
    """A booktabs table, ready for \\input (needs \\usepackage{booktabs})."""
    columns = "l" + "r" * (len(table.metrics) + 1)
    header = " & ".join(latex_escape(h) for h in [table.by, "n", *table.metrics])
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{columns}}}", r"\toprule", header + r" \\",
             r"\midrule"]
    for row in table.rows:
        cells = [cell_text(table.cells.get((row, m)), latex=True) for m in table.metrics]
        lines.append(" & ".join([latex_escape(row), str(table.n[row]), *cells]) + r" \\")
    text = caption(table).replace("±", r"$\pm$").replace(SIGNIFICANCE_MARK, r"$^\dagger$")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{text}}}", rf"\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines)


def to_frame(table: Table) -> pd.DataFrame:
    """CSV form: numbers, not text: mean, std and p-value columns per metric."""
    records = []
    for row in table.rows:
        record = {table.by: row, "n": table.n[row]}
        for metric in table.metrics:
            cell = table.cells.get((row, metric))
            record[f"{metric} mean"] = cell.mean if cell else None
            record[f"{metric} std"] = cell.std if cell else None
            record[f"{metric} p"] = cell.p_value if cell else None
        records.append(record)
    return pd.DataFrame(records)
