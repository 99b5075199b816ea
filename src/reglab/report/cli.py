"""reglab-report: tables and figures from results.json files (no W&B, no network needed).

    reglab-report RUN_DIRS... [--by reg] [--metrics ...] [--out DIR] [--paper] [--wandb]

Writes table.md, table.tex (booktabs), table.csv and figures/ (PNG + PDF) into --out (default:
<first RUN_DIR>/report) and prints the Markdown table. A row is one condition: runs that differ in anything but
the seed are never pooled; where --by would pool them, the row is split and its label names what differs.
--paper also writes report.md and report.tex with one section per study it finds (see docs/studies.md). --wandb logs the
tables and figures to a W&B run of job_type=report (offline unless an API key is configured)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reglab.report import figures
from reglab.report.collect import find_unfinished, load_results, runs_frame
from reglab.report.tables import (DEFAULT_METRICS, METRICS, OVERFIT_THRESHOLD, TESTS, UNDERFIT_THRESHOLD,
                                  summarize, to_frame, to_latex, to_markdown)

CHOICES = ("reg", "data", "model", "optim")


def goal(text: str) -> tuple[str, str]:
    metric, _, direction = text.rpartition("=")
    if not metric or direction not in ("max", "min"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected METRIC=max or METRIC=min")
    return metric, direction


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="reglab-report", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  reglab-report logs/multiruns/ablation_digits                the table (mean ± std), figures\n"
               "  reglab-report logs/multiruns/l1_sweep --by reg.l1.strength  rows by a swept value\n"
               "  reglab-report logs/multiruns --paper                        report.md/.tex, a section per study\n"
               "  reglab-report --mcnemar RUN_A RUN_B                        two runs, example by example")
    parser.add_argument("paths", nargs="*", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--by", default="reg", help="row variable: a choice (reg, data, model, optim) or a config "
                                                    "path such as reg.l1.strength (default: reg)")
    parser.add_argument("--metrics", nargs="+",
                        help=f"columns (default: {' '.join(DEFAULT_METRICS)}); any final metric of the runs, e.g. "
                             f"{', '.join(sorted(METRICS))}")
    parser.add_argument("--baseline", default="none", help="row each row is compared with (default: none)")
    parser.add_argument("--test", choices=TESTS, default="paired",
                        help="how rows are compared with the baseline: paired (over matched seeds; default) or welch "
                             "(unpaired)")
    parser.add_argument("--mcnemar", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                        help="only compare two runs on their test examples (McNemar) and exit")
    parser.add_argument("--goal", nargs="+", type=goal, default=[], metavar="METRIC=max|min",
                        help="give a descriptive column a direction for this study (bold best, tested), e.g. "
                             "weights/zero_frac=max")
    parser.add_argument("--overfit-threshold", type=float, default=OVERFIT_THRESHOLD * 100, metavar="PT",
                        help="the baseline's gen. gap (points) below which the table says it does not overfit "
                             f"(default: {OVERFIT_THRESHOLD * 100:g})")
    parser.add_argument("--underfit-threshold", type=float, default=UNDERFIT_THRESHOLD * 100, metavar="PT",
                        help="train accuracy this many points below the baseline's marks a row as underfitting "
                             f"(default: {UNDERFIT_THRESHOLD * 100:g})")
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


def write_text(path: Path, text: str) -> None:
    """All at once or not at all: a crash never leaves half a table."""
    from reglab.atomic import atomic_write

    atomic_write(path, lambda handle: handle.write(text.encode()))


def mcnemar_main(first: Path, second: Path) -> int:
    """reglab-report --mcnemar RUN_A RUN_B: the two runs' test predictions, example by example."""
    from reglab.predictions import PredictionsError, load
    from reglab.report.stats import mcnemar

    try:
        a, b = load(first), load(second)
    except PredictionsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if a["label"].shape != b["label"].shape or (a["label"] != b["label"]).any():
        print(f"error: {first} and {second} scored different test sets ({len(a['label'])} vs {len(b['label'])} "
              "examples, or other labels): McNemar pairs the same examples", file=sys.stderr)
        return 2
    right_a, right_b = a["pred"] == a["label"], b["pred"] == b["label"]
    result = mcnemar(right_a, right_b)
    test = "exact binomial" if result.exact else f"chi-square {result.statistic:.3f} (continuity-corrected)"
    print(f"{first}: {right_a.mean():.2%} right; {second}: {right_b.mean():.2%} right; {len(right_a):,} test examples")
    print(f"right only in the first: {result.only_first}; only in the second: {result.only_second}")
    print(f"McNemar ({test}): p = {result.p:.4g}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mcnemar:
        return mcnemar_main(*args.mcnemar)
    if not args.paths:
        print("error: give run or multirun folders (or --mcnemar RUN_A RUN_B)", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    records = load_results(args.paths)
    if not records:
        print(f"error: no results.json under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    for record in records:
        for warning in record.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
    unreadable = [r for r in records if r.get("status") == "unreadable"]
    for record in unreadable:
        print(f"warning: skipping {record['run_dir']}/results.json: {record['error']}", file=sys.stderr)
    if len(unreadable) == len(records):
        print(f"error: no readable results.json under {' '.join(map(str, args.paths))} ({len(unreadable)} "
              "unreadable, listed above)", file=sys.stderr)
        return 1
    runs = runs_frame(records)
    if args.by not in runs:
        choices = [c for c in CHOICES if c in runs]
        print(f"error: --by {args.by!r}: not a choice or config path of these runs (choices: {choices})",
              file=sys.stderr)
        return 2
    unknown = [m for m in args.metrics or () if m not in runs]
    if unknown:
        known = sorted({name for record in records for name in record.get("metrics") or {}})
        print(f"error: --metrics {' '.join(unknown)}: not a final metric of these runs (available: {known})",
              file=sys.stderr)
        return 2
    for flag, value in (("--overfit-threshold", args.overfit_threshold), ("--underfit-threshold",
                                                                           args.underfit_threshold)):
        if not (value >= 0 and value != float("inf")):  # also refuses NaN
            print(f"error: {flag} {value}: must be a number of points >= 0", file=sys.stderr)
            return 2
    out_dir = args.out or args.paths[0] / "report"
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: --out {out_dir}: is a file, not a folder", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summarize(runs, by=args.by, metrics=args.metrics or DEFAULT_METRICS, baseline=args.baseline,
                      goals=dict(args.goal), test=args.test,
                      overfit_threshold=args.overfit_threshold / 100, underfit_threshold=args.underfit_threshold / 100)
    table.not_completed += [{"run_dir": str(p), "status": "missing", "error": "no results.json (never finished)"}
                            for p in find_unfinished(args.paths)]
    markdown = to_markdown(table)
    write_text(out_dir / "table.md", markdown + "\n")
    write_text(out_dir / "table.tex", to_latex(table) + "\n")
    write_text(out_dir / "table.csv", to_frame(table).to_csv(index=False))

    fig_dir = out_dir / "figures"
    figure_paths = (figures.weight_histograms(table, records, fig_dir)
                    + figures.training_curves(table, records, fig_dir))
    if args.by not in CHOICES:  # a swept number: metrics against it
        figure_paths += figures.metric_vs_parameter(table, table.metrics[:3], fig_dir,
                                                    "metrics_vs_" + args.by.replace(".", "_"), args.by,
                                                    log_x=args.by.endswith("strength") or args.by.endswith("decay"))
    print(markdown)
    if table.split_keys:
        print(f"\nnote: these runs differ in more than {args.by} and the seed; rows are split by "
              f"{', '.join(table.split_by)}", file=sys.stderr)
    if args.paper:
        from reglab.report.paper import write_paper

        md_path, tex_path = write_paper(runs, records, out_dir, drawn=figure_paths)
        print(f"\nwrote {md_path} and {tex_path}")
    print(f"\nwrote {out_dir}/table.{{md,tex,csv}} and {len(figure_paths)} figure files in {fig_dir}")
    if args.wandb:
        studies = runs["study"].dropna().unique() if "study" in runs else []
        log_to_wandb({"table": to_frame(table)}, figure_paths, out_dir, studies[0] if len(studies) == 1 else None)
    return 0
