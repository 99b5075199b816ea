"""reglab-report: tables and figures from results.json files (no W&B, no network needed).

    reglab-report RUN_DIRS... [--by reg] [--metrics ...] [--out DIR] [--paper] [--wandb]

Writes table.md, table.tex (booktabs), table.csv and figures/ (PNG + PDF) into --out (default:
<first RUN_DIR>/report) and prints the Markdown table. --paper also writes report.md and report.tex with
one section per study it finds (see README). --wandb logs the tables and figures to a W&B run of
job_type=report (offline unless an API key is configured)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reglab.report import figures
from reglab.report.collect import find_unfinished, load_results, runs_frame
from reglab.report.tables import DEFAULT_METRICS, summarize, to_frame, to_latex, to_markdown

CHOICES = ("reg", "data", "model", "optim")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="reglab-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--by", default="reg", help="row variable: a choice (reg, data, model, optim) or a config "
                                                    "path such as reg.l1.strength (default: reg)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--baseline", default="none", help="row the significance test compares with (default: none)")
    parser.add_argument("--out", type=Path, help="output folder (default: <first path>/report)")
    parser.add_argument("--paper", action="store_true", help="also write report.md / report.tex, one section per study")
    parser.add_argument("--wandb", action="store_true", help="log tables and figures to a W&B run (job_type=report)")
    return parser.parse_args(argv)


def log_to_wandb(tables: dict, figure_paths: list[Path], out_dir: Path, study: str | None) -> None:
    import wandb

    from reglab.loggers import resolve_wandb_mode

    run = wandb.init(project="reglab", group=study or "report", job_type="report", dir=str(out_dir),
                     mode=resolve_wandb_mode("auto"))
    try:
        run.log({name: wandb.Table(dataframe=frame) for name, frame in tables.items()})
        run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in figure_paths if p.suffix == ".png"})
    finally:
        wandb.finish()


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    records = load_results(args.paths)
    if not records:
        print(f"error: no results.json under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    runs = runs_frame(records)
    if args.by not in runs:
        choices = [c for c in CHOICES if c in runs]
        print(f"error: --by {args.by!r}: not a choice or config path of these runs (choices: {choices})",
              file=sys.stderr)
        return 2
    out_dir = args.out or args.paths[0] / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summarize(runs, by=args.by, metrics=args.metrics, baseline=args.baseline)
    table.not_completed += [{"run_dir": str(p), "status": "missing", "error": "no results.json (never finished)"}
                            for p in find_unfinished(args.paths)]
    markdown = to_markdown(table)
    (out_dir / "table.md").write_text(markdown + "\n")
    (out_dir / "table.tex").write_text(to_latex(table) + "\n")
    to_frame(table).to_csv(out_dir / "table.csv", index=False)

    fig_dir = out_dir / "figures"
    by_choice = args.by in CHOICES
    figure_paths = (figures.weight_histograms(records, fig_dir)
                    + figures.training_curves(records, fig_dir, by=args.by if by_choice else "reg"))
    if not by_choice:  # a swept number: metrics against it
        figure_paths += figures.metric_vs_parameter(runs, args.by, [m for m in args.metrics if m in runs][:3],
                                                    fig_dir, "metrics_vs_" + args.by.replace(".", "_"), args.by,
                                                    log_x=args.by.endswith("strength") or args.by.endswith("decay"))
    print(markdown)
    if args.paper:
        from reglab.report.paper import write_paper

        md_path, tex_path = write_paper(runs, records, out_dir)
        print(f"\nwrote {md_path} and {tex_path}")
    print(f"\nwrote {out_dir}/table.{{md,tex,csv}} and {len(figure_paths)} figure files in {fig_dir}")
    if args.wandb:
        studies = runs["study"].dropna().unique() if "study" in runs else []
        log_to_wandb({"table": to_frame(table)}, figure_paths, out_dir, studies[0] if len(studies) == 1 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
