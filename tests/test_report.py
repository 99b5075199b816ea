"""The report: cells equal hand-computed statistics, failures are listed, LaTeX is well formed, sections."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess

import pytest

from reglab.report.cli import main as report_main
from reglab.report.collect import load_results, runs_frame
from reglab.report.tables import holm, summarize, to_latex, to_markdown

ACCURACIES = {"none": [0.90, 0.91, 0.89], "l1": [0.95, 0.96, 0.955], "l2": [0.90, 0.92, 0.88]}


def load_runs(paths):
    """What reglab-report reads: one row per run folder's results.json."""
    return runs_frame(load_results(paths))


def write_run(root, name, reg, seed, acc, status="completed", study="ablation_digits", extra=None, config=None,
              choices=None, metrics=None):
    folder = root / name
    folder.mkdir(parents=True)
    config = config or {"reg": {reg: {"strength": 1e-3}} if reg != "none" else {}, "trainer": {"max_epochs": 2}}
    record = {"status": status, "study": study, "seed": seed,
              "choices": {"data": "digits", "model": "cnn", "reg": reg, "optim": "adamw", **(choices or {})},
              "config": config, "metrics": {"test/acc": acc, "val/acc": acc - 0.01, "train/acc": 1.0,
                                            "gen_gap": 1.01 - acc, "weights/l2": 10 * acc, **(metrics or {})},
              "history": [{"epoch": 0, "train/acc": acc - 0.1, "val/acc": acc - 0.2},
                          {"epoch": 1, "train/acc": acc, "val/acc": acc - 0.01}],
              "weight_histogram": {"edges": [1e-8, 1e-4, 1.0, 10.0], "counts": [5, 3, 2], "zeros": 1,
                                   "underflow": 2, "overflow": 0, "total": 13}}
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


def labels(table) -> list[str]:
    return [row.label for row in table.rows]


def test_cells_equal_hand_computed_mean_and_std(ablation):
    table = summarize(load_runs([ablation]), by="reg", metrics=["test/acc", "gen_gap"])
    assert labels(table) == ["none", "l1", "l2"]  # baseline first
    for reg, values in ACCURACIES.items():
        cell = table.cells[(reg, "test/acc")]
        assert cell.n == 3 and table.n[reg] == 3  # the failed l2 run is not averaged in
        assert cell.mean == pytest.approx(statistics.mean(values))
        assert cell.std == pytest.approx(statistics.stdev(values))
        mean, std = 100 * statistics.mean(values), 100 * statistics.stdev(values)
        assert f"{mean:.2f} ± {std:.3f}" in to_markdown(table) or f"{mean:.2f} ± {std:.2f}" in to_markdown(table)


def test_best_is_bold_only_where_a_column_has_a_direction(ablation):
    table = summarize(load_runs([ablation]), by="reg", metrics=["test/acc", "gen_gap", "weights/l2"])
    assert table.cells[("l1", "test/acc")].best and table.cells[("l1", "gen_gap")].best  # higher acc, lower gap
    assert not table.cells[("none", "test/acc")].best
    assert not any(table.cells[(r, "weights/l2")].best for r in ACCURACIES)  # a norm describes, it is not better
    markdown = to_markdown(table)
    assert "| l1 | 3 | **95.50 ± 0.50**†" in markdown
    assert "the paired t-test over matched seeds" in markdown and "Holm" in markdown
    declared = summarize(load_runs([ablation]), by="reg", metrics=["weights/l2"], goals={"weights/l2": "min"})
    assert declared.cells[("none", "weights/l2")].best  # a study may declare a goal


