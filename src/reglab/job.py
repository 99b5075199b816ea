"""The job: what one run does once the launcher (reglab.run) has decided to run it, the same in every DDP rank.

    seed -> build (the pre-flight's datamodule and regularizers -> model from its model_kwargs -> module
                   -> trainer with callbacks.run_callbacks)
         -> fit (resuming from the run folder's last.ckpt when it holds the same run) -> test
         -> [MC dropout evaluation] -> one RunRecord -> results.json (rank 0)

It never imports the launcher."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from reglab import console, distributed, profiling
from reglab.callbacks import LatestCheckpoint, RunCallbacks, run_callbacks
from reglab.checkpoint_io import AtomicCheckpointIO
from reglab.errors import ConfigError, Interrupted, instantiate
from reglab.identity import run_identity
from reglab.loggers import RunContext, build_loggers, finish_wandb
from reglab.models import build_model
from reglab.module import ClassifierModule
from reglab.preflight import Preflight
from reglab.results import CONFIG_KEY, RESULTS_FILE, RunRecord, read_results

log = logging.getLogger(__name__)

RESUME_CHOICES = ("auto", True, False)


def resume_checkpoint(cfg: DictConfig, output_dir: Path, config: dict) -> Path | None:
    """The checkpoint this run continues from: its folder's last.ckpt, when it was written by the same config
    and the run has not completed (``resume``: auto / true / false)."""
    resume = cfg.get("resume", "auto")
    if resume not in RESUME_CHOICES:
        raise ConfigError(f"resume={resume!r}: allowed ['auto', true, false]")
    path = output_dir / "checkpoints" / LatestCheckpoint.FILENAME
    if resume is False:
        return None
    try:
        done = read_results(output_dir / RESULTS_FILE).get("status") == "completed"
    except (OSError, ValueError):
        done = False
    if not path.is_file() or done:
        if resume is True:
            raise ConfigError(f"resume=true: no unfinished run to resume in {output_dir} (need {path})")
        return None
    from reglab.evaluation import load_checkpoint

    # last.ckpt first, then any other full checkpoint of the folder, newest first: a torn or corrupted file
    # (a full disk, a copy cut short) costs the steps since the one before it, not the run.
    others = sorted((p for p in path.parent.glob("*.ckpt") if p != path), key=lambda p: -p.stat().st_mtime)
    for candidate in [path, *others]:
        try:
            saved = load_checkpoint(candidate)[CONFIG_KEY]
        except ConfigError as err:
            if resume is True and candidate == path:
                raise ConfigError(f"resume=true: {err}") from None
            log.warning("not resuming from %s: %s", candidate, str(err).split(": ", 1)[-1])
            continue
        if run_identity(saved) != run_identity(config):
            if resume is True:
                raise ConfigError(f"resume=true: {candidate} was written by a different config")
            log.warning("not resuming from %s: it was written by a different config (starting over)", candidate)
            return None
        return candidate
    log.warning("no readable checkpoint in %s: starting over", path.parent)
    return None


@dataclass
class RunParts:
    """What a run trains with, built from its pre-flight (run_job; scripts/bench.py times the same)."""

    module: ClassifierModule
    datamodule: pl.LightningDataModule
    trainer: pl.Trainer
    callbacks: RunCallbacks


def build_run(run: Preflight, record: RunRecord, rank: int = 0, resume_from: Path | None = None,
              extra_callbacks: tuple = ()) -> RunParts:
    """seed -> data -> model -> module -> callbacks, loggers, trainer (each phase timed: profiling), from the
    regularizers and the (not yet loaded) datamodule the pre-flight built."""
    cfg, datamodule = run.cfg, run.datamodule
    profiling.mark("resume_checked")
    # Each rank its own dropout/augmentation stream; rank 0 draws the init, which DDP broadcasts.
    pl.seed_everything(int(cfg.seed) + rank, workers=True)
    datamodule.setup()
    profiling.mark("data_ready")
    model = build_model(cfg.model, datamodule)
    if cfg.get("compile", False):
        model.compile()  # in place: parameter names (checkpoints, regularizer patterns) stay as they are
    module = ClassifierModule(model, run.regularizers, cfg.optim, datamodule.model_kwargs["num_classes"],
                              small_weight_eps=float(cfg.small_weight_eps), run_config=record.config)
    profiling.mark("model_built")
    callbacks = run_callbacks(cfg, extra_callbacks)
    context = RunContext(run.output_dir, run.label, int(cfg.seed), list(cfg.tags), record.run_fields(),
                         cfg.get("study"), rank_zero=rank == 0, resuming=resume_from is not None)
    trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks.all, logger=build_loggers(cfg.logger, context),
                          enable_progress_bar=callbacks.progress_bar, plugins=[AtomicCheckpointIO()])
    profiling.mark("trainer_built")
    return RunParts(module, datamodule, trainer, callbacks)


def run_job(run: Preflight, device_slot: int | None = None) -> dict:
    """Train and test in this process: the whole job, or one rank of a DDP job. Returns results.json's dict.
    ``device_slot``: the GPU (or CPU worker) slot a hydra/launcher=gpus job holds."""
    cfg, output_dir = run.cfg, run.output_dir
    record = RunRecord.of_job(cfg, run.label, device_slot)
    rank = distributed.global_rank()
    profiling.start_job()
    if rank == 0:
        log.info(console.header(record.choices, int(cfg.seed), output_dir))
    try:
        resume_from = resume_checkpoint(cfg, output_dir, record.config)
        if resume_from is not None:
            log.info("resuming from %s", resume_from)
            record.resumed_from = str(resume_from)
        parts = build_run(run, record, rank, resume_from)
        fit_and_test(cfg, parts, record, resume_from)
        if int(cfg.get("mc_samples", 0)) > 0 and rank == 0:
            add_mc_evaluation(record, parts.module.model, parts.datamodule, int(cfg.mc_samples), int(cfg.seed),
                              parts.module.device, output_dir)
        return record.to_dict()
    except BaseException as err:
        record.fail(err)
        raise
    finally:
        record.wall_time_s = time.time() - record.started_at
        wandb_dir = finish_wandb(exit_code=0 if record.status == "completed" else 1, summary=record.metrics)
        if rank == 0:
            try:
                record.write()
            except OSError as err:  # a full disk: the run's own error (raised above) is the one to report
                log.warning("could not record the run's outcome: %s", err)
            if record.status == "completed":
                for line in console.closing_block(record, output_dir, wandb_dir, in_sweep=console.is_multirun()):
                    log.info(line)
        distributed.teardown()


def fit_and_test(cfg: DictConfig, parts: RunParts, record: RunRecord, resume_from: Path | None) -> None:
    """fit (a stop signal becomes Interrupted) -> the ranks' agreement -> test (on the best checkpoint where
    ``test_ckpt=best`` and one was kept) -> per-example predictions -> the record's outcome."""
    module, datamodule, trainer = parts.module, parts.datamodule, parts.trainer
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except SIGTERMException:
        raise Interrupted(parts.callbacks.stop.signal_name(), parts.callbacks.stop.pass_on) from None
    record.ranks_after_fit(trainer, module)
    has_best = any(getattr(c, "best_model_path", "") for c in parts.callbacks.all)
    trainer.test(module, datamodule=datamodule, ckpt_path="best" if cfg.test_ckpt == "best" and has_best else None,
                 verbose=False)
    if trainer.world_size == 1 and module.test_predictions is not None:  # under DDP each rank holds a share
        from reglab import predictions

        record.test_predictions = predictions.save(Path(cfg.paths.output_dir), module.test_predictions)
    record.complete(trainer, module, datamodule, parts.callbacks.history)


def add_mc_evaluation(record: RunRecord, model, datamodule, samples: int, seed: int, device, output_dir: Path) -> None:
    """Standard inference vs MC dropout on the test split, with the final weights (see reglab.evaluation)."""
    from reglab.evaluation import evaluate, record_evaluation

    started = time.time()
    outcome = evaluate(model, datamodule, "test", samples, seed, device)
    results = {"metrics": record.metrics, "choices": record.choices}
    record_evaluation(results, outcome, "final weights", "test", samples, seed, started, output_dir)
    record.calibration = results["calibration"]
