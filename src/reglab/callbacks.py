"""Callbacks reglab always adds: the per-epoch history for results.json, weight histograms, the latest
checkpoint a killed run resumes from, and the RNG states that make the resumed run continue exactly."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from reglab import profiling
from reglab.console import time_left
from reglab.errors import preemption_handler
from reglab.results import to_float

log = logging.getLogger(__name__)


class EpochHistory(pl.Callback):
    """Keeps one row per epoch of everything logged at epoch level."""

    TIMING_KEYS = ("epoch", "step", "epoch_time_s", "val_time_s")

    def __init__(self):
        self.rows: list[dict] = []
        self._epoch_started = self._val_started = time.monotonic()
        self._val_time = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if "first_step" not in profiling.MARKS:
            profiling.mark("first_step")

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_started, self._val_time = time.monotonic(), 0.0

    def on_validation_epoch_start(self, trainer, pl_module):
        self._val_started = time.monotonic()

    def on_validation_epoch_end(self, trainer, pl_module):
        self._val_time += time.monotonic() - self._val_started

    def state_dict(self) -> dict:  # saved in checkpoints: a resumed run keeps the epochs before the kill
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step,
               "epoch_time_s": time.monotonic() - self._epoch_started,  # training + validation
               "val_time_s": self._val_time}
        row.update({k: to_float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)


class EpochLine(pl.Callback):
    """A console line per epoch when there is no live progress bar (output to a pipe or a file): a sign of life
    with the numbers that matter. Epochs of a fraction of a second would flood the console, so after the first
    one a line is printed only when ``every_s`` seconds have passed since the last, and for the last epoch.
    Reads the row EpochHistory has just added."""

    def __init__(self, history: EpochHistory, every_s: float = 10.0, heartbeat_s: float = 60.0):
        self.history, self.every_s, self._last = history, every_s, None
        self.heartbeat_s = heartbeat_s  # a long epoch says how far it is at least this often
        self._epoch_started = self._beat = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_started = self._beat = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        """Within an epoch of minutes: 'epoch 1/3: batch 1,200/4,000 (30%), 5.2 batches/s, about 9 min left'."""
        now = time.monotonic()
        if not trainer.is_global_zero or self._beat is None or now - self._beat < self.heartbeat_s:
            return
        self._beat = now
        done = batch_idx + 1
        batches = trainer.num_training_batches
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        epoch = f"{trainer.current_epoch + 1}/{total}" if total else str(trainer.current_epoch + 1)
        rate = done / (now - self._epoch_started)
        text = f"epoch {epoch}: batch {done:,}"
        if isinstance(batches, int) and batches > 0:
            left = (batches - done) / rate
            text += f"/{batches:,} ({100 * done / batches:.0f}%), {rate:.1f} batches/s, {time_left(left)} in the epoch"
        log.info(text)

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero or not self.history.rows:
            return
        now, row = time.monotonic(), self.history.rows[-1]
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        last_epoch = total is not None and row["epoch"] + 1 >= total
        if self._last is not None and now - self._last < self.every_s and not last_epoch:
            return
        self._last = now
        numbers = "  ".join(f"{k} {row[k]:.4f}" for k in ("train/loss", "val/loss", "val/acc") if k in row)
        epoch = f"{row['epoch'] + 1}/{total}" if total else str(row["epoch"] + 1)
        log.info("epoch %s  %s  (%.1f s)", epoch, numbers, row["epoch_time_s"])


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


class RandomState(pl.Callback):
    """Carries the Python, NumPy and torch (CPU and CUDA) RNG states in every checkpoint and puts them back on
    resume, so dropout masks and augmentation continue as if the run had never stopped. Under DDP every rank has
    streams of its own, so the checkpoint holds each rank's (``ranks``, gathered from all of them) and each rank
    takes back its own. Stored as plain lists and tensors: the checkpoint still loads with ``weights_only=True``."""

    @staticmethod
    def local_state() -> dict:
        version, keys, gauss = random.getstate()
        kind, array, pos, has_gauss, cached = np.random.get_state()
        state = {"python": [version, list(keys), gauss], "numpy": [kind, torch.from_numpy(array.copy()), pos,
                                                                   has_gauss, cached],
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def state_dict(self) -> dict:
        import torch.distributed as dist

        state = self.local_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            plain = {key: value.tolist() if isinstance(value, torch.Tensor) else value for key, value in state.items()}
            plain["numpy"] = [plain["numpy"][0], plain["numpy"][1].tolist(), *plain["numpy"][2:]]
            if "cuda" in plain:
                plain["cuda"] = [t.tolist() for t in plain["cuda"]]
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, plain)  # every rank saves (LatestCheckpoint), so every rank is here
            state["ranks"] = gathered
        return state

    def load_state_dict(self, state: dict) -> None:
        import torch.distributed as dist

        ranks = state.get("ranks")
        if ranks and dist.is_available() and dist.is_initialized() and dist.get_world_size() == len(ranks):
            state = ranks[dist.get_rank()]
        version, keys, gauss = state["python"]
        random.setstate((version, tuple(keys), gauss))
        kind, array, pos, has_gauss, cached = state["numpy"]
        array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array, dtype=np.uint32)
        np.random.set_state((kind, array, pos, has_gauss, cached))
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.as_tensor(t, dtype=torch.uint8) for t in state["cuda"]])


class LatestCheckpoint(pl.Callback):
    """``checkpoints/last.ckpt``: the latest full training state, every ``every_n_steps`` optimizer steps (0:
    only at epoch ends) and at the end of every epoch. A killed run resumes from it; evaluation reads it.
    Written to a temporary file in the same folder and renamed (reglab.checkpoint_io), so a kill or a full disk
    during the write never leaves a torn checkpoint.
    (Lightning's ``save_last`` refreshes only when a best-k checkpoint is saved, so it goes stale.)"""

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0):
        self.path = Path(dirpath) / self.FILENAME
        self.every_n_steps = int(every_n_steps)

    def save(self, trainer) -> None:
        # the full state, for resume; every rank calls it, rank 0 writes (atomically), then all meet at a barrier
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self.save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A stop signal (SIGTERM from a scheduler; SIGINT / SIGUSR1 through GracefulStop) ends training at a step
        # boundary: the state there is whole, so the run resumes from this very step.
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self.save(trainer)