def test_differences_ci_and_holm_equal_an_independent_computation(ablation):
    from scipy.stats import t as student_t
    from scipy.stats import ttest_ind

    table = summarize(load_runs([ablation]), by="reg", metrics=["test/acc"], test="welch")
    raw = {reg: ttest_ind(ACCURACIES[reg], ACCURACIES["none"], equal_var=False) for reg in ("l1", "l2")}
    ordered = sorted(("l1", "l2"), key=lambda r: raw[r].pvalue)  # Holm by hand: m=2 comparisons in the column
    expected = {ordered[0]: min(1, 2 * raw[ordered[0]].pvalue)}
    expected[ordered[1]] = max(expected[ordered[0]], min(1, 1 * raw[ordered[1]].pvalue))
    for reg in ("l1", "l2"):
        comparison = table.cells[(reg, "test/acc")].comparison
        a, b = ACCURACIES[reg], ACCURACIES["none"]
        va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
        df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)  # Welch-Satterthwaite
        half = student_t.ppf(0.975, df) * (va + vb) ** 0.5
        diff = statistics.mean(a) - statistics.mean(b)
        assert comparison.diff == pytest.approx(diff)
        assert (comparison.low, comparison.high) == pytest.approx((diff - half, diff + half))
        assert (comparison.low, comparison.high) == pytest.approx(tuple(raw[reg].confidence_interval(0.95)))
        assert comparison.p == pytest.approx(raw[reg].pvalue)
        assert comparison.p_holm == pytest.approx(expected[reg])
    assert table.cells[("l1", "test/acc")].significant and not table.cells[("l2", "test/acc")].significant
    markdown = to_markdown(table)
    l1 = table.cells[("l1", "test/acc")].comparison
    assert f"| l1 | Test acc. (%) | +{100 * l1.diff:.2f} | [{100 * l1.low:.2f}, {100 * l1.high:.2f}] |" in markdown


def test_holm_matches_a_worked_example():
    # Holm (1979): sorted p 0.01, 0.02, 0.03, 0.5 with m = 4 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert holm([0.03, 0.5, 0.01, 0.02, math.nan]) == pytest.approx([0.06, 0.5, 0.04, 0.06, math.nan], nan_ok=True)


def test_one_seed_shows_values_alone(tmp_path):
    root = tmp_path / "single"
    for reg, values in ACCURACIES.items():
        write_run(root, f"reg={reg}", reg, 0, values[0])
    table = summarize(load_runs([root]), by="reg", metrics=["test/acc"])
    markdown, latex = to_markdown(table), to_latex(table)
    assert "| l1 | 1 | **95.00** |" in markdown
    assert "±" not in markdown.split("\n\n")[0] and "†" not in markdown and "Holm" not in markdown
    assert "n = 1" in markdown and "no spread, no tests" in markdown
    assert r"$\pm$" not in latex and r"\dagger" not in latex


def test_mixed_models_and_epochs_are_split_never_pooled(tmp_path):
    root = tmp_path / "mixed"
    small = {"model": "cnn_small"}
    for seed, (acc, model, epochs) in enumerate([(0.90, "cnn", 2), (0.70, "cnn_small", 2), (0.50, "cnn", 12)]):
        config = {"reg": {}, "model": {"widths": [8] if model == "cnn_small" else [32]},
                  "trainer": {"max_epochs": epochs}}
        write_run(root, f"none{seed}", "none", 0, acc, config=config, choices={"model": model})
    write_run(root, "l1", "l1", 0, 0.95, config={"reg": {"l1": {"strength": 1e-3}}, "model": {"widths": [32]},
                                                "trainer": {"max_epochs": 2}}, choices=small | {"model": "cnn"})
    table = summarize(load_runs([root]), by="reg", metrics=["test/acc"])
    assert table.split_keys == ["model.widths", "trainer.max_epochs"]
    assert labels(table) == ["none (model=cnn, trainer.max_epochs=2)", "l1 (model=cnn, trainer.max_epochs=2)",
                             "none (model=cnn_small, trainer.max_epochs=2)", "none (model=cnn, trainer.max_epochs=12)"]
    assert all(row.n == 1 for row in table.rows)  # three seed-0 runs stay three rows
    assert [table.cells[(label, "test/acc")].mean for label in labels(table)] == [0.90, 0.95, 0.70, 0.50]
    l1 = table.rows[1]
    assert l1.baseline == "none (model=cnn, trainer.max_epochs=2)"  # its own context's baseline
    assert table.split_by == ["model", "trainer.max_epochs"]  # a group whose choice differs, by its name
    assert "rows are split by what differs besides reg: model, trainer.max_epochs" in to_markdown(table)
    out = tmp_path / "report"
    assert report_main([str(root), "--out", str(out)]) == 0
    assert "none (model=cnn_small, trainer.max_epochs=2)" in (out / "table.md").read_text()


