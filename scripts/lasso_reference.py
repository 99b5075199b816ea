"""The exact L1 / L2 logistic-regression path on reglab's SST-2 bag-of-words features, by scikit-learn's liblinear:
the reference the text_feature_selection study (stochastic proximal steps) is compared with.

    python scripts/lasso_reference.py --data DIR [--out lasso_reference.json]

Same features as data=sst2_bow (its config, its cached vectorizer, validation carved from train, GLUE dev as the
test). sklearn's C is the inverse strength on the summed loss: λ (reglab's, on the mean loss) = 1 / (C · n_train).
Prints a table and writes JSON."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a local GLUE SST-2 folder (train.tsv, dev.tsv)")
    parser.add_argument("--out", type=Path, default=Path("lasso_reference.json"))
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    parser.add_argument("--C", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0, 3.0, 10.0])
    args = parser.parse_args()

    from hydra.utils import instantiate
    from sklearn.linear_model import LogisticRegression

    from reglab.atomic import atomic_write
    from linear_vs_sklearn import compose

    cfg = compose(["data=sst2_bow", f"data.path={Path(args.data).resolve()}", f"paths.cache_dir={args.cache_dir}"])
    data = instantiate(cfg.data, _convert_="all")
    data.setup()
    train, val, test = (data.splits[s] for s in ("train", "validation", "test"))
    n_train, vocabulary = len(train), len(data.feature_names)
    rows = []
    columns = ("C", 7), ("λ (mean loss)", 14), ("words kept", 11), ("val acc", 8), ("dev acc", 8), ("s", 5)
    print(f"{'penalty':8s} " + " ".join(f"{name:>{width}s}" for name, width in columns))
    for penalty in ("l1", "l2"):
        for c in args.C:
            started = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = LogisticRegression(penalty=penalty, C=c, solver="liblinear", max_iter=1000)
                model.fit(train.matrix, train.labels.numpy())
            kept = int((model.coef_ != 0).any(axis=0).sum())
            row = {"penalty": penalty, "C": c, "lambda": 1.0 / (c * n_train), "words_kept": kept,
                   "vocabulary": vocabulary, "val_acc": float(model.score(val.matrix, val.labels.numpy())),
                   "dev_acc": float(model.score(test.matrix, test.labels.numpy())), "seconds": time.time() - started}
            rows.append(row)
            print(f"{penalty:8s} {c:7g} {row['lambda']:14.3g} {kept:11d} {100 * row['val_acc']:8.2f} "
                  f"{100 * row['dev_acc']:8.2f} {row['seconds']:5.1f}")
    atomic_write(args.out, lambda handle: handle.write(json.dumps({"rows": rows}, indent=2).encode()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
