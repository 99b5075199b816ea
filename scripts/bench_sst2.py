"""SST-2 benchmark: dev accuracy, time per epoch and training tokens/s of `experiment=sst2_baseline`.

    python scripts/bench_sst2.py --data ../shared/data/sst2 [hydra overrides...]

Runs train.py in a subprocess (offline, CSV logging only), then prints a table and writes
bench_sst2.json (default: into the run folder)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count_train_tokens(config: dict) -> int:
    """Non-pad tokens in one pass over the training split, with the run's own (cached) tokenizer."""
    from hydra.utils import instantiate

    datamodule = instantiate(config["data"])
    datamodule.setup()
    return int(datamodule.splits["train"].lengths.sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="local GLUE SST-2 folder (train.tsv, dev.tsv)")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "logs" / "bench" / time.strftime("sst2_%Y%m%d_%H%M%S"))
    parser.add_argument("--out", type=Path, help="bench JSON path (default: RUN_DIR/bench_sst2.json)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. reg=dropout")
    args = parser.parse_args(argv)

    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, str(ROOT / "train.py"), "experiment=sst2_baseline", f"data.path={args.data}",
               "logger=csv", f"hydra.run.dir={args.run_dir}", *args.overrides]
    started = time.time()
    done = subprocess.run(command, cwd=ROOT, env=env)
    wall = time.time() - started
    results = json.loads((args.run_dir / "results.json").read_text())
    if done.returncode != 0 or results["status"] != "completed":
        print(f"error: run failed: {results.get('error')}", file=sys.stderr)
        return 1
    tokens = count_train_tokens(results["config"])
    rows = []
    for row in results["history"]:
        train_time = row["epoch_time_s"] - row["val_time_s"]
        rows.append({"epoch": row["epoch"] + 1, "dev_acc": row["val/acc"], "train_acc": row["train/acc"],
                     "epoch_time_s": row["epoch_time_s"], "train_time_s": train_time,
                     "train_tokens_per_s": tokens / train_time})
    bench = {"command": " ".join(command[1:]), "dev_acc": results["metrics"]["val/acc"],
             "test_split": results["test_split"], "train_tokens_per_epoch": tokens,
             "mean_epoch_time_s": sum(r["epoch_time_s"] for r in rows) / len(rows),
             "mean_train_tokens_per_s": sum(r["train_tokens_per_s"] for r in rows) / len(rows),
             "wall_time_s": wall, "cpu_count": os.cpu_count(),
             "epochs": rows, "run_dir": str(args.run_dir)}
    print(f"{'epoch':>5} {'dev acc':>8} {'train acc':>9} {'epoch s':>8} {'train s':>8} {'tokens/s':>9}")
    for r in rows:
        print(f"{r['epoch']:>5} {r['dev_acc']:>8.4f} {r['train_acc']:>9.4f} {r['epoch_time_s']:>8.1f} "
              f"{r['train_time_s']:>8.1f} {r['train_tokens_per_s']:>9.0f}")
    out = args.out or args.run_dir / "bench_sst2.json"
    out.write_text(json.dumps(bench, indent=2))
    print(f"dev acc {bench['dev_acc']:.4f}; mean epoch {bench['mean_epoch_time_s']:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