def test_a_lambda_sweep_by_reg_keeps_each_lambda_apart(tmp_path):
    root = tmp_path / "sweep"
    for strength, acc in ((1e-4, 0.9), (1e-2, 0.6)):
        for seed in (0, 1):
            write_run(root, f"l1={strength},seed={seed}", "l1", seed, acc + seed / 100,
                      config={"reg": {"l1": {"strength": strength}}})
    table = summarize(load_runs([root]), by="reg", metrics=["test/acc"])
    assert labels(table) == ["l1 (reg.l1.strength=0.0001)", "l1 (reg.l1.strength=0.01)"]
    assert [row.n for row in table.rows] == [2, 2]


def test_same_condition_and_seed_counts_once(tmp_path):
    root = tmp_path / "dup"
    write_run(root, "a", "none", 0, 0.90, extra={"started_at": 1.0})
    write_run(root, "b", "none", 0, 0.80, extra={"started_at": 2.0})  # a re-run of the same job: the later counts
    write_run(root, "c", "none", 1, 0.70, extra={"started_at": 3.0})
    table = summarize(load_runs([root]), by="reg", metrics=["test/acc"])
    assert table.n["none"] == 2 and table.cells[("none", "test/acc")].mean == pytest.approx(0.75)
    assert any("a repeats" in note and "b (same condition, seed 0): counted once" in note for note in table.notes)
    assert "counted once" in to_markdown(table)


def test_regime_notes_say_when_the_baseline_cannot_overfit(tmp_path):
    root = tmp_path / "regime"
    setting = {"extra": {"split_sizes": {"train": 4000, "val": 500}},
               "config": {"data": {"augment": False}, "trainer": {"max_epochs": 30}}}
    for seed in range(3):
        write_run(root, f"none{seed}", "none", seed, 0.95 + seed / 1000, metrics={"train/acc": 0.955, "gen_gap": 0.004},
                  **setting)
        write_run(root, f"drop{seed}", "dropout", seed, 0.90, metrics={"train/acc": 0.85 + seed / 1000}, **setting)
    table = summarize(load_runs([root]), by="reg", metrics=["test/acc"])
    markdown = to_markdown(table)
    assert ("Regime: digits, 4,000 train examples, no augmentation, model cnn, 30 epochs. The baseline (reg=none) "
            "reaches train acc. 95.50% with a gen. gap of 0.40 pt (mean of n=3)") in markdown
    assert "It does not overfit (gap < 1 pt): this setting cannot show a regularization benefit" in markdown
    assert "| dropout ‡ | 3 |" in markdown and "‡: underfits" in markdown
    assert table.rows[1].underfits and not table.rows[0].underfits
    lenient = summarize(load_runs([root]), by="reg", metrics=["test/acc"], overfit_threshold=0.001,
                        underfit_threshold=0.2)
    assert "does not overfit" not in to_markdown(lenient) and not lenient.rows[1].underfits


def test_headers_are_readable_and_latex_labels_unique(ablation, tmp_path):
    metrics = ["test/acc", "gen_gap", "weights/l2"]
    table = summarize(load_runs([ablation]), by="reg", metrics=metrics)
    assert to_markdown(table).splitlines()[0] == "| Regularizer | n | Test acc. (%) | Gen. gap (pt) | ‖w‖₂ |"
    piped = tmp_path / "piped"
    write_run(piped, "x", "none", 0, 0.5, metrics={"weights/small_frac": 0.25})
    with_pipes = to_markdown(summarize(load_runs([piped]), by="reg", metrics=["test/acc", "weights/small_frac"]))
    assert r"\|w\| < ε (%)" in with_pipes.splitlines()[0]
    columns = {len(re.split(r"(?<!\\)\|", line)) for line in with_pipes.splitlines()[:3]}
    assert len(columns) == 1  # the | of |w| does not add a column
    root = tmp_path / "other"
    write_run(root, "x", "none", 0, 0.5)
    other = summarize(load_runs([root]), by="reg", metrics=metrics)
    label = re.compile(r"\\label\{([^}]*)\}")
    first, second = label.findall(to_latex(table)), label.findall(to_latex(other))
    assert len(first) == 2 and len(set(first) | set(second)) == len(first) + len(second)
    assert r"Gen.\ gap (pt)" in to_latex(table) and r"$\lVert w\rVert_2$" in to_latex(table)


