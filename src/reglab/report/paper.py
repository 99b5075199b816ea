"""The paper report: one section per study, from whatever runs are given.

A study declares its own section in its experiment yaml (reglab.report.declared): a new study needs no code here.
The analyses below read across studies (L1 vs L2 on every task, calibration of every evaluated run) or need code
of their own (a λ chosen per condition, words kept). Each section names the command that feeds it; a section
without runs is listed as such."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reglab.atomic import atomic_write
from reglab.errors import ConfigError
from reglab.report import figures, linear
from reglab.report.collect import completed_runs
from reglab.report.declared import CONF_EXPERIMENTS, Declaration, check_declaration, declarations, from_conf
from reglab.report.tables import DEFAULT_METRICS, Table, latex_escape, summarize, to_latex, to_markdown


@dataclass
class Section:
    key: str
    title: str
    command: str
    markdown: str
    latex: str
    table: Table
    figures: list[Path]


def of_study(runs: pd.DataFrame, *studies: str) -> pd.DataFrame:
    return runs[runs["study"].isin(studies)] if "study" in runs else runs.iloc[0:0]


def with_task(runs: pd.DataFrame, regs: tuple[str, ...]) -> pd.DataFrame:
    """Ablation runs of every task, restricted to ``regs``: by reg, the table splits the rows by task (each task
    is its own context, compared with its own baseline)."""
    if "study" not in runs or "reg" not in runs:
        return runs.iloc[0:0]
    return runs[runs["study"].fillna("").str.startswith("ablation_") & runs["reg"].isin(regs)]


def text_ablations(runs: pd.DataFrame) -> pd.DataFrame:
    """Ablation studies on text (any text data set: SST-2, a data=text_tsv folder), split by task in the table."""
    if "study" not in runs or "input_kind" not in runs:
        return runs.iloc[0:0]
    return runs[runs["study"].fillna("").str.startswith("ablation_") & (runs["input_kind"] == "tokens")]


def l1_methods(runs: pd.DataFrame) -> pd.DataFrame:
    """The l1_vs_prox_l1 study, one row label per method and λ ('prox_l1 λ=0.001'), reg=none as the baseline."""
    subset = of_study(runs, "l1_vs_prox_l1").copy()
    if subset.empty or "l1_lambda" not in subset:
        return subset.iloc[0:0]
    subset["setting"] = [("none" if reg == "none" else f"{reg} λ={float(lam):g}")
                         for reg, lam in zip(subset["reg"], subset["l1_lambda"])]
    order = {"none": (0, 0.0)}
    subset["order"] = [order.get(s, (1 if r == "l1" else 2, float(lam)))
                       for s, r, lam in zip(subset["setting"], subset["reg"], subset["l1_lambda"])]
    return subset.sort_values("order", kind="stable")


def with_calibration(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs evaluated with MC dropout (mc_samples > 0, or eval.py on their checkpoint)."""
    return runs[runs["mc/ece"].notna()] if "mc/ece" in runs else runs.iloc[0:0]


CALIBRATION_METRICS = [f"{kind}/{metric}" for metric in ("acc", "nll", "ece", "brier") for kind in ("std", "ts", "mc")]
CALIBRATION_METRICS += ["ts/temperature", "std/entropy", "mc/entropy"]


def make_section(key, title, command, runs, by, metrics, records, baseline="none", figure_fn=None,
                 row_keys=None, goals=None):
    if completed_runs(runs).empty:
        return None
    table = summarize(runs, by=by, metrics=metrics, baseline=baseline, row_keys=row_keys, goals=goals)
    paths = figure_fn(table, [r for r in records if r["run_dir"] in set(runs["run_dir"])]) if figure_fn else []
    return Section(key, title, command, to_markdown(table), to_latex(table, label=f"tab:{key}"), table, paths)


def methods_of(table, records: list[dict], choice: str = "reg") -> dict[str, str]:
    """Row label -> the row's ``choice`` (e.g. its regularizer), for figures that draw one line per method."""
    by_dir = {r["run_dir"]: r for r in records}
    return {row.label: str(by_dir[row.run_dirs[0]].get("choices", {}).get(choice, row.label))
            for row in table.rows if row.run_dirs and row.run_dirs[0] in by_dir}


