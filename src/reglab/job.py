"""The job: what one run does once the launcher (reglab.run) has decided to run it, the same in every DDP rank.

    seed -> build (datamodule -> model from its model_kwargs -> regularizers -> module -> trainer)
         -> fit (resuming from the run folder's last.ckpt when it holds the same run) -> test
         -> [MC dropout evaluation] -> one RunRecord -> results.json (rank 0)

It never imports the launcher."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from reglab import console, distributed, profiling
from reglab.callbacks import (CSVHistory, EpochHistory, EpochLine, GracefulStop, LatestCheckpoint, RandomState,
                              WeightHistograms)
from reglab.checkpoint_io import AtomicCheckpointIO
from reglab.errors import ConfigError, Interrupted, instantiate
from reglab.identity import RunLabel, run_identity
from reglab.loggers import RunContext, build_loggers, finish_wandb
from reglab.models import build_model
from reglab.module import ClassifierModule, feature_record, weight_magnitude_histogram, weight_statistics
from reglab.regularizers import build_regularizers
from reglab.results import CONFIG_KEY, FINAL_METRICS, RESULTS_FILE, RunRecord, git_commit, library_versions, \
    read_results, to_float

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
    """What a run trains with, built from its config (run_job; scripts/bench.py times the same)."""

    module: ClassifierModule
    datamodule: pl.LightningDataModule
    trainer: pl.Trainer
    history: EpochHistory
    callbacks: list


def build_run(cfg: DictConfig, record: RunRecord, rank: int = 0, resume_from: Path | None = None,
              extra_callbacks: tuple = (), label: RunLabel | None = None, prebuilt: tuple | None = None) -> RunParts:
    """seed -> data -> model -> module -> callbacks, loggers, trainer (each phase timed: profiling).
    ``prebuilt``: the (regularizers, datamodule) the launcher built from this config while validating it."""
    output_dir = Path(cfg.paths.output_dir)
    regularizers, datamodule = prebuilt or (build_regularizers(cfg.reg),
                                            instantiate(cfg.data, "data", seed=int(cfg.seed)))
    profiling.mark("validated")
    # Each rank its own dropout/augmentation stream; rank 0 draws the init, which DDP broadcasts.
    pl.seed_everything(int(cfg.seed) + rank, workers=True)
    datamodule.setup()
    profiling.mark("data_ready")
    model = build_model(cfg.model, datamodule)
    if cfg.get("compile", False):
        model.compile()  # in place: parameter names (checkpoints, regularizer patterns) stay as they are
    module = ClassifierModule(model, regularizers, cfg.optim, datamodule.model_kwargs["num_classes"],
                              small_weight_eps=float(cfg.small_weight_eps), run_config=record.config)
    profiling.mark("model_built")
    history = EpochHistory()
    histogram_every = ((cfg.logger or {}).get("wandb") or {}).get("log_histograms_every_n_epochs", 1)
    callbacks = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.callbacks or {}).items() if c is not None]
    # In this order: the epoch's history row exists before the epoch-end checkpoint is written.
    callbacks += [history, WeightHistograms(histogram_every), RandomState(), GracefulStop(), CSVHistory(),
                  LatestCheckpoint(output_dir / "checkpoints", int(cfg.get("checkpoint_every_n_steps", 0))),
                  *extra_callbacks]
    label = label or RunLabel.of(cfg)
    run = RunContext(output_dir, label, int(cfg.seed), list(cfg.tags), record.run_fields(), cfg.get("study"),
                     rank_zero=rank == 0, resuming=resume_from is not None)
    loggers = build_loggers(cfg.logger, run)
    # null: a live bar on a terminal, one line per epoch otherwise (reglab.console)
    progress_bar = cfg.trainer.get("enable_progress_bar")
    progress_bar = console.is_terminal() if progress_bar is None else bool(progress_bar)
    if progress_bar and console.is_terminal():
        callbacks.append(console.EpochBar())
    elif not progress_bar:
        callbacks.append(EpochLine(history))
    trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers,
                          enable_progress_bar=progress_bar, plugins=[AtomicCheckpointIO()])
    profiling.mark("trainer_built")
    return RunParts(module, datamodule, trainer, history, callbacks)


def run_job(cfg: DictConfig, label: RunLabel | None = None, prebuilt: tuple | None = None, **extra) -> dict:
    """Train and test in this process: the whole job, or one rank of a DDP job. Returns results.json's dict."""
    record = RunRecord.start(cfg, label or RunLabel.of(cfg))
    record.git_commit, record.versions = git_commit(), library_versions()
    record.torch_threads = torch.get_num_threads()
    for key, value in extra.items():
        setattr(record, key, value)
    rank = distributed.global_rank()
    output_dir = Path(cfg.paths.output_dir)
    profiling.start_job()
    if rank == 0:
        log.info(console.header(record.choices, int(cfg.seed), output_dir))
    try:
        resume_from = resume_checkpoint(cfg, output_dir, record.config)
        if resume_from is not None:
            log.info("resuming from %s", resume_from)
            record.resumed_from = str(resume_from)
        parts = build_run(cfg, record, rank, resume_from, label=label, prebuilt=prebuilt)
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
    module, datamodule, trainer, history = parts.module, parts.datamodule, parts.trainer, parts.history
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except SIGTERMException:
        stop = next(c for c in parts.callbacks if isinstance(c, GracefulStop))
        raise Interrupted(stop.signal_name(), stop.pass_on) from None
    if trainer.world_size > 1:
        penalty = sum(float(t) for t in module.penalty_terms().values())
        record.distributed = {
            "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
            "penalty_rank_spread": distributed.rank_spread(penalty, module.device),
            "weight_l2_rank_spread": distributed.rank_spread(
                weight_statistics(module.weight_params, module.small_weight_eps)["weights/l2"], module.device)}
    has_best = any(getattr(c, "best_model_path", "") for c in parts.callbacks)
    ckpt = "best" if cfg.test_ckpt == "best" and has_best else None
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    if trainer.world_size == 1 and module.test_predictions is not None:  # under DDP each rank holds a share
        from reglab import predictions

        record.test_predictions = predictions.save(Path(cfg.paths.output_dir), module.test_predictions)

    # trainer.test() replaces callback_metrics, so the last epoch's row supplies val/train.
    last_epoch = {k: v for k, v in (history.rows[-1] if history.rows else {}).items()
                  if k not in EpochHistory.TIMING_KEYS}
    final = last_epoch | {k: to_float(v) for k, v in trainer.callback_metrics.items()}
    record.status, record.input_kind = "completed", datamodule.input_kind
    record.test_split, record.split_sizes = datamodule.test_split, datamodule.split_sizes
    record.metrics = {k: final[k] for k in FINAL_METRICS if k in final} | final
    record.history, record.epochs = history.rows, trainer.current_epoch
    record.weight_histogram = weight_magnitude_histogram(module.weight_params)
    if hasattr(module.model, "feature_weights"):  # a linear model: which inputs it uses, by name
        record.features = feature_record(module.model.feature_weights(), getattr(datamodule, "feature_names", None))
    record.n_parameters = sum(p.numel() for p in module.model.parameters())
    record.timing, record.peak_memory = profiling.startup_timing(), profiling.peak_memory(module.device)


def add_mc_evaluation(record: RunRecord, model, datamodule, samples: int, seed: int, device, output_dir: Path) -> None:
    """Standard inference vs MC dropout on the test split, with the final weights (see reglab.evaluation)."""
    from reglab.evaluation import evaluate, record_evaluation

    started = time.time()
    outcome = evaluate(model, datamodule, "test", samples, seed, device)
    results = {"metrics": record.metrics, "choices": record.choices}
    record_evaluation(results, outcome, "final weights", "test", samples, seed, started, output_dir)
    record.calibration = results["calibration"]