def test_series_styles_never_repeat_colour_and_line_style():
    from reglab.report.figures import series_style

    pairs = [(series_style(i)["color"], series_style(i)["linestyle"]) for i in range(32)]
    assert len(set(pairs)) == 32


def test_weight_histogram_keeps_the_tails_apart():
    import torch

    from reglab.module import weight_magnitude_histogram

    histogram = weight_magnitude_histogram([torch.tensor([0.0, -1e-10, 5e-9, 1e-5, 0.3, -20.0])])
    assert (histogram["zeros"], histogram["underflow"], histogram["overflow"]) == (1, 2, 1)
    assert sum(histogram["counts"]) == 2 and histogram["total"] == 6
    assert sum(histogram["counts"]) + histogram["zeros"] + histogram["underflow"] + histogram["overflow"] == 6


def test_failed_and_missing_runs_are_listed(ablation):
    out = ablation / "report"
    assert report_main([str(ablation), "--out", str(out)]) == 0
    markdown = (out / "table.md").read_text()
    assert "Not completed" in markdown
    assert "reg=l2,seed=3: failed (RuntimeError: boom)" in markdown
    assert "reg=l1,seed=9: missing" in markdown
    csv = (out / "table.csv").read_text()
    assert csv.startswith("reg,n,value,condition_id,seeds,baseline,underfits,test/acc mean,test/acc std,test/acc n,"
                          "test/acc diff,test/acc ci_low,test/acc ci_high,test/acc p,test/acc p_holm")


def test_latex_table_is_well_formed(ablation):
    full = to_latex(summarize(load_runs([ablation]), by="reg", metrics=["test/acc", "gen_gap"]))
    assert full.count(r"\begin{tabular}") == full.count(r"\end{tabular}") == 2  # results, then differences
    for latex in full.split(r"\end{table}")[:2]:
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert latex.count(rule) == 1
        spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", latex).group(1)
        body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
        header = latex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
        for line in [header, *body]:
            assert line.endswith(r"\\") and line.count(" & ") == len(spec) - 1
    latex = full.split(r"\end{table}")[0]
    assert r"\textbf{" in latex and r"$^\dagger$" in latex
    assert r"Test acc.\ (\%)" in latex and r"Gen.\ gap (pt)" in latex
    assert full.count("{") == full.count("}")
    if shutil.which("pdflatex"):
        doc = "\\documentclass{article}\\usepackage{booktabs,graphicx,amsmath}\\begin{document}\n" + full + "\n\\end{document}\n"
        (ablation / "t.tex").write_text(doc)
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=ablation, capture_output=True)
        assert done.returncode == 0


def test_numeric_rows_sort_and_baseline_by_value(tmp_path):
    root = tmp_path / "sweep"
    for i, (p, acc) in enumerate([(0.5, 0.80), (0.0, 0.90), (0.2, 0.93), (0.0, 0.91), (0.5, 0.81), (0.2, 0.94)]):
        write_run(root, f"p={p},seed={i}", "dropout", i, acc, study="dropout_rate",
                  config={"reg": {"dropout": {"p": p}}})
    table = summarize(load_runs([root]), by="reg.dropout.p", metrics=["test/acc"], baseline="0.0")
    assert labels(table) == ["0.0", "0.2", "0.5"] and table.baseline == "0.0"
    assert table.cells[("0.0", "test/acc")].mean == pytest.approx(0.905)