def figure_makers(fig_dir: Path, taken: set[str]) -> dict:
    """What a declaration's ``figures:`` names draw: name -> fn(table, records, key, **options) -> paths. Every
    figure takes ``name`` (its file name; default <figure>_<study>; a name already ``taken`` by another figure of
    the report gets _<study> appended, so no section overwrites another's); the others are listed in
    reglab.report.declared.FIGURE_OPTIONS."""
    def unique(maker):
        def draw(t, rec, key, name=None, **options):
            chosen = name or f"{maker.__name__}_{key}"
            if chosen in taken:
                chosen = f"{chosen}_{key}" if f"{chosen}_{key}" not in taken else f"{chosen}_{key}_{len(taken)}"
            taken.add(chosen)
            return maker(t, rec, key, name=chosen, **options)
        return draw

    makers = {
        "curves": lambda t, rec, key, name: figures.training_curves(t, rec, fig_dir, name=name),
        "weight_histograms": lambda t, rec, key, name: figures.weight_histograms(t, rec, fig_dir, name=name),
        "metric_vs_parameter": lambda t, rec, key, name, metrics=None, xlabel=None, log_x=False:
            figures.metric_vs_parameter(t, list(metrics or t.metrics[:2]), fig_dir, name, xlabel or t.by,
                                        bool(log_x)),
        "learning_curves": lambda t, rec, key, name, metrics=("test/acc", "gen_gap"): figures.learning_curves(
            t, rec, fig_dir, tuple(metrics), name=name),
        "reliability": lambda t, rec, key, name: figures.reliability_diagrams(t, rec, fig_dir, name=name),
        "tradeoff": lambda t, rec, key, name, x="weights/zero_frac", y="test/acc": figures.tradeoff(
            t, methods_of(t, rec), x, y, fig_dir, name),
    }
    for figure, maker in makers.items():
        maker.__name__ = figure
        makers[figure] = unique(maker)
    return makers


def declared_section(declaration: Declaration, runs: pd.DataFrame, records: list[dict], makers: dict):
    """The section a study's yaml declares (reglab.report.declared), or None without completed runs."""

    def draw(table, recs):
        return [path for name, options in declaration.figures.items()
                for path in makers[name](table, recs, declaration.study, **options)]

    options = {"row_keys": tuple(declaration.row_keys)} if declaration.row_keys else {}
    subset = of_study(runs, *declaration.studies)
    if not completed_runs(subset).empty and declaration.rows not in subset:
        print(f"warning: {declaration.source}: report.rows={declaration.rows!r} is not a choice or config path of "
              f"{declaration.study}'s runs; its section is left out", file=sys.stderr)
        return None
    return make_section(declaration.study, declaration.title, declaration.command or
                        f"python train.py -m experiment={declaration.study}", subset,
                        declaration.rows, declaration.metrics or list(DEFAULT_METRICS), records,
                        declaration.baseline, draw, goals=declaration.goals, **options)


