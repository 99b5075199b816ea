#!/usr/bin/env bash
# The GPU check of "Scaling out": a 1-GPU run (fp32 and bf16-mixed), a DDP run on every visible GPU, and a 2-job
# run of the one-job-per-GPU launcher, on CIFAR-10. Prints each run's device, processes, time and accuracy.
# A few minutes on one H100.
#   bash scripts/gpu_check.sh [CIFAR_DIR]      (any layout data.path takes; default data/cifar10-sample)
set -euo pipefail
cd "$(dirname "$0")/.."
CIFAR=${1:-${CIFAR:-data/cifar10-sample}}
OUT_DIR=${GPU_CHECK_DIR:-logs/gpu_check}
EPOCHS=${EPOCHS:-8}
PY=${PYTHON:-python}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
rm -rf "$OUT_DIR"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
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
