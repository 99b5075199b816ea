"""reglab's linear model (full-batch L-BFGS, reg=l2) against scikit-learn's LogisticRegression on the same features:
both choose their L2 strength on validation accuracy over one grid, and report test accuracy there.

    python scripts/linear_vs_sklearn.py --data sst2_bow --path DIR            # SST-2 bag of words (GLUE folder)
    python scripts/linear_vs_sklearn.py --data text_bow --path DIR            # any text data set, any layout
    python scripts/linear_vs_sklearn.py ... --out linear_vs_sklearn.json [--lam 1e-6 1e-5 ...] [-- data.key=value]

The reglab side is a real sweep, ``python train.py -m data=<data> reg=l2 reg.l2.strength=<grid>`` with the data
config's defaults (model=linear, optim=lbfgs, batch full), read back from its results.json files. The sklearn side
fits the same features (the datamodule's own matrices) with ``LogisticRegression(C)``; sklearn minimises
``½‖w‖² + C·Σ loss``, reglab ``λ·‖W‖² + mean loss`` over one weight row per class. With k > 2 classes both are
that softmax, so ``C = 1 / (2 λ n_train)``. With two classes sklearn fits one vector w = W₁ - W₂, and at reglab's
optimum W₁ = -W₂ = w/2, so ``λ‖W‖² = λ‖w‖²/2`` and ``C = 1 / (λ n_train)``. Prints a table, writes JSON."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = [1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from reglab import resolvers

    resolvers.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def reglab_sweep(data: str, path: str, grid: list[float], extra: list[str], folder: Path) -> dict[float, dict]:
    """λ -> the run's metrics, from a real multirun."""
    command = [sys.executable, str(ROOT / "train.py"), "-m", f"data={data}", f"data.path={path}", "reg=l2",
               f"reg.l2.strength={','.join(map(str, grid))}", "logger=csv", "callbacks=none",
               f"hydra.sweep.dir={folder}", *extra]
    env = os.environ | {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    found = {}
    for results in folder.rglob("results.json"):
        record = json.loads(results.read_text())
        if record["status"] == "completed":
            found[float(record["config"]["reg"]["l2"]["strength"])] = record["metrics"] | {
                "seconds": record.get("wall_time_s")}
    return found


def inverse_strength(lam: float, n_train: int, n_classes: int) -> float:
    """sklearn's C for reglab's λ on the same problem (see the module docstring)."""
    return 1.0 / ((1 if n_classes == 2 else 2) * lam * n_train)


def sklearn_fits(data: str, path: str, grid: list[float], extra: list[str]) -> tuple[dict[float, dict], int, int]:
    import numpy as np
    from hydra.utils import instantiate
    from sklearn.linear_model import LogisticRegression

    cfg = compose([f"data={data}", f"data.path={path}", *extra])
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup()
    split = {name: datamodule.splits[name] for name in ("train", "validation", "test")}
    n_train, n_classes = len(split["train"]), len(datamodule.class_names)
    found = {}
    for lam in grid:
        started = time.perf_counter()
        model = LogisticRegression(C=inverse_strength(lam, n_train, n_classes), max_iter=10_000, tol=1e-6)
        model.fit(split["train"].matrix, split["train"].labels.numpy())
        scored = {"train_eval": datamodule.train_eval, **split}  # train/acc: the run's fixed train subset, as reglab's
        accuracy = {name: float(np.mean(model.predict(s.matrix) == s.labels.numpy())) for name, s in scored.items()}
        found[lam] = {"train/acc": accuracy["train_eval"], "val/acc": accuracy["validation"], "test/acc": accuracy["test"],
                      "seconds": time.perf_counter() - started}
    return found, n_train, n_classes


def chosen(results: dict[float, dict]) -> float:
    """The λ with the best validation accuracy (ties: the larger λ, the simpler model)."""
    return max(results, key=lambda lam: (results[lam]["val/acc"], lam))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sst2_bow", help="a features data config: sst2_bow, text_bow")
    parser.add_argument("--path", required=True, help="data.path")
    parser.add_argument("--lam", type=float, nargs="+", default=GRID, help="reg.l2.strength grid")
    parser.add_argument("--out", type=Path, default=Path("linear_vs_sklearn.json"))
    parser.add_argument("extra", nargs="*", help="more overrides for both sides, e.g. data.ngram_max=2")
    args = parser.parse_args()
    path = str(Path(args.path).resolve())

    ours_seconds = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reglab-linear-") as folder:
        ours = reglab_sweep(args.data, path, args.lam, args.extra, Path(folder))
    ours_seconds = time.perf_counter() - ours_seconds
    theirs, n_train, n_classes = sklearn_fits(args.data, path, args.lam, args.extra)

    print(f"data={args.data} path={args.path} n_train={n_train} classes={n_classes}  (reglab: model=linear "
          "optim=lbfgs reg=l2)")
    print(f"{'lambda':>8} {'C':>10} | {'reglab val':>10} {'test':>6} {'train':>6} | {'sklearn val':>11} {'test':>6} "
          f"{'train':>6}")
    for lam in args.lam:
        a, b = ours.get(lam, {}), theirs[lam]
        print(f"{lam:8.0e} {inverse_strength(lam, n_train, n_classes):10.3g} | {a.get('val/acc', float('nan')) * 100:10.2f} "
              f"{a.get('test/acc', float('nan')) * 100:6.2f} {a.get('train/acc', float('nan')) * 100:6.2f} | "
              f"{b['val/acc'] * 100:11.2f} {b['test/acc'] * 100:6.2f} {b['train/acc'] * 100:6.2f}")
    ours_lam, their_lam = chosen(ours), chosen(theirs)
    gap = (ours[ours_lam]["test/acc"] - theirs[their_lam]["test/acc"]) * 100
    print(f"chosen on validation: reglab λ={ours_lam:g} test {ours[ours_lam]['test/acc'] * 100:.2f}%; sklearn "
          f"λ={their_lam:g} test {theirs[their_lam]['test/acc'] * 100:.2f}%; difference {gap:+.2f} pt "
          f"({'within' if abs(gap) <= 1 else 'NOT within'} 1 pt)")
    report = {"data": args.data, "path": args.path, "extra": args.extra, "n_train": n_train,
              "n_classes": n_classes, "grid": args.lam,
              "reglab": {str(k): v for k, v in ours.items()}, "sklearn": {str(k): v for k, v in theirs.items()},
              "chosen": {"reglab": ours_lam, "sklearn": their_lam}, "test_acc_difference_pt": gap,
              "within_1pt": abs(gap) <= 1, "reglab_sweep_seconds": ours_seconds}
    from reglab.atomic import atomic_write

    atomic_write(args.out, lambda handle: handle.write(json.dumps(report, indent=2).encode()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