def build_sections(runs: pd.DataFrame, records: list[dict], out_dir: Path, taken: set[str] | None = None
                   ) -> tuple[list[Section], list[str]]:
    """The sections studies declare in their yaml (reglab.report.declared), and the analyses that read across
    studies or need code of their own (below), in their declared order. ``taken``: figure names already in
    out_dir/figures (the plain report's), which no section overwrites."""
    fig_dir = out_dir / "figures"
    makers = figure_makers(fig_dir, set(taken or ()))
    ordered, skipped = [], []
    found, warnings = declarations(records)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for declaration in found:
        section = declared_section(declaration, runs, records, makers)
        if section:
            ordered.append((declaration.order, section))
        else:  # it reads other studies' runs (report.studies), and there are none here
            skipped.append((declaration.order, f"{declaration.title} (`{declaration.command}`: no completed runs "
                                               f"of {', '.join(declaration.studies)} here, or a warning above)"))
    declared_studies = {study for d in found for study in d.studies}
    for declaration in declared_in_conf():  # the project's studies with no runs here: how to make them
        if declaration.study not in declared_studies:
            skipped.append((declaration.order, f"{declaration.title} (`{declaration.command}`)"))
    # Analyses across studies: order, key, title, command, runs, row variable, metrics, baseline, figures, options
    specs = [
        (30, "l1_vs_l2", "L1 vs L2 across tasks", "python train.py -m experiment=ablation_<task>",
         with_task(runs, ("none", "l1", "l2")), "reg", ["test/acc", "gen_gap", "weights/small_frac", "weights/l2"],
         "none", lambda t, rec: makers["weight_histograms"](t, rec, "l1_vs_l2"), {}),
        (80, "nlp", "Comparison on NLP", "python train.py -m experiment=ablation_sst2 data.path=DIR (or any text data)",
         text_ablations(runs), "reg", None, "none",
         lambda t, rec: makers["curves"](t, rec, "nlp") + makers["weight_histograms"](t, rec, "nlp"), {}),
        (90, "dropout_tasks", "Dropout across tasks", "python train.py -m experiment=ablation_<task>",
         with_task(runs, ("none", "dropout")), "reg", ["test/acc", "val/acc", "gen_gap"], "none", None, {}),
        (100, "l1_vs_prox_l1", "Subgradient L1 vs proximal L1: exact zeros vs accuracy",
         "python train.py -m experiment=l1_vs_prox_l1 (and reg=none l1_lambda=0 for the baseline)",
         l1_methods(runs), "setting", ["test/acc", "weights/zero_frac", "weights/small_frac",
                                       "weights/sparse_bytes", "weights/dense_bytes"], "none",
         lambda t, rec: makers["tradeoff"](t, rec, "l1_vs_prox_l1", name="l1_vs_prox_l1"),
         # the study's point is sparsity: exact zeros get a direction here
         {"row_keys": ("reg", "l1_lambda"), "goals": {"weights/zero_frac": "max"}}),
        (130, "mc_dropout", "Dropout at inference: standard vs MC dropout",
         "python train.py -m experiment=mc_dropout (or python eval.py ckpt=PATH mc_samples=30)",
         with_calibration(runs), "reg", CALIBRATION_METRICS, "none",
         lambda t, rec: makers["reliability"](t, rec, "mc_dropout", name="reliability"), {}),
    ]
    for order, key, title, command, subset, by, metrics, baseline, figure_fn, options in specs:
        section = make_section(key, title, command, subset, by, metrics or list(DEFAULT_METRICS), records,
                               baseline, figure_fn, **options)
        if section:
            ordered.append((order, section))
        else:
            skipped.append((order, f"{title} (`{command}`)"))
    for order, title, command, build in (
            (140, "Ng (2004): L1 vs L2 logistic regression as irrelevant features are added",
             "python train.py -m hydra/launcher=cpus experiment=ng2004", ng2004_section),
            (150, "L1 as feature selection in text: SST-2 bag-of-words",
             "python train.py -m hydra/launcher=cpus experiment=text_feature_selection data.path=DIR",
             text_feature_selection_section)):
        section = build(runs, records, fig_dir, title, command)
        if section:
            ordered.append((order, section))
        else:
            skipped.append((order, f"{title} (`{command}`)"))
    ordered.sort(key=lambda item: item[0])  # stable: equal orders keep the order found
    skipped.sort(key=lambda item: item[0])
    return [section for _, section in ordered], [text for _, text in skipped]


def declared_in_conf() -> list[Declaration]:
    """The report sections the project's own experiment files declare."""
    found = []
    for path in sorted(CONF_EXPERIMENTS.glob("*.yaml")) if CONF_EXPERIMENTS.is_dir() else []:
        try:
            declared = from_conf(path.stem)
            if declared:
                found.append(check_declaration(path.stem, declared, str(path)))
        except ConfigError:
            pass  # named when a study with runs reads it
    return found


def records_in(runs: pd.DataFrame, records: list[dict]) -> list[dict]:
    dirs = set(runs["run_dir"])
    return [r for r in records if r["run_dir"] in dirs and r.get("status") == "completed"]


def ng2004_section(runs, records, fig_dir, title, command) -> Section | None:
    chosen, table = linear.ng2004_table(of_study(runs, "ng2004"))
    if table.empty:
        return None
    paths = linear.ng2004_figure(chosen, fig_dir)
    # The lasso path: one data set (seed 0), 3 relevant features among 100, proximal L1 over the λ grid.
    path_runs = of_study(runs, "ng2004")
    path_runs = path_runs[(path_runs["reg"] == "prox_l1") & (path_runs["seed"] == 0)
                          & (path_runs["data.n_relevant"] == path_runs["data.n_relevant"].max())
                          & (path_runs["data.n_features"] == 100)]
    if not completed_runs(path_runs).empty:
        paths += linear.lasso_path_figure(records_in(path_runs, records), fig_dir, "lasso_path_synthetic",
                                          "prox_l1, 100 features, seed 0",
                                          highlight=lambda name: name.startswith("relevant"))
    note = ("Test error (mean ± std over seeds, n runs) at the λ chosen per condition on validation accuracy "
            "(mean over seeds); each seed is a fresh data set. The lasso-path figure draws the relevant features "
            "in colour.")
    return Section("ng2004", title, command, note + "\n\n" + linear.markdown_table(table),
                   linear.latex_table(table, "tab:ng2004"), None, paths)


