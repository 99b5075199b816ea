"""Callbacks reglab always adds: the per-epoch history for results.json, and weight histograms."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from reglab.results import to_float


class EpochHistory(pl.Callback):
    """Keeps one row per epoch of everything logged at epoch level."""

    TIMING_KEYS = ("epoch", "step", "epoch_time_s", "val_time_s")

    def __init__(self):
        self.rows: list[dict] = []
        self._epoch_started = self._val_started = time.monotonic()
        self._val_time = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_started, self._val_time = time.monotonic(), 0.0

    def on_validation_epoch_start(self, trainer, pl_module):
        self._val_started = time.monotonic()

    def on_validation_epoch_end(self, trainer, pl_module):
        self._val_time += time.monotonic() - self._val_started

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step,
               "epoch_time_s": time.monotonic() - self._epoch_started,  # training + validation
               "val_time_s": self._val_time}
        row.update({k: to_float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)


class WeightHistograms(pl.Callback):
    """Per-layer weight histograms to W&B every ``every_n_epochs`` epochs (a no-op without W&B)."""

    def __init__(self, every_n_epochs: int = 1):
        self.every_n_epochs = max(1, int(every_n_epochs))

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        import wandb

        histograms = {f"weights_hist/{name}": wandb.Histogram(p.detach().float().cpu().numpy())
                      for name, p in pl_module.model.named_parameters() if p.ndim > 1}
        for logger in loggers:
            logger.experiment.log({**histograms, "trainer/global_step": trainer.global_step})
