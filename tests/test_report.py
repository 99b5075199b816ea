"""The report: cells equal hand-computed statistics, failures are listed, LaTeX is well formed, sections."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess

import pytest

from reglab.report.cli import main as report_main
from reglab.report.collect import load_runs
from reglab.report.tables import summarize, to_latex, to_markdown

ACCURACIES = {"none": [0.90, 0.91, 0.89], "l1": [0.95, 0.96, 0.955], "l2": [0.90, 0.92, 0.88]}


def write_run(root, name, reg, seed, acc, status="completed", study="ablation_digits", extra=None, config=None):
    folder = root / name
    folder.mkdir(parents=True)
    record = {"status": status, "study": study, "seed": seed,
              "choices": {"data": "digits", "model": "cnn", "reg": reg, "optim": "adamw"},
              "config": config or {"reg": {}}, "metrics": {"test/acc": acc, "val/acc": acc - 0.01,
                                                           "gen_gap": 1.0 - acc, "weights/l2": 10 * acc},
              "history": [{"epoch": 0, "train/acc": acc - 0.1, "val/acc": acc - 0.2},
                          {"epoch": 1, "train/acc": acc, "val/acc": acc - 0.01}],
              "weight_histogram": {"edges": [1e-8, 1e-4, 1.0, 10.0], "counts": [5, 3, 2], "zeros": 0, "total": 10}}
    if status != "completed":
        record = {**record, "metrics": {}, "error": "RuntimeError: boom"}
    record.update(extra or {})
    (folder / "results.json").write_text(json.dumps(record))


@pytest.fixture
def ablation(tmp_path):
    root = tmp_path / "sweep"
    for reg, values in ACCURACIES.items():
        for seed, acc in enumerate(values):
            write_run(root, f"reg={reg},seed={seed}", reg, seed, acc)
    write_run(root, "reg=l2,seed=3", "l2", 3, 0.0, status="failed")
    (root / "reg=l1,seed=9" / ".hydra").mkdir(parents=True)  # a job that never wrote results.json
    return root


def test_cells_equal_hand_computed_mean_and_std(ablation):
    table = summarize(load_runs([ablation]), by="reg", metrics=["test/acc", "gen_gap"])
    assert table.rows == ["none", "l1", "l2"]  # baseline first
    for reg, values in ACCURACIES.items():
        cell = table.cells[(reg, "test/acc")]
        assert cell.n == 3 and table.n[reg] == 3  # the failed l2 run is not averaged in
        assert cell.mean == pytest.approx(statistics.mean(values))
        assert cell.std == pytest.approx(statistics.stdev(values))
        assert f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" in to_markdown(table)


def test_best_is_bold_and_significance_is_marked(ablation):
    from scipy.stats import ttest_ind

    table = summarize(load_runs([ablation]), by="reg", metrics=["test/acc", "gen_gap"])
    assert table.cells[("l1", "test/acc")].best and table.cells[("l1", "gen_gap")].best  # higher acc, lower gap
    assert not table.cells[("none", "test/acc")].best
    expected = ttest_ind(ACCURACIES["l1"], ACCURACIES["none"], equal_var=False).pvalue
    assert table.cells[("l1", "test/acc")].p_value == pytest.approx(expected) and expected < 0.05
    assert table.cells[("l1", "test/acc")].significant
    assert not table.cells[("l2", "test/acc")].significant  # same mean as none
    markdown = to_markdown(table)
    assert "| l1 | 3 | **0.9550 ± 0.0050**†" in markdown
    assert "Welch's t-test" in markdown


def test_failed_and_missing_runs_are_listed(ablation):
    out = ablation / "report"
    assert report_main([str(ablation), "--out", str(out)]) == 0
    markdown = (out / "table.md").read_text()
    assert "Not completed" in markdown
    assert "reg=l2,seed=3: failed (RuntimeError: boom)" in markdown
    assert "reg=l1,seed=9: missing" in markdown
    assert (out / "table.csv").read_text().startswith("reg,n,test/acc mean,test/acc std,test/acc p")


def test_latex_table_is_well_formed(ablation):
    latex = to_latex(summarize(load_runs([ablation]), by="reg", metrics=["test/acc", "gen_gap"]))
    assert latex.count(r"\begin{tabular}") == latex.count(r"\end{tabular}") == 1
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", latex).group(1)
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    header = latex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    for line in [header, *body]:
        assert line.endswith(r"\\") and line.count(" & ") == len(spec) - 1
    assert r"\textbf{" in latex and r"$^\dagger$" in latex
    assert "test/acc" in header and "gen\\_gap" in header  # escaped underscore
    assert latex.count("{") == latex.count("}")
    if shutil.which("pdflatex"):
        doc = "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + latex + "\n\\end{document}\n"
        (ablation / "t.tex").write_text(doc)
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=ablation, capture_output=True)
        assert done.returncode == 0


def test_numeric_rows_sort_and_baseline_by_value(tmp_path):
    root = tmp_path / "sweep"
    for i, (p, acc) in enumerate([(0.5, 0.80), (0.0, 0.90), (0.2, 0.93), (0.0, 0.91), (0.5, 0.81), (0.2, 0.94)]):
        write_run(root, f"p={p},seed={i}", "dropout", i, acc, study="dropout_rate",
                  config={"reg": {"dropout": {"p": p}}})
    table = summarize(load_runs([root]), by="reg.dropout.p", metrics=["test/acc"], baseline="0.0")
    assert table.rows == ["0.0", "0.2", "0.5"] and table.baseline == "0.0"
    assert table.cells[("0.0", "test/acc")].mean == pytest.approx(0.905)


def test_paper_report_has_a_section_per_study_and_figures(ablation, tmp_path):
    out = tmp_path / "paper"
    assert report_main([str(ablation), "--paper", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Comparison of techniques on image classification" in report
    assert "## L1 vs L2 across tasks" in report and "digits/cnn: l1" in report
    assert "## Sections without runs" in report and "Comparison on NLP" in report
    tex = (out / "report.tex").read_text()
    assert tex.startswith(r"\documentclass{article}") and tex.rstrip().endswith(r"\end{document}")
    assert r"\includegraphics" in tex
    if shutil.which("pdflatex"):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "report.tex"], cwd=out, capture_output=True)
        assert done.returncode == 0, done.stdout[-2000:]
    for name in ("weight_histograms", "curves_image"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert (out / "figures" / f"{name}.pdf").is_file()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "no such path" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 1
    write_run(tmp_path / "one", "a", "none", 0, 0.9)
    assert report_main([str(tmp_path / "one"), "--by", "reg.l9.strength"]) == 2
    assert "not a choice or config path" in capsys.readouterr().err


def test_report_logs_to_wandb_offline(ablation, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert report_main([str(ablation), "--wandb", "--out", str(ablation / "report")]) == 0
    assert list((ablation / "report" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert wandb.run is None