def test_paper_report_has_a_section_per_study_and_figures(ablation, tmp_path):
    out = tmp_path / "paper"
    assert report_main([str(ablation), "--paper", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Comparison of techniques on image classification: digits" in report  # declared in its yaml
    assert "## L1 vs L2 across tasks" in report and "| l1 | 3 |" in report
    assert "## Sections without runs" in report and "Comparison on NLP" in report
    tex = (out / "report.tex").read_text()
    assert tex.startswith(r"\documentclass{article}") and tex.rstrip().endswith(r"\end{document}")
    assert r"\includegraphics" in tex
    if shutil.which("pdflatex"):
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "report.tex"], cwd=out, capture_output=True)
        assert done.returncode == 0, done.stdout[-2000:]
    for name in ("weight_histograms", "curves"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        assert (out / "figures" / f"{name}.pdf").is_file()
    # The section's curves are the plain report's curves.png (same runs): one file, not a byte-identical twin.
    section = report.split("## Comparison of techniques on image classification: digits")[1].split("\n## ")[0]
    assert "](figures/curves.png)" in section and "](figures/weight_histograms.png)" in section
    pngs = [p.read_bytes() for p in (out / "figures").glob("*.png")]
    assert len(pngs) == len(set(pngs)) and not (out / "figures" / "curves_ablation_digits.png").exists()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path / "nope")]) == 2
    assert "no such path" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 1
    write_run(tmp_path / "one", "a", "none", 0, 0.9)
    assert report_main([str(tmp_path / "one"), "--by", "reg.l9.strength"]) == 2
    assert "not a choice or config path" in capsys.readouterr().err
    assert report_main([str(tmp_path / "one"), "--metrics", "test/acc", "test/acc_typo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--metrics test/acc_typo: not a final metric" in err and "'test/acc'" in err


def test_report_logs_to_wandb_offline(ablation, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert report_main([str(ablation), "--wandb", "--out", str(ablation / "report")]) == 0
    assert list((ablation / "report" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert wandb.run is None


def test_data_size_section_splits_by_size_and_draws_learning_curves(tmp_path):
    root = tmp_path / "data_size"
    for size, n_train in ((64, 64), (256, 256), (1.0, 1077)):
        for reg, acc in (("none", 0.80 + n_train / 10000), ("l2", 0.85 + n_train / 20000)):
            for seed in range(2):
                config = {"reg": {reg: {"strength": 1e-3}} if reg != "none" else {}, "data": {"train_size": size}}
                write_run(root, f"reg={reg},size={size},seed={seed}", reg, seed, acc + seed / 1000, study="data_size",
                          config=config, extra={"split_sizes": {"train": n_train, "val": 360, "test": 360}})
    out = tmp_path / "paper"
    assert report_main([str(root), "--paper", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Regularization against training-set size" in report
    assert "| l2 (data.train_size=64) | 2 |" in report and "| none (data.train_size=1.0) | 2 |" in report
    assert (out / "figures" / "learning_curves.png").stat().st_size > 1000


def test_cpu_cifar_ablation_gets_its_own_section_with_its_regime(tmp_path):
    root = tmp_path / "small"
    for reg, acc in (("none", 0.62), ("dropout", 0.66)):
        for seed in range(2):
            write_run(root, f"reg={reg},seed={seed}", reg, seed, acc + seed / 100, study="ablation_cifar10_small",
                      choices={"data": "cifar10"}, extra={"split_sizes": {"train": 4000, "val": 2000, "test": 2000}},
                      config={"data": {"augment": False}, "trainer": {"max_epochs": 30}})
    out = tmp_path / "paper"
    assert report_main([str(root), "--paper", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    section = report.split("## Comparison of techniques on CIFAR-10 where the baseline overfits (2 CPU cores)")[1]
    section = section.split("\n## ")[0]
    assert "| dropout | 2 |" in section
    assert "Regime: cifar10, 4,000 train examples, no augmentation, model cnn, 30 epochs. The baseline" in section
    assert "](figures/curves.png)" in section and (out / "figures" / "curves.png").stat().st_size > 1000


def test_corrupt_results_are_named_and_skipped(tmp_path, capsys):
    broken = tmp_path / "sweep" / "reg=l1,seed=0"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text('{"status": "compl')  # cut short
    assert report_main([str(tmp_path / "sweep")]) == 1
    err = capsys.readouterr().err
    assert f"warning: skipping {broken}/results.json: not valid JSON" in err
    assert "error: no readable results.json under" in err and "not a choice" not in err
    write_run(tmp_path / "sweep", "reg=none,seed=0", "none", 0, 0.9)  # one good run beside it: the report goes on
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "| none | 1 |" in captured.out and f"skipping {broken}/results.json" in captured.err


# --- figures that show spread, every row, and their own sample sizes ----------------------------------------------

def captured_figures(monkeypatch):
    """Figures as drawn (reglab.report.figures.save is where each one ends)."""
    from reglab.report import figures

    drawn = []
    original = figures.save

    def keep(figure, out_dir, name):
        drawn.append((name, figure))
        return original(figure, out_dir, name)

    monkeypatch.setattr(figures, "save", keep)
    return drawn


def test_curves_have_spread_bands_and_histograms_draw_every_row(tmp_path, monkeypatch):
    from matplotlib.collections import PolyCollection

    from reglab.report import figures

    regs = {"none": 0.90, "l1": 0.93, "l2": 0.91, "prox_l1": 0.88, "elasticnet": 0.92}
    for reg, acc in regs.items():
        for seed in range(3):
            write_run(tmp_path, f"reg={reg},seed={seed}", reg, seed, acc + seed / 100)
    records = load_results([tmp_path])
    table = summarize(runs_frame(records), by="reg", metrics=["test/acc"])
    drawn = captured_figures(monkeypatch)
    figures.training_curves(table, records, tmp_path / "figs")
    figures.weight_histograms(table, records, tmp_path / "figs")
    curves, histograms = dict(drawn)["curves"], dict(drawn)["weight_histograms"]
    for axis in curves.axes[:2]:  # train and validation panels: one ± std band per row (3 seeds each)
        assert sum(isinstance(c, PolyCollection) for c in axis.collections) == len(regs)
    assert "± std" in curves.axes[0].get_ylabel()
    legend = [t.get_text() for t in histograms.axes[0].get_legend().get_texts()]
    assert sorted(text.split(" (")[0] for text in legend) == sorted(regs)  # prox_l1, elasticnet too, not only none/l1/l2


def test_reliability_diagrams_show_bin_counts_and_fade_sparse_bins(tmp_path, monkeypatch):
    from reglab.report import figures

    bins = {"confidence": [0.0] * 13 + [0.9 * 2, 0.95 * 300], "accuracy": [0.0] * 13 + [1.0, 280.0],
            "count": [0] * 13 + [2, 300]}
    calibration = {"reliability": {kind: {k: [v / max(c, 1) if k != "count" else c for v, c in zip(bins[k], bins["count"])]
                                          for k in bins} for kind in ("std", "ts", "mc")}}
    for reg in ("none", "dropout"):
        write_run(tmp_path, f"reg={reg}", reg, 0, 0.9, metrics={"mc/ece": 0.01}, extra={"calibration": calibration})
    records = load_results([tmp_path])
    table = summarize(runs_frame(records), by="reg", metrics=["test/acc"])
    drawn = captured_figures(monkeypatch)
    figures.reliability_diagrams(table, records, tmp_path / "figs")
    figure = dict(drawn)["reliability"]
    axis = figure.axes[0]
    assert {"2", "300"} <= {t.get_text() for t in axis.texts}  # each bin says how many examples it holds
    alphas = [tuple(c)[3] for c in axis.collections[0].get_facecolors()]
    assert alphas[0] < 0.2 and alphas[1] == 1.0  # the 2-example bin is faded, the 300-example bin is not


def test_regime_names_the_augmentations_that_really_ran():
    from reglab.report.tables import regime_setting

    base = {"data": "digits", "data.augment": True, "model": "cnn_small", "trainer.max_epochs": 30}
    assert "no augmentation" in regime_setting({**base, "data.crop_padding": 0, "data.hflip": False})
    assert "no augmentation" in regime_setting({**base, "data.augment": False, "data.crop_padding": 4})
    assert "augmented (random crop, padding 4, horizontal flip)" in regime_setting(
        {**base, "data.crop_padding": 4, "data.hflip": True})
    assert "augmented (horizontal flip)" in regime_setting({**base, "data.crop_padding": 0, "data.hflip": True})


# --- a new study is one yaml -----------------------------------------------------------------------------------------

NEW_STUDY = """# @package _global_
defaults:
  - override /data: digits
  - override /model: cnn_small
study: my_new_study
trainer: {max_epochs: 1}
data: {train_size: 200}
report:
  title: My new study, declared in its yaml alone
  command: python train.py -m experiment=my_new_study
  metrics: [test/acc, gen_gap]
  figures: [curves, weight_histograms]
  order: 5
"""


def test_a_study_added_as_one_yaml_appears_in_the_paper_report(tmp_path):
    from conftest import run_cli

    conf = tmp_path / "my_conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "my_new_study.yaml").write_text(NEW_STUDY)
    sweep = tmp_path / "sweep"
    done = run_cli("-m", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "experiment=my_new_study",
                   "reg=none,dropout", f"hydra.sweep.dir={sweep}", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "paper"
    assert report_main([str(sweep), "--paper", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    section = report.split("## My new study, declared in its yaml alone")[1].split("\n## ")[0]
    assert "Made by `python train.py -m experiment=my_new_study`." in section
    assert "| dropout | 1 |" in section and "](figures/weight_histograms" in section
    assert report.index("## My new study") < report.index("## Sections without runs")  # order: 5, first


@pytest.mark.parametrize("line,change,message", [
    ("  order: 5", "  bogus: 1", "report.bogus is not a report key; allowed: title, command, rows"),
    ("  figures: [curves, weight_histograms]", "  figures: [histogram]",
     "report.figures.histogram is not a figure; allowed: curves, weight_histograms"),
    ("  figures: [curves, weight_histograms]", "  figures: {curves: {colour: red}}",
     "report.figures.curves.colour is not an option of curves; allowed: name"),
    ("  order: 5", "  goals: {test/acc: up}", "each goal must be max, min or zero"),
    ("  title: My new study, declared in its yaml alone", "  rows: reg", "report.title is required"),
    ("  order: 5", "  order: soon", "report.order='soon' must be a number"),
])
def test_a_bad_report_declaration_is_named_in_one_line(line, change, message):
    import yaml

    from reglab.errors import ConfigError
    from reglab.report.declared import check_declaration

    assert line in NEW_STUDY
    declared = yaml.safe_load(NEW_STUDY.replace(line, change))["report"]
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_declaration("my_new_study", declared, "study my_new_study")


def test_a_bad_report_declaration_stops_the_run_before_training(tmp_path):
    from conftest import run_cli

    conf = tmp_path / "my_conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "my_new_study.yaml").write_text(NEW_STUDY.replace("  figures: [curves, weight_histograms]",
                                                              "  figures: [histogram]"))
    done = run_cli(f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "experiment=my_new_study",
                   f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "error: study my_new_study: report.figures.histogram is not a figure" in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_mcnemar_compares_two_runs_on_their_test_examples(tmp_path, capsys):
    import numpy as np

    from reglab import predictions

    labels = np.arange(100) % 10
    for name, wrong in (("a", 10), ("b", 40)):
        pred = labels.copy()
        pred[:wrong] = (pred[:wrong] + 1) % 10
        predictions.save(tmp_path / name, {"label": labels, "pred": pred, "confidence": np.ones(100)})
    assert report_main(["--mcnemar", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "right only in the first: 30; only in the second: 0" in out and "McNemar (chi-square" in out
    (tmp_path / "c").mkdir()
    np.savez(tmp_path / "c" / "test_predictions.npz", label=np.array([object()], dtype=object),
             pred=np.zeros(1), confidence=np.zeros(1))  # a pickled object: never loaded
    assert report_main(["--mcnemar", str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a predictions archive" in err


# --- what an adversary tried (each once crashed, misled or overwrote) ------------------------------------------------

def test_a_damaged_predictions_file_is_named_not_fatal(tmp_path):
    import numpy as np

    from reglab import predictions

    for reg in ("none", "dropout"):
        for seed in range(2):
            write_run(tmp_path, f"reg={reg},seed={seed}", reg, seed, 0.9 + seed / 100)
            labels = np.arange(50) % 10
            predictions.save(tmp_path / f"reg={reg},seed={seed}", {"label": labels, "pred": labels,
                                                                    "confidence": np.ones(50)})
    archive = tmp_path / "reg=dropout,seed=1" / "test_predictions.npz"
    archive.write_bytes(archive.read_bytes()[:100])  # cut short, as by a copy that stopped
    table = summarize(load_runs([tmp_path]), by="reg", metrics=["test/acc"])
    assert "none" in table.test_set and "dropout" not in table.test_set
    assert any("dropout" in note and "not a predictions archive" in note for note in table.notes)
    assert report_main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0


def test_a_difference_that_is_the_same_on_every_seed_up_to_float32_is_not_testable(tmp_path):
    import numpy as np

    for seed in range(3):  # every seed gains exactly 1 of 360 test images, stored as float32
        base = float(np.float32((300 + seed) / 360))
        write_run(tmp_path, f"reg=none,seed={seed}", "none", seed, base)
        write_run(tmp_path, f"reg=l2,seed={seed}", "l2", seed, float(np.float32((301 + seed) / 360)))
    table = summarize(load_runs([tmp_path]), by="reg", metrics=["test/acc"])
    comparison = table.cells[("l2", "test/acc")].comparison
    # the paired test has no spread to go on, so the rows' own spread decides (Welch), and it says so
    assert comparison.test == "welch" and comparison.p > 0.05 and not table.cells[("l2", "test/acc")].significant
    assert "Welch's t-test" in to_markdown(table)
    from reglab.report.stats import paired

    base = {s: float(np.float32((300 + s) / 360)) for s in range(3)}
    assert math.isnan(paired({s: float(np.float32((301 + s) / 360)) for s in range(3)}, base).p)


def test_paper_figures_never_overwrite_each_other_and_titles_are_escaped(ablation, tmp_path):
    for seed in range(3):  # a fourth row: the plain histogram (every row) and L1-vs-L2's (three) now differ
        write_run(ablation, f"reg=dropout,seed={seed}", "dropout", seed, 0.92)
    out = tmp_path / "paper"
    assert report_main([str(ablation), "--paper", "--out", str(out)]) == 0
    figures = out / "figures"
    # the plain report's histogram (every row) and the L1-vs-L2 section's (none, l1, l2) are two files
    assert (figures / "weight_histograms.png").is_file() and (figures / "weight_histograms_l1_vs_l2.png").is_file()
    tex = (out / "report.tex").read_text()
    assert r"\usepackage{amsmath}" in tex and r"\subsection*{Comparison of techniques" in tex
    from reglab.report.paper import latex_escape

    assert latex_escape("100% & λ_x #1") == r"100\% \& $\lambda$\_x \#1"


def test_a_numeric_baseline_matches_a_numeric_row_value(tmp_path):
    for p, acc in ((0.0, 0.90), (0.2, 0.93)):
        for seed in range(2):
            write_run(tmp_path, f"p={p},seed={seed}", "dropout", seed, acc + seed / 100,
                      config={"reg": {"dropout": {"p": p}}})
    for baseline in ("0", "0.0", 0):
        table = summarize(load_runs([tmp_path]), by="reg.dropout.p", metrics=["test/acc"], baseline=baseline)
        assert table.cells[("0.2", "test/acc")].comparison is not None


def test_report_inputs_are_checked_in_one_line(ablation, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert report_main([str(ablation), "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert report_main([str(ablation), "--overfit-threshold", "nan"]) == 2
    assert "--overfit-threshold nan: must be a number of points >= 0" in capsys.readouterr().err
    from reglab.errors import ConfigError
    from reglab.report.declared import check_declaration

    for figures, message in (([{"reliability": {}}], "a list holds figure names only"),
                             ({"tradeoff": {"y": 3}}, "report.figures.tradeoff.y=3 must be text"),
                             ({"curves": {"name": "../../escape"}}, "must be a plain file name"),
                             ({"metric_vs_parameter": {"log_x": "false"}}, "must be true or false")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_declaration("s", {"title": "t", "figures": figures}, "study s")