def text_feature_selection_section(runs, records, fig_dir, title, command) -> Section | None:
    study = of_study(runs, "text_feature_selection")
    path = linear.text_path_table(study, records)
    if path.empty:
        return None
    paths = linear.accuracy_vs_words_figure(path, fig_dir)
    lines = [linear.markdown_table(path.drop(columns=["run_dir"]))]
    chosen = linear.sparse_choice(path)
    if chosen is not None:
        record = next(r for r in records if r["run_dir"] == chosen["run_dir"])
        positive, negative = linear.top_words(record)
        dense = path[path["reg"] == "l2"].sort_values("val acc (%)", ascending=False, kind="stable")
        versus = (f"; the best l2 run by validation (λ={dense.iloc[0]['λ']:g}) has {dense.iloc[0]['test acc (%)']:.2f}%"
                  if not dense.empty else "")
        lines += ["", f"Words kept by {chosen['reg']} at λ={chosen['λ']:g}: {chosen['words kept']} of "
                      f"{chosen['vocabulary']} words ({100 * chosen['words kept'] / chosen['vocabulary']:.1f}%), dev "
                      f"accuracy {chosen['test acc (%)']:.2f}%{versus}. Chosen on validation: the most accurate run "
                      "keeping at most 10% of the vocabulary.", "",
                  "| positive | weight | negative | weight |", "|---|---|---|---|"]
        for i in range(max(len(positive), len(negative))):
            pos = positive[i] if i < len(positive) else ("", float("nan"))
            neg = negative[i] if i < len(negative) else ("", float("nan"))
            lines.append(f"| {pos[0]} | {pos[1]:.2f} | {neg[0]} | {neg[1]:.2f} |".replace("nan", ""))
        sparse_runs = study[study["reg"] == chosen["reg"]]
        paths += linear.lasso_path_figure(records_in(sparse_runs, records), fig_dir, "lasso_path_text",
                                          f"{chosen['reg']} on SST-2 bag-of-words", label_top=12)
    return Section("text_feature_selection", title, command, "\n".join(lines),
                   linear.latex_table(path.drop(columns=["run_dir"]), "tab:text_feature_selection"), None, paths)


def relative(path: Path, base: Path) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def without_duplicates(sections: list[Section], drawn: list[Path]) -> None:
    """A section figure whose PNG is byte-identical to one already drawn (the plain report's curves.png for the
    same runs, or another section's) is removed, and the section points to the first one instead."""
    seen = {path.read_bytes(): path for path in drawn if path.suffix == ".png" and path.is_file()}
    for section in sections:
        kept = []
        for path in section.figures:
            if path.suffix != ".png":
                continue
            original = seen.setdefault(path.read_bytes(), path)
            if original != path:
                for twin in (path, path.with_suffix(".pdf")):
                    twin.unlink(missing_ok=True)
            kept += [original, original.with_suffix(".pdf")]
        section.figures = list(dict.fromkeys(kept))


def write_paper(runs: pd.DataFrame, records: list[dict], out_dir: Path, drawn: list[Path] = ()) -> tuple[Path, Path]:
    """report.md and report.tex; ``drawn``: figures already in out_dir (a section never draws a second copy)."""
    sections, skipped = build_sections(runs, records, out_dir, {path.stem for path in drawn})
    without_duplicates(sections, list(drawn))
    md = ["# Regularization study report", "", f"{len(records)} runs read.", ""]
    tex = [r"\documentclass{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs}",
           r"\usepackage{graphicx}", r"\usepackage{amsmath}", r"\usepackage[T1]{fontenc}", r"\begin{document}",
           r"\section*{Regularization study report}"]
    for section in sections:
        md += [f"## {section.title}", "", f"Made by `{section.command}`.", "", section.markdown, ""]
        md += [f"![{p.stem}]({relative(p, out_dir)})" for p in section.figures if p.suffix == ".png"] + [""]
        tex += [rf"\subsection*{{{latex_escape(section.title)}}}", section.latex]
        for path in section.figures:
            if path.suffix == ".pdf":
                tex += [r"\begin{figure}[h]", r"\centering",
                        rf"\includegraphics[width=0.9\linewidth]{{{relative(path, out_dir)}}}", r"\end{figure}"]
        tex.append(r"\clearpage")
    if skipped:
        md += ["## Sections without runs", "", *[f"- {s}" for s in skipped], ""]
    tex.append(r"\end{document}")
    md_path, tex_path = out_dir / "report.md", out_dir / "report.tex"
    for path, lines in ((md_path, md), (tex_path, tex)):  # all at once or not at all
        text = "\n".join(lines)
        atomic_write(path, lambda handle, text=text: handle.write(text.encode()))
    return md_path, tex_path