class CSVHistory(pl.Callback):
    """Every epoch in ``csv/metrics.csv`` across resumes. Each checkpoint records how many rows the file held
    when it was written (flushed first); a run resumed from it keeps those rows and logs on after them, so the
    file reads as if the run had never stopped. A run that starts over keeps none."""

    KEY = "reglab_csv_rows"

    def __init__(self):
        self.restored_rows: int | None = None

    @staticmethod
    def csv_loggers(trainer) -> list:
        from reglab.loggers import CSVHistoryLogger

        return [logger for logger in trainer.loggers if isinstance(logger, CSVHistoryLogger)]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in self.csv_loggers(trainer)[:1] if trainer.is_global_zero else []:
            logger.save()
            checkpoint[self.KEY] = logger.experiment.rows_in_file()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.restored_rows = checkpoint.get(self.KEY)  # None: a checkpoint from before this was recorded

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        keep = 0 if trainer.ckpt_path is None else self.restored_rows
        for logger in self.csv_loggers(trainer) if keep is not None else []:
            logger.experiment.keep_rows(keep)


class GracefulStop(pl.Callback):
    """SIGINT (Ctrl+C), SIGUSR1 (what SLURM sends before a preemption, with --signal) and SIGUSR2 (submitit's
    preemption signal under hydra/launcher=slurm) stop training the way Lightning stops it for SIGTERM: at the
    next step boundary, after which LatestCheckpoint writes last.ckpt and the run ends ``interrupted`` with exit
    code 128 + the signal. A second Ctrl+C interrupts at once.

    A preemption signal that someone else was waiting for (submitit, which then requeues the job) is handed on
    to them once the state is saved (``pass_on``), so the requeued job resumes from this very step.

    Under DDP the ranks must stop at the same step, whichever of them got the signal and whenever: a signal
    (SIGTERM too) only sets a flag, and at the end of every step the ranks agree on it (a max over ranks), so all
    of them stop after that step together and write one checkpoint. Lightning's own SIGTERM path lets rank 0 stop
    a step before the others, which leaves them waiting in different collectives."""

    SIGNALS = ("SIGINT", "SIGUSR1", "SIGUSR2")

    def __init__(self):
        self.received: str | None = None
        self.pass_on = None
        self.requested = False  # DDP: a signal arrived here; acted on at the end of the step, by every rank
        self.distributed = False
        self._previous: dict = {}

    def on_fit_start(self, trainer, pl_module):
        self.distributed = trainer.world_size > 1
        self.install(self.SIGNALS)

    def on_train_start(self, trainer, pl_module):
        if self.distributed:  # now, after Lightning set its SIGTERM handler, which would stop this rank alone
            self.install(("SIGTERM",))
        from hydra_plugins.reglab_launcher.stoppable_joblib import entering_training

        # Now, when Lightning's SIGTERM handler is set (after on_fit_start): a parallel sweep may signal this job.
        if entering_training():  # the sweep was stopped while this job started up: stop at the first step
            self.received = "SIGTERM"
            os.kill(os.getpid(), signal.SIGTERM)

    def install(self, names) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for name in names:
            number = getattr(signal, name, None)
            if number is None:
                continue

            def stop(signum, frame, name=name, number=number):
                self.received = self.received or name
                self.pass_on = preemption_handler(name, self._previous.get(number)) or self.pass_on
                if self.distributed:
                    self.requested = True
                    return
                signal.signal(number, self._previous.get(number, signal.SIG_DFL))  # a second signal is immediate
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own SIGTERM path: stop at the next step

            self._previous[number] = signal.signal(number, stop)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.distributed:
            return
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.requested else 0.0], device=pl_module.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            self.received = self.received or "SIGTERM"
            raise SIGTERMException()  # on every rank at this same step: LatestCheckpoint saves it

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_fit_end(self, trainer, pl_module):
        self.restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.restore()

    def signal_name(self) -> str:
        return self.received or "SIGTERM"


