"""Whether a run fitted its training data. A regularizer can only show a benefit on a baseline that fits (and then
overfits) its training data; on one that underfits, every regularization result is moot (Melis et al. 2018). The
closing block of a run, the sweep summary and the report's regime line all ask this one function."""

from __future__ import annotations

# Train accuracy (the fixed train subset, in eval mode) below this: the run has not fitted its training data.
UNDERFIT_TRAIN_ACC = 0.90
# The training loss (same subset, eval mode) still fell by more than this fraction over the last epoch, while the
# train accuracy is short of 95%: training stopped before it converged. (Above 95% the loss of a model that fits
# keeps falling as it grows confident; Kim's CNN on SST-2 ends at 98% train accuracy with a 14 pt gap.)
STILL_FALLING = 0.05
FITTED_TRAIN_ACC = 0.95


def underfit_reason(metrics: dict | None, history: list | None) -> str | None:
    """Why the run underfits ('train accuracy 70.1% (< 90%)'; 'training loss still falling: -12% in the last
    epoch'), or None when it fitted (or recorded too little to tell)."""
    train_acc = (metrics or {}).get("train/acc")
    if not isinstance(train_acc, (int, float)):
        return None
    reasons = []
    if train_acc < UNDERFIT_TRAIN_ACC:
        reasons.append(f"train accuracy {train_acc * 100:.1f}% (< {UNDERFIT_TRAIN_ACC * 100:g}%)")
    losses = [row["train/eval_loss"] for row in history or [] if isinstance(row.get("train/eval_loss"), (int, float))]
    if len(losses) >= 2 and losses[-2] > 0 and train_acc < FITTED_TRAIN_ACC:
        drop = (losses[-2] - losses[-1]) / losses[-2]
        if drop > STILL_FALLING:
            reasons.append(f"training loss still falling ({-drop * 100:.0f}% in the last epoch)")
    return "; ".join(reasons) or None


NOT_MEANINGFUL = "regularization results on an underfitting baseline are not meaningful"
