#!/usr/bin/env bash
# The GPU checks, one prepared command each, a few minutes on one H100:
#   bash scripts/gpu_check.sh [CIFAR_DIR]             "Scaling out": a 1-GPU run (fp32 and bf16-mixed), a DDP run
#                                                      on every visible GPU, a 2-job run of the GPU launcher
#   CHECK=perf bash scripts/gpu_check.sh [CIFAR_DIR]  performance: scripts/bench.py --device cuda, then
#                                                      experiment=cifar_fast over 3 seeds (docs/benchmarks.md)
# CIFAR_DIR: any layout data.path takes (default data/cifar10-sample). Prints a table per check.
set -euo pipefail
cd "$(dirname "$0")/.."
CIFAR=${1:-${CIFAR:-data/cifar10-sample}}
OUT_DIR=${GPU_CHECK_DIR:-logs/gpu_check}
EPOCHS=${EPOCHS:-8}
PY=${PYTHON:-python}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
rm -rf "$OUT_DIR"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
date -u +%Y-%m-%d

if [[ "${CHECK:-scaling}" == perf ]]; then
  mkdir -p "$OUT_DIR"
  "$PY" scripts/bench.py --device cuda --data "$CIFAR" --rounds "${ROUNDS:-3}" --out "$OUT_DIR/bench_cuda.json" \
      -- "data.batch_size=${BENCH_BATCH:-256}"
  t0=$SECONDS
  "$PY" train.py -m experiment=cifar_fast seed=0,1,2 "data.path=$CIFAR" logger=csv \
      "hydra.sweep.dir=$OUT_DIR/cifar_fast" > "$OUT_DIR/cifar_fast.log" 2>&1 \
      || { echo "FAILED: cifar_fast (see $OUT_DIR/cifar_fast.log)"; tail -20 "$OUT_DIR/cifar_fast.log"; exit 1; }
  echo "cifar_fast: 3 runs in $((SECONDS - t0)) s wall"
  "$PY" - "$OUT_DIR/cifar_fast" <<'PY'
import json, pathlib, statistics, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("results.json")):
    r = json.load(open(path))
    history = r.get("history", [])
    train_s = sum(h["epoch_time_s"] - h["val_time_s"] for h in history)  # training only, validation excluded
    fit_s = sum(h["epoch_time_s"] for h in history)
    rows.append((r["seed"], r["status"], r.get("metrics", {}).get("test/acc", float("nan")), train_s, fit_s,
                 r.get("timing", {}).get("to_first_step_s", float("nan")), r.get("test_split")))
print(f"{'seed':>4s} {'status':9s} {'test/acc':>8s} {'train s':>8s} {'train+val s':>11s} {'to 1st step s':>13s} split")
for seed, status, acc, train_s, fit_s, first, split in rows:
    print(f"{seed:4d} {status:9s} {acc:8.4f} {train_s:8.2f} {fit_s:11.2f} {first:13.2f} {split}")
accs = [row[2] for row in rows]
print(f"mean test/acc {statistics.mean(accs):.4f} +- {statistics.stdev(accs) if len(accs) > 1 else 0:.4f}; "
      f"mean training time {statistics.mean(row[3] for row in rows):.2f} s (target: >= 0.94 in <= 10 s)")
PY
  exit 0
fi
COMMON=(data=cifar10 "data.path=$CIFAR" data.val_size=1000 data.batch_size=256 model=cnn reg=l2_dropout
        "trainer.max_epochs=$EPOCHS" logger=csv callbacks=none)

step() { local name=$1; shift; local t0=$SECONDS; "$PY" train.py "$@" > "$OUT_DIR/$name.log" 2>&1 \
         || { echo "FAILED: $name (see $OUT_DIR/$name.log)"; tail -20 "$OUT_DIR/$name.log"; exit 1; }
         echo "$name: $((SECONDS - t0)) s wall (process start to exit)"; }
mkdir -p "$OUT_DIR"
step gpu_fp32 "${COMMON[@]}" trainer=gpu "hydra.run.dir=$OUT_DIR/gpu_fp32"
step gpu_bf16 "${COMMON[@]}" trainer=gpu trainer.precision=bf16-mixed "hydra.run.dir=$OUT_DIR/gpu_bf16"
step ddp_all "${COMMON[@]}" trainer=ddp "hydra.run.dir=$OUT_DIR/ddp_all"
step launcher_2jobs -m "${COMMON[@]}" trainer=gpu hydra/launcher=gpus seed=0,1 \
     "paths.gpu_lock_dir=$OUT_DIR/locks" "hydra.sweep.dir=$OUT_DIR/launcher"

"$PY" - "$OUT_DIR" <<'PY'
import json, sys, pathlib
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("results.json")):
    r = json.load(open(path))
    m, t = r.get("metrics", {}), r["config"]["trainer"]
    epochs = [h["epoch_time_s"] for h in r.get("history", [])]
    name = path.parent.name if path.parent.parent == pathlib.Path(sys.argv[1]) else \
        f"{path.parent.parent.name}/seed={r['seed']}"
    rows.append((name, r["status"], str(t.get("devices")),
                 t.get("precision"), (r.get("distributed") or {}).get("world_size", 1), r.get("device_slot", "-"),
                 r["wall_time_s"], sum(epochs[1:]) / max(1, len(epochs) - 1), m.get("test/acc", float("nan"))))
print(f"{'run':40s} {'status':9s} {'devices':8s} {'precision':10s} {'procs':5s} {'slot':4s} "
      f"{'train+test s':>12s} {'s/epoch':>8s} {'test/acc':>8s}")
for name, status, dev, prec, procs, slot, wall, epoch, acc in rows:
    print(f"{name:40s} {status:9s} {dev:8s} {prec:10s} {procs!s:5s} {slot!s:4s} {wall:12.1f} {epoch:8.2f} {acc:8.4f}")
PY
