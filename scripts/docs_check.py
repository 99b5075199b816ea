"""Re-measure the cheap numbers the README and docs/ quote, and say which still hold.

    python scripts/docs_check.py [--only demo tour errors prox] [--out DIR]

Each check reads the number as the doc states it, runs the command the doc gives beside it (offline, in a
temporary folder), and prints `confirmed` or `changed: doc X, measured Y`. The results also go to
DIR/docs_check.json (default: logs/docs_check/). Update the docs from its output, and run it before resolving
an issue that could change numbers. About 4 minutes on 2 CPU cores.

- demo:   docs/usage.md's demo table (`make demo`: 6 regularizers on digits, seed 0), every cell.
- tour:   the README's first run (`python train.py data=digits reg=elasticnet trainer.max_epochs=2`): its
          test/acc, val/acc and gen_gap.
- errors: the README's "a bad value ... fails in about a second", and docs/benchmarks.md's time-to-error rows for a bad
          value and an unknown choice (fresh processes, median of 3; changed if off by more than half).
- prox:   docs/configuration.md's proximal-L1 default (digits, 5 epochs, default AdamW and CNN, 3 seeds): exact
          zeros and test accuracy, and none's accuracy, mean ± std; changed if a mean moves by more than one std.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
TOUR_COMMAND = ["data=digits", "reg=elasticnet", "trainer.max_epochs=2"]
PROX_CLAIM = re.compile(r"3 seeds, ([\d.]+) ± ([\d.]+)% exact zeros at ([\d.]+) ± ([\d.]+)% test accuracy vs "
                        r"([\d.]+) ± ([\d.]+)% for `none`")
ERROR_ROWS = {"bad value": ("data=digits", "reg=l1", "reg.l1.strength=-1"), "unknown choice": ("reg=l3",)}


def run(args: list[str], cwd: Path = ROOT, script: str = "train.py") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **OFFLINE}, timeout=1800)


def markdown_rows(text: str, header_start: str) -> dict[str, list[str]]:
    """The table whose header line starts with ``header_start``: first cell -> the other cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def verdict(doc, measured, same: bool) -> dict:
    return {"doc": doc, "measured": measured, "status": "confirmed" if same else "changed"}


def check_demo(work: Path) -> dict:
    header = "| Regularizer | n | Test acc. (%)"
    doc = markdown_rows((ROOT / "docs" / "usage.md").read_text(), header)
    sweep = work / "demo"
    done = run(["-m", "experiment=demo", f"hydra.sweep.dir={sweep}"])
    if done.returncode != 0:
        return {"status": "failed", "error": done.stderr[-500:]}
    report = subprocess.run([str(Path(sys.executable).parent / "reglab-report"), str(sweep), "--metrics", "test/acc",
                             "val/acc", "gen_gap", "weights/zero_frac", "weights/small_frac", "weights/l2",
                             "--out", str(work / "demo_report")], capture_output=True, text=True)
    measured = markdown_rows(report.stdout, header)
    return verdict(doc, measured, doc == measured)


def check_tour(work: Path) -> dict:
    readme = (ROOT / "README.md").read_text()
    claim = re.search(r"\$ python train.py data=digits reg=elasticnet trainer.max_epochs=2\n(?:.*\n)*?done in [\d.]+ s: "
                      r"(test/acc=\S+ val/acc=\S+ gen_gap=\S+)", readme)
    done = run([*TOUR_COMMAND, f"hydra.run.dir={work / 'tour'}"])
    found = re.search(r"done in [\d.]+ s: (test/acc=\S+ val/acc=\S+ gen_gap=\S+)", done.stdout + done.stderr)
    doc, measured = claim[1] if claim else None, found[1] if found else None
    return verdict(doc, measured, doc is not None and doc == measured)


def check_errors(work: Path) -> dict:
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    out = {}
    for name, args in ERROR_ROWS.items():
        doc = re.search(rf"\| time to error, an? {name} \(`[^`]*`\) \| ([\d.]+) \|", bench)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            done = run([*args, f"hydra.run.dir={work / 'error'}"])
            times.append(time.perf_counter() - started)
            assert done.returncode == 2, done.stderr[-500:]
        measured = round(statistics.median(times), 2)
        documented = float(doc[1]) if doc else None
        out[name] = verdict(documented, measured, documented is not None and
                            abs(measured - documented) <= 0.5 * documented)
    within = out["bad value"]["measured"] <= 1.5
    out["README: a bad value fails in about a second"] = verdict("about 1 s (≤ 1.5)", out["bad value"]["measured"],
                                                                 within)
    return out


def check_prox(work: Path) -> dict:
    claim = PROX_CLAIM.search((ROOT / "docs" / "configuration.md").read_text())
    zeros, accs, base = [], [], []
    for reg, seed in [(reg, seed) for reg in ("prox_l1", "none") for seed in range(3)]:
        folder = work / f"{reg}_{seed}"
        done = run(["data=digits", f"reg={reg}", "trainer.max_epochs=5", f"seed={seed}", f"hydra.run.dir={folder}"])
        if done.returncode != 0:
            return {"status": "failed", "error": done.stderr[-500:]}
        metrics = json.loads((folder / "results.json").read_text())["metrics"]
        if reg == "none":
            base.append(100 * metrics["test/acc"])
        else:
            zeros.append(100 * metrics["weights/zero_frac"])
            accs.append(100 * metrics["test/acc"])
    measured = {"zeros": (round(statistics.mean(zeros), 1), round(statistics.stdev(zeros), 1)),
                "acc": (round(statistics.mean(accs), 2), round(statistics.stdev(accs), 2)),
                "none acc": (round(statistics.mean(base), 2), round(statistics.stdev(base), 2))}
    if claim is None:
        return verdict(None, measured, False)
    doc = {"zeros": (float(claim[1]), float(claim[2])), "acc": (float(claim[3]), float(claim[4])),
           "none acc": (float(claim[5]), float(claim[6]))}
    same = all(abs(measured[k][0] - doc[k][0]) <= max(measured[k][1], doc[k][1], 0.01) for k in doc)
    return verdict(doc, measured, same)


CHECKS = {"demo": check_demo, "tour": check_tour, "errors": check_errors, "prox": check_prox}


def flatten(name: str, result: dict) -> list[tuple[str, dict]]:
    if "status" in result:
        return [(name, result)]
    return [(f"{name}: {key}", value) for key, value in result.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "docs_check")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="docs_check-") as work:
        for name in args.only:
            started = time.time()
            results[name] = CHECKS[name](Path(work))
            print(f"[{name}] measured in {time.time() - started:.0f} s", file=sys.stderr)
    print(f"{'check':55s} status")
    changed = 0
    for name, result in results.items():
        for label, outcome in flatten(name, result):
            line = f"{label:55s} {outcome['status']}"
            if outcome["status"] != "confirmed":
                changed += 1
                line += f": doc {outcome.get('doc')!r}, measured {outcome.get('measured', outcome.get('error'))!r}"
            print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    from reglab.atomic import atomic_write

    text = json.dumps(results, indent=2, default=str)
    atomic_write(args.out / "docs_check.json", lambda handle: handle.write(text.encode()))
    print(f"wrote {args.out / 'docs_check.json'}; {changed} changed")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
