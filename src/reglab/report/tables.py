"""Mean +- std over seeds, one row per value of the varied choice."""

from __future__ import annotations

import pandas as pd

DEFAULT_METRICS = ("test/acc", "val/acc", "gen_gap", "weights/zero_frac", "weights/small_frac", "weights/l2")


def summarize(runs: pd.DataFrame, by: str = "reg", metrics=DEFAULT_METRICS) -> pd.DataFrame:
    """Completed runs grouped by ``by``: '<mean> ± <std>' per metric and n; rows keep first-seen order."""
    done = runs[runs["status"] == "completed"]
    metrics = [m for m in metrics if m in done.columns]
    rows = []
    groups = sorted(done.groupby(by, sort=False), key=lambda item: item[0] != "none")  # baseline first
    for value, group in groups:
        row = {by: value, "n": len(group)}
        for metric in metrics:
            values = group[metric].dropna()
            if len(values) > 1:
                row[metric] = f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
            else:
                row[metric] = f"{values.mean():.4f}" if len(values) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def not_completed(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty or "status" not in runs:
        return runs
    return runs[runs["status"] != "completed"][["run_dir", "status", "error"]]


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])
