#!/usr/bin/env bash
# The regularization targets on real CIFAR-10 (the 10k/2k sample, or any data.path layout): subgradient vs
# proximal L1 across λ against reg=none (exact zeros vs accuracy), and standard vs MC dropout inference for
# a dropout-trained CNN and for none, 3 seeds each. Writes both sweeps and a paper report under $OUT_DIR.
#   bash scripts/cifar_sample_study.sh [CIFAR_DIR] [overrides...]    (EPOCHS=15 TRAINER=gpu by default)
set -euo pipefail
cd "$(dirname "$0")/.."
CIFAR=${1:-${CIFAR:-data/cifar10-sample}}
shift || true
OUT_DIR=${STUDY_DIR:-logs/cifar_sample_study}
EPOCHS=${EPOCHS:-15}
TRAINER=${TRAINER:-gpu}
PY=${PYTHON:-python}
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
DATA=(data=cifar10 "data.path=$CIFAR" data.val_size=1000 model=cnn data.batch_size=128 "trainer=$TRAINER"
      "trainer.max_epochs=$EPOCHS" logger=csv "$@")
rm -rf "$OUT_DIR"; mkdir -p "$OUT_DIR"
t0=$SECONDS
"$PY" train.py -m experiment=l1_vs_prox_l1 "${DATA[@]}" l1_lambda=3e-4,1e-3,3e-3,1e-2,3e-2 \
    "hydra.sweep.dir=$OUT_DIR/l1_vs_prox_l1" > "$OUT_DIR/l1.log" 2>&1 || { tail -30 "$OUT_DIR/l1.log"; exit 1; }
"$PY" train.py -m experiment=l1_vs_prox_l1 "${DATA[@]}" reg=none l1_lambda=0 \
    "hydra.sweep.dir=$OUT_DIR/l1_vs_prox_l1" >> "$OUT_DIR/l1.log" 2>&1 || { tail -30 "$OUT_DIR/l1.log"; exit 1; }
echo "l1_vs_prox_l1: $((SECONDS - t0)) s"
t0=$SECONDS
"$PY" train.py -m experiment=mc_dropout "${DATA[@]}" optim=sgd optim.lr=0.05 \
    '++reg.dropout.rates={conv: 0.1, fc: 0.5}' "hydra.sweep.dir=$OUT_DIR/mc_dropout" \
    > "$OUT_DIR/mc.log" 2>&1 || { tail -30 "$OUT_DIR/mc.log"; exit 1; }
echo "mc_dropout: $((SECONDS - t0)) s"
reglab-report "$OUT_DIR" --paper --out "$OUT_DIR/report" > /dev/null
sed -n '/^## Subgradient L1/,/^Mean/p;/^## Dropout at inference/,/^Mean/p' "$OUT_DIR/report/report.md"
