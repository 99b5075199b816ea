"""Find results.json files under run/multirun directories and flatten them into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from reglab.results import RESULTS_FILE


def find_results(paths) -> list[Path]:
    found = []
    for path in map(Path, paths):
        if path.is_file() and path.name == RESULTS_FILE:
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob(RESULTS_FILE)))
    return found


def load_runs(paths) -> pd.DataFrame:
    """One row per run: run_dir, status, error, seed, every choice, every final metric."""
    rows = []
    for file in find_results(paths):
        try:
            result = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            rows.append({"run_dir": str(file.parent), "status": "unreadable", "error": str(err)})
            continue
        rows.append({"run_dir": str(file.parent), "status": result.get("status"), "error": result.get("error"),
                     "seed": result.get("seed"), **result.get("choices", {}), **result.get("metrics", {})})
    return pd.DataFrame(rows)
