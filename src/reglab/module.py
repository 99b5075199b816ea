"""The LightningModule: cross-entropy plus whatever the regularizers add. It calls the
regularizer hooks without knowing which regularizers exist."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from reglab.errors import ConfigError, DivergedError
from reglab.optim import build_optimizer, build_scheduler
from reglab.results import CONFIG_KEY
from reglab.regularizers.base import Regularizer, select_parameters


@torch.no_grad()
def weight_statistics(params: list[torch.Tensor], eps: float) -> dict[str, torch.Tensor]:
    """Global stats over the weights: sum|w| (weights/l1), the Euclidean norm ||w||_2 (weights/l2),
    the fraction exactly zero and the fraction with |w| < eps."""
    count = sum(p.numel() for p in params)
    nonzero = [(p != 0).sum() for p in params]
    # Stored as sparse COO tensors: each non-zero costs its value plus one int64 index per dimension.
    sparse_bytes = sum(n * (p.element_size() + 8 * p.ndim) for n, p in zip(nonzero, params))
    return {
        "weights/l1": torch.stack(torch._foreach_norm(params, 1)).sum(),
        "weights/l2": torch.stack(torch._foreach_norm(params, 2)).norm(),
        "weights/zero_frac": 1 - sum(nonzero) / count,
        "weights/small_frac": sum((p.abs() < eps).sum() for p in params) / count,
        "weights/nonzero": sum(nonzero).float(),
        "weights/sparse_bytes": sparse_bytes.float(),
        "weights/dense_bytes": torch.tensor(float(sum(p.numel() * p.element_size() for p in params)),
                                            device=params[0].device),
    }


HISTOGRAM_EDGES = torch.logspace(-8, 1, 46)  # |w| from 1e-8 to 10, 5 bins a decade


@torch.no_grad()
def weight_magnitude_histogram(params: list[torch.Tensor]) -> dict:
    """Counts of |w| on fixed log-spaced bins, with the tails in bins of their own (``zeros``: exactly 0;
    ``underflow``: 0 < |w| < edges[0]; ``overflow``: |w| > edges[-1]), so reports can draw the 'L1 vs L2' weight
    figure from results.json alone and no bin silently holds the tails."""
    magnitudes = torch.cat([p.detach().abs().flatten().float().cpu() for p in params])
    low, high = float(HISTOGRAM_EDGES[0]), float(HISTOGRAM_EDGES[-1])
    inside = magnitudes[(magnitudes >= low) & (magnitudes <= high)]
    counts, _ = torch.histogram(inside, bins=HISTOGRAM_EDGES)
    zeros = int((magnitudes == 0).sum())
    return {"edges": HISTOGRAM_EDGES.tolist(), "counts": counts.long().tolist(), "zeros": zeros,
            "underflow": int((magnitudes < low).sum()) - zeros, "overflow": int((magnitudes > high).sum()),
            "total": int(magnitudes.numel())}


FEATURES_LISTED = 5000  # at most this many features by name in results.json (the largest weights first)


@torch.no_grad()
def feature_record(weights: torch.Tensor, names: list[str] | None = None, limit: int = FEATURES_LISTED) -> dict:
    """A linear model's features with a non-zero weight for any class, largest first (max |w| over classes), by
    name where the data has names: ``names`` and ``weights`` (one row of per-class weights each), ``n_features``,
    ``nonzero`` (how many features the model uses) and ``listed``."""
    weights = weights.detach().float().cpu()
    used = (weights != 0).any(dim=0)
    order = weights.abs().amax(dim=0).argsort(descending=True, stable=True)
    kept = order[used[order]][:limit]
    return {"n_features": weights.shape[1], "nonzero": int(used.sum()), "listed": len(kept),
            "names": [names[i] if names else str(i) for i in kept.tolist()],
            "weights": weights[:, kept].T.tolist()}


class FiniteLossGuard:
    """Stops training at a non-finite loss, naming the step and every part of the loss.

    On the CPU it checks each loss at once, before its update. On a GPU an immediate check would stall the
    device once per step (the host waits for the forward pass before it can queue the backward), so the check
    is deferred: the flag is copied to the host without blocking and read when the next step starts, by which
    time the device has long computed it. The run then stops one step later, and never checkpoints a
    non-finite state: every checkpoint write checks first."""

    defer: bool | None = None  # None: defer exactly when the loss is on a GPU

    def __init__(self):
        self.pending = None

    def watch(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], step: int, epoch: int) -> None:
        finite = torch.isfinite(loss.detach())
        event = None
        if finite.device.type == "cuda":
            finite, event = finite.to("cpu", non_blocking=True), torch.cuda.Event()
            event.record()
        self.pending = (finite, event, {k: v.detach() for k, v in parts.items()}, step, epoch)

    @property
    def deferred(self) -> bool:
        if self.defer is not None:
            return self.defer
        return self.pending is not None and self.pending[1] is not None

    def check(self) -> None:
        if self.pending is None:
            return
        finite, event, parts, step, epoch = self.pending
        self.pending = None
        if event is not None:
            event.synchronize()
        if not bool(finite):
            values = ", ".join(f"{k} {v.item():.6g}" for k, v in parts.items())
            raise DivergedError(f"loss is not finite at step {step} (epoch {epoch}): {values}")


class ClassifierModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, regularizers: list[Regularizer], optim_cfg, num_classes: int,
                 small_weight_eps: float = 1e-3, run_config: dict | None = None):
        super().__init__()
        self.run_config = run_config  # saved in every checkpoint: evaluation rebuilds the model from it
        self.model = model
        self.regularizers = list(regularizers)
        self.optim_cfg = optim_cfg
        self.small_weight_eps = small_weight_eps
        for regularizer in self.regularizers:
            regularizer.configure(model)
        # Cached once: the per-step hot path never rebuilds these lists.
        self.penalizers = [r for r in self.regularizers if r.overrides("penalty")]
        self.steppers = [r for r in self.regularizers if r.overrides("after_step")]
        self.watchers = [r for r in self.regularizers if r.overrides("before_forward")]
        # An optional regularizer attribute (reg=label_smoothing): the training loss only.
        self.label_smoothing = sum(getattr(r, "label_smoothing", 0.0) for r in self.regularizers)
        self.finite_guard = FiniteLossGuard()
        self.train_sums, self.train_count = None, 0  # this epoch's weighted loss sums (accumulate_train_means)
        self.progress = float("inf")  # outside training: full strength
        self.weight_params = [p for _, p in select_parameters(model)]

        accuracy = lambda: MulticlassAccuracy(num_classes=num_classes, average="micro")  # noqa: E731
        self.train_batch_acc, self.val_acc, self.train_eval_acc, self.test_acc = (accuracy() for _ in range(4))
        self.val_loss, self.train_eval_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.test_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (label, pred, confidence)
        self.test_predictions: dict | None = None  # this process's test examples in order (reglab.predictions)

    def forward(self, inputs):
        """Images come as a tensor, tokens as a dict of model arguments (input_ids, attention_mask)."""
        return self.model(**inputs) if isinstance(inputs, Mapping) else self.model(inputs)

    def weight_summary(self, feature_names: list[str] | None = None) -> dict:
        """What results.json says of the trained weights: the magnitude histogram, their L2 norm, the parameter
        count, and for a linear model the features it uses, by name."""
        features = (feature_record(self.model.feature_weights(), feature_names)
                    if hasattr(self.model, "feature_weights") else None)
        return {"weight_histogram": weight_magnitude_histogram(self.weight_params),
                "weight_l2": float(weight_statistics(self.weight_params, self.small_weight_eps)["weights/l2"]),
                "n_parameters": sum(p.numel() for p in self.model.parameters()), "features": features}

    def penalty_terms(self, progress: float = float("inf")) -> dict[str, torch.Tensor]:
        return {r.name: r.strength_scale(progress) * r.penalty(self.model) for r in self.penalizers}

    def training_step(self, batch, batch_idx):
        self.check_finite()  # the previous step's loss (GPU: read only now, see FiniteLossGuard)
        inputs, labels = batch
        for regularizer in self.watchers:
            regularizer.before_forward(self.model)
        logits = self(inputs)
        data_loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        # Epochs into training, fractional within the epoch: drives strength warmups (here and in after_step).
        # From the optimizer step count, which a resumed run restores exactly.
        self.progress = self.trainer.global_step / max(1, self.trainer.num_training_batches)
        terms = self.penalty_terms(self.progress)
        reg_loss = torch.stack(list(terms.values())).sum() if terms else torch.zeros((), device=self.device)
        loss = data_loss + reg_loss
        self.finite_guard.watch(loss, {"data loss": data_loss, **terms}, self.global_step, self.current_epoch)
        if not self.finite_guard.deferred:
            self.check_finite()
        self.train_batch_acc.update(logits.detach(), labels)
        self.accumulate_train_means([loss, data_loss, reg_loss, *terms.values()], len(labels))
        trainer = self.trainer
        if batch_idx + 1 >= trainer.num_training_batches or trainer.global_step + 1 == trainer.max_steps:
            self.log_train_means()
        return loss

    def accumulate_train_means(self, values: list[torch.Tensor], batch_size: int) -> None:
        """Batch-size-weighted sums of the step's losses, kept on the device: three small tensor ops a step.
        (``self.log`` per value and step cost ~1 ms each on a small CPU, most of a small model's step overhead.)"""
        step = torch.stack([v.detach().double() for v in values]) * batch_size
        if self.train_sums is None:
            self.train_sums, self.train_count = step, batch_size
        else:
            self.train_sums.add_(step)
            self.train_count += batch_size

    def log_train_means(self) -> None:
        """The epoch means, logged once at the epoch's last step: Lightning weights them by this rank's batch
        count and averages over ranks (sync_dist), as it would have per step."""
        names = ["train/loss", "train/data_loss", "train/reg_loss", *[f"train/reg/{r.name}" for r in self.penalizers]]
        log = dict(on_step=False, on_epoch=True, batch_size=self.train_count, sync_dist=True)
        for name, value in zip(names, self.train_sums / self.train_count):
            self.log(name, value.float(), **log)
        self.log("train/batch_acc", self.train_batch_acc, **log)

    def on_train_epoch_start(self):
        self.train_sums, self.train_count = None, 0
        self.train_batch_acc.reset()

    def check_finite(self) -> None:
        try:
            self.finite_guard.check()
        except DivergedError as err:
            regularizers = ", ".join(map(repr, self.regularizers)) or "none"
            raise DivergedError(f"{err}; regularizers: {regularizers}") from None

    def on_train_epoch_end(self):
        self.check_finite()

    def on_train_end(self):
        self.check_finite()

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.steppers:
            optimizer = self.trainer.optimizers[0]
            lr = optimizer.param_groups[0]["lr"]
            for regularizer in self.steppers:
                regularizer.after_step(self.model, lr * regularizer.strength_scale(self.progress), optimizer)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        inputs, labels = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits, labels)
        accuracy, mean_loss = ((self.val_acc, self.val_loss) if dataloader_idx == 0
                               else (self.train_eval_acc, self.train_eval_loss))
        accuracy.update(logits, labels)
        mean_loss.update(loss, weight=len(labels))

    def on_validation_epoch_end(self):
        val_acc, train_acc = self.val_acc.compute(), self.train_eval_acc.compute()
        metrics = {"val/acc": val_acc, "val/loss": self.val_loss.compute(), "train/acc": train_acc,
                   "train/eval_loss": self.train_eval_loss.compute(), "gen_gap": train_acc - val_acc,
                   **weight_statistics(self.weight_params, self.small_weight_eps)}
        # Already global (torchmetrics synced them; weights are identical on every rank): the sync is a no-op mean.
        self.log_dict(metrics, sync_dist=True)
        for metric in (self.val_acc, self.val_loss, self.train_eval_acc, self.train_eval_loss):
            metric.reset()

    def test_step(self, batch, batch_idx):
        inputs, labels = batch
        logits = self(inputs)
        self.test_acc.update(logits, labels)
        self.test_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        # Kept per example so a report can resample the test set and pair two runs example by example.
        confidence, predicted = logits.detach().float().softmax(-1).max(-1)
        self.test_outputs.append((labels.detach().cpu(), predicted.cpu(), confidence.cpu()))

    def on_test_epoch_start(self):
        self.test_outputs, self.test_predictions = [], None

    def on_test_epoch_end(self):
        self.log_dict({"test/acc": self.test_acc.compute(), "test/loss": self.test_loss.compute(),
                       **weight_statistics(self.weight_params, self.small_weight_eps)}, sync_dist=True)
        self.test_acc.reset()
        self.test_loss.reset()
        if self.test_outputs:
            label, predicted, confidence = (torch.cat(parts) for parts in zip(*self.test_outputs))
            self.test_predictions = {"label": label, "pred": predicted, "confidence": confidence}
        self.test_outputs = []

    REGULARIZER_STATE_KEY = "reglab_regularizers"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_finite()  # a checkpoint never holds a state reached through a non-finite loss
        if self.run_config is not None:
            checkpoint[CONFIG_KEY] = self.run_config
        states = {r.name: r.state_dict() for r in self.regularizers if r.overrides("state_dict")}
        if states:  # a regularizer's own state (an RNG, a running statistic): exact resume needs it back
            checkpoint[self.REGULARIZER_STATE_KEY] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get(self.REGULARIZER_STATE_KEY, {})
        for regularizer in self.regularizers:
            if regularizer.overrides("state_dict"):
                if regularizer.name not in states:
                    raise ConfigError(f"reg.{regularizer.name}: the checkpoint carries no state for it (written "
                                      "by a run without this regularizer); resume=false starts over")
                regularizer.load_state_dict(states[regularizer.name])

    def configure_optimizers(self):
        names, params = zip(*[(n, p) for n, p in self.model.named_parameters() if p.requires_grad])
        groups = [{"names": list(names), "params": list(params), "weight_decay": 0.0}]
        for regularizer in self.regularizers:
            groups = regularizer.param_groups(groups)
        optimizer = build_optimizer(self.optim_cfg, groups)
        total_steps, steps_per_epoch = schedule_length(self.trainer)
        scheduler = build_scheduler(optimizer, self.optim_cfg, total_steps, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def schedule_length(trainer) -> tuple[int, int]:
    """(optimizer steps in the whole run, optimizer steps per epoch), as Lightning's estimated_stepping_batches
    counts them, but from the datamodule's batch count: asking Lightning builds the training loader before a
    resumed run's loop state is restored, and the loader would then miss its mid-epoch position."""
    batches = trainer.datamodule.train_batches_per_epoch(trainer.world_size)
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
    if trainer.max_epochs == -1:  # a step budget
        return trainer.max_steps, per_epoch
    total = per_epoch * max(trainer.max_epochs, 1)
    return (min(total, trainer.max_steps) if trainer.max_steps != -1 else total), per_epoch
