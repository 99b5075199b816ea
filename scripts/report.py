"""Summarise runs: `python scripts/report.py logs/multiruns/<dir> [--by reg] [--out DIR]`.

Reads results.json files only. Prints a Markdown table (mean ± std over seeds, n) and lists runs
that did not complete; with --out, also writes summary.md and summary.csv there."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reglab.report.collect import load_runs
from reglab.report.tables import DEFAULT_METRICS, not_completed, summarize, to_markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run or multirun directories (searched recursively)")
    parser.add_argument("--by", default="reg", help="choice that varies across rows (default: reg)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--out", type=Path, help="write summary.md and summary.csv here")
    args = parser.parse_args(argv)

    runs = load_runs(args.paths)
    if runs.empty:
        print(f"error: no results.json under {' '.join(args.paths)}", file=sys.stderr)
        return 1
    if args.by not in runs.columns:
        print(f"error: --by {args.by!r}: runs have choices {sorted(c for c in ('data', 'model', 'reg', 'optim') if c in runs)}",
              file=sys.stderr)
        return 1
    table = summarize(runs, by=args.by, metrics=args.metrics)
    markdown = to_markdown(table) if not table.empty else "(no completed runs)"
    missing = not_completed(runs)
    if not missing.empty:
        markdown += "\n\nNot completed:\n" + "\n".join(f"- {r.run_dir}: {r.status} {r.error or ''}"
                                                       for r in missing.itertuples())
    print(markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.md").write_text(markdown + "\n")
        table.to_csv(args.out / "summary.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