@dataclass
class RunCallbacks:
    """A run's callbacks, in the order Lightning calls them, and the two the job reads back afterwards."""

    all: list
    history: EpochHistory
    stop: GracefulStop
    progress_bar: bool  # Lightning's own bar (enable_progress_bar), else one line per epoch or a live bar


def run_callbacks(cfg, extra: tuple = ()) -> RunCallbacks:
    """The config's ``callbacks`` (each a ``_target_``), then the ones every run has, then ``extra`` (a benchmark's
    clock). In this order: the epoch's history row exists before the epoch-end checkpoint is written. The
    progress display: ``trainer.enable_progress_bar: null`` is a live bar on a terminal, one line per epoch
    otherwise (reglab.console); true/false force Lightning's bar on or off."""
    from reglab.console import EpochBar, is_terminal
    from reglab.errors import instantiate

    history, stop = EpochHistory(), GracefulStop()
    histogram_every = ((cfg.logger or {}).get("wandb") or {}).get("log_histograms_every_n_epochs", 1)
    configured = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.callbacks or {}).items() if c is not None]
    every_run = [history, WeightHistograms(histogram_every), RandomState(), stop, CSVHistory(),
                 LatestCheckpoint(Path(cfg.paths.output_dir) / "checkpoints",
                                  int(cfg.get("checkpoint_every_n_steps", 0)))]
    progress_bar = cfg.trainer.get("enable_progress_bar")
    progress_bar = is_terminal() if progress_bar is None else bool(progress_bar)
    display = [EpochBar()] if progress_bar and is_terminal() else [] if progress_bar else [EpochLine(history)]
    return RunCallbacks([*configured, *every_run, *extra, *display], history, stop, progress_bar)
