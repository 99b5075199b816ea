"""The one path a run takes: validate -> (claim a GPU | spawn one process per device) -> seed -> build -> fit
-> test -> results.json."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reglab import profiling

profiling.mark("imports_started")

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from reglab import distributed
from reglab.callbacks import EpochHistory, LatestCheckpoint, RandomState, WeightHistograms
from reglab.data.batching import check_divisible
from reglab.errors import ConfigError, DivergedError, ReglabError, instantiate
from reglab.gpu_slots import claim_slot, launcher_choice, launcher_jobs
from reglab.identity import SCHEMA_VERSION, RunLabel, condition_id, config_choices, run_identity
from reglab.loggers import build_loggers, finish_wandb
from reglab.module import ClassifierModule, weight_magnitude_histogram, weight_statistics
from reglab.optim import check_optim_config
from reglab.regularizers import build_regularizers, drop_unselected
from reglab.results import (CONFIG_KEY, FINAL_METRICS, RESULTS_FILE, git_commit, library_versions, read_results,
                            to_float, write_results)

profiling.mark("imports_done")

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """Cheap checks that need no data and no model, so a typo fails in the first second."""
    epochs, steps = int(cfg.trainer.get("max_epochs", 1)), int(cfg.trainer.get("max_steps", -1) or -1)
    if epochs < 1 and not (epochs == -1 and steps > 0):
        raise ConfigError(f"trainer.max_epochs={cfg.trainer.max_epochs}: must be >= 1 (or -1 with "
                          "trainer.max_steps > 0: a step budget)")
    if cfg.test_ckpt not in ("last", "best"):
        raise ConfigError(f"test_ckpt={cfg.test_ckpt!r}: allowed ['last', 'best']")
    check_optim_config(cfg.optim)
    processes = distributed.processes_per_job(cfg.trainer)
    check_divisible(int(cfg.data.get("batch_size", 1)), processes * int(cfg.trainer.get("num_nodes", 1)))
    if launcher_choice() == "gpus" and processes > 1:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices}: hydra/launcher=gpus runs one single-GPU job "
                          "per GPU; use trainer=gpu with it, or trainer=ddp without it")
    data_kind = getattr(get_class(cfg.data._target_), "input_kind", None)
    model_kind = getattr(get_class(cfg.model._target_), "input_kind", None)
    if data_kind != model_kind:
        names = config_choices(cfg)
        raise ConfigError(f"model={names['model']} takes {model_kind} input but data={names['data']} gives "
                          f"{data_kind} input")


def validate(cfg: DictConfig):
    """Everything that can be checked without data or a model: the config, the regularizers' values and the
    datamodule's arguments (paths, sizes). Returns the regularizers and the (not yet loaded) datamodule."""
    check_config(cfg)
    return build_regularizers(cfg.reg), instantiate(cfg.data, "data", seed=int(cfg.seed))


def completed_results(output_dir: Path, config: dict) -> dict | None:
    """The results of an earlier run in ``output_dir`` that completed with the same config, else None."""
    path = output_dir / RESULTS_FILE
    try:
        previous = read_results(path)
    except (OSError, ValueError):
        return None
    same = run_identity(previous.get("config", {})) == run_identity(config)
    return previous if previous.get("status") == "completed" and same else None


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main(cfg: DictConfig) -> float | None:
    """The CLI job: a user error is one line and exit code 2. In a multirun, a failed job is recorded in its
    results.json (status failed, with the error) and the sweep goes on with the other jobs; it returns NaN,
    which an Optuna sweep counts as a failed trial."""
    try:
        results = train(cfg)
    except ReglabError as err:
        print(f"error: {err}", file=sys.stderr)
        if is_multirun():
            return float("nan")
        sys.exit(2)
    except Exception:
        if is_multirun():
            log.exception("job failed; the sweep goes on (its results.json says status: failed)")
            return float("nan")
        raise
    return results.get("metrics", {}).get("val/acc")


def train(cfg: DictConfig) -> dict:
    """Pre-flight in this process (skip a completed run, validate, dry run), then train: here, on a GPU
    claimed from the node's pool (hydra/launcher=gpus), or in one process per device (DDP)."""
    unselected = drop_unselected(cfg.reg)
    if unselected:
        log.info("ignoring settings of regularizers this run does not select: %s", ", ".join(unselected))
    label = RunLabel.of(cfg)  # here, where Hydra composed the job: spawned ranks have no Hydra of their own
    output_dir = Path(cfg.paths.output_dir)
    previous = completed_results(output_dir, OmegaConf.to_container(cfg, resolve=True))
    if previous is not None and cfg.get("skip_completed", True):
        log.info("skipping %s: it already completed with this config (skip_completed=false reruns it)", output_dir)
        print(f"{'[dry-run] ' if cfg.get('dry_run') else ''}skip (completed): {output_dir}")
        return previous
    try:
        validate(cfg)
    except ReglabError as err:
        if not cfg.get("dry_run", False) and distributed.global_rank() == 0:
            write_results(output_dir, failed_results(cfg, label, err, time.time()))  # the sweep's record of it
        raise
    if cfg.get("dry_run", False):
        print(f"[dry-run] would run: {label.wandb_name(int(cfg.seed))} -> {output_dir}")
        return {"status": "dry_run", "choices": label.choices, "seed": int(cfg.seed), "output_dir": str(output_dir)}
    if launcher_choice() == "gpus":
        return train_on_claimed_gpu(cfg, label)
    processes = distributed.processes_per_job(cfg.trainer)
    if processes > 1 and not distributed.launched_externally():
        return train_spawned(cfg, label, processes)
    return train_in_process(cfg, label)


def train_on_claimed_gpu(cfg: DictConfig, label: RunLabel) -> dict:
    """One of N parallel jobs on a node: hold a GPU of its own for the whole run. Without a GPU (tests,
    a CPU node) the slots stand for CPU workers and the job trains on the CPU."""
    gpu = distributed.uses_gpu(cfg.trainer)
    n_slots = torch.cuda.device_count() if gpu else launcher_jobs()
    with claim_slot(n_slots, cfg.paths.gpu_lock_dir) as slot:
        log.info("claimed GPU slot %d of %d", slot, n_slots)
        if gpu:
            cfg.trainer.devices = [slot]
        return train_in_process(cfg, label, device_slot=slot)


def train_spawned(cfg: DictConfig, label: RunLabel, nprocs: int) -> dict:
    """DDP on this node: one process per device, each running train_in_process; rank 0 writes results.json."""
    output_dir = Path(cfg.paths.output_dir)
    started = time.time()
    log.info("spawning %d DDP processes", nprocs)
    try:
        spawn = distributed.uses_gpu(cfg.trainer) or cfg.trainer.get("strategy") == "ddp_spawn"
        distributed.spawn_job(OmegaConf.to_container(cfg, resolve=True), label, nprocs,
                              start_method="spawn" if spawn else "fork")
    except Exception as err:
        reported = _rank_error(err)
        path = output_dir / RESULTS_FILE
        if not path.exists() or path.stat().st_mtime < started:  # no rank 0 left to say so
            write_results(output_dir, failed_results(cfg, label, reported, started))
        raise reported from None
    return read_results(output_dir / RESULTS_FILE)


def run_fields(cfg: DictConfig, label: RunLabel, config: dict) -> dict:
    """Who the run is and what it ran, under the keys results.json and the W&B run's config share."""
    return {"study": cfg.get("study"), "choices": label.choices, "overrides": list(label.overrides),
            "seed": int(cfg.seed), "condition_id": condition_id(config), "config": config}


def results_record(cfg: DictConfig, label: RunLabel, status: str, started: float) -> dict:
    """The start of every results.json (reports read these keys)."""
    return {"schema_version": SCHEMA_VERSION, "status": status,
            **run_fields(cfg, label, OmegaConf.to_container(cfg, resolve=True)),
            "output_dir": str(cfg.paths.output_dir), "started_at": started}


def failed_results(cfg: DictConfig, label: RunLabel, err: BaseException, started: float) -> dict:
    return results_record(cfg, label, "failed", started) | {"error": f"{type(err).__name__}: {err}",
                                                             "wall_time_s": time.time() - started}


def _rank_error(err: Exception) -> Exception:
    """A rank's ReglabError comes back as a traceback string; turn it into the one-line error again."""
    lines = str(err).strip().splitlines()
    last = lines[-1] if lines else ""
    for name in ("ConfigError", "DataUnavailableError", "DivergedError", "ReglabError"):
        prefix = f"reglab.errors.{name}: "
        if last.startswith(prefix):
            return ReglabError(last[len(prefix):])
    return err


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

    saved = load_checkpoint(path)[CONFIG_KEY]
    if run_identity(saved) != run_identity(config):
        if resume is True:
            raise ConfigError(f"resume=true: {path} was written by a different config")
        log.warning("not resuming from %s: it was written by a different config (starting over)", path)
        return None
    return path


def add_mc_evaluation(results: dict, model, datamodule, samples: int, seed: int, device, output_dir: Path) -> None:
    """Standard inference vs MC dropout on the test split, with the final weights (see reglab.evaluation)."""
    from reglab.evaluation import evaluate, record_evaluation

    started = time.time()
    outcome = evaluate(model, datamodule, "test", samples, seed, device)
    record_evaluation(results, outcome, "final weights", "test", samples, seed, started, output_dir)


@dataclass
class RunParts:
    """What a run trains with, built from its config (train_in_process; scripts/bench.py times the same)."""

    module: ClassifierModule
    datamodule: pl.LightningDataModule
    trainer: pl.Trainer
    history: EpochHistory
    callbacks: list


def build_run(cfg: DictConfig, output_dir: Path, config: dict, rank: int = 0, resume_from: Path | None = None,
              extra_callbacks: tuple = (), label: RunLabel | None = None) -> RunParts:
    """validate -> seed -> data -> model -> module -> callbacks, loggers, trainer (each phase timed: profiling)."""
    regularizers, datamodule = validate(cfg)
    profiling.mark("validated")
    # Each rank its own dropout/augmentation stream; rank 0 draws the init, which DDP broadcasts.
    pl.seed_everything(int(cfg.seed) + rank, workers=True)
    datamodule.setup()
    profiling.mark("data_ready")
    model = instantiate(cfg.model, "model", **datamodule.model_kwargs)
    if cfg.get("compile", False):
        model.compile()  # in place: parameter names (checkpoints, regularizer patterns) stay as they are
    module = ClassifierModule(model, regularizers, cfg.optim, datamodule.model_kwargs["num_classes"],
                              small_weight_eps=float(cfg.small_weight_eps), run_config=config)
    profiling.mark("model_built")
    history = EpochHistory()
    wandb_cfg = (cfg.logger or {}).get("wandb") or {}
    callbacks = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.callbacks or {}).items() if c is not None]
    # In this order: the epoch's history row exists before the epoch-end checkpoint is written.
    callbacks += [history, WeightHistograms(wandb_cfg.get("log_histograms_every_n_epochs", 1)), RandomState(),
                  LatestCheckpoint(output_dir / "checkpoints", int(cfg.get("checkpoint_every_n_steps", 0))),
                  *extra_callbacks]
    label = label or RunLabel.of(cfg)
    loggers = build_loggers(cfg.logger, output_dir, label, int(cfg.seed), list(cfg.tags),
                            run_fields(cfg, label, config), cfg.get("study"), wandb_allowed=rank == 0,
                            resuming=resume_from is not None)
    trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    profiling.mark("trainer_built")
    return RunParts(module, datamodule, trainer, history, callbacks)


def train_in_process(cfg: DictConfig, label: RunLabel | None = None, **extra) -> dict:
    """Train and test in this process: the whole job, or one rank of a DDP job."""
    started = time.time()
    rank = distributed.global_rank()
    output_dir = Path(cfg.paths.output_dir)
    label = label or RunLabel.of(cfg)
    results = results_record(cfg, label, "running", started) | {"git_commit": git_commit(),
                                                                 "versions": library_versions(),
                                                                 "torch_threads": torch.get_num_threads(), **extra}
    config = results["config"]
    profiling.start_job()
    try:
        resume_from = resume_checkpoint(cfg, output_dir, config)
        if resume_from is not None:
            log.info("resuming from %s", resume_from)
            results["resumed_from"] = str(resume_from)
        parts = build_run(cfg, output_dir, config, rank, resume_from, label=label)
        module, datamodule, trainer, history, callbacks = (parts.module, parts.datamodule, parts.trainer,
                                                           parts.history, parts.callbacks)
        model = module.model

        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        if trainer.world_size > 1:
            penalty = sum(float(t) for t in module.penalty_terms().values())
            results["distributed"] = {
                "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
                "penalty_rank_spread": distributed.rank_spread(penalty, module.device),
                "weight_l2_rank_spread": distributed.rank_spread(
                    weight_statistics(module.weight_params, module.small_weight_eps)["weights/l2"], module.device)}
        has_best = any(getattr(c, "best_model_path", "") for c in callbacks)
        ckpt = "best" if cfg.test_ckpt == "best" and has_best else None
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)

        # trainer.test() replaces callback_metrics, so the last epoch's row supplies val/train.
        last_epoch = {k: v for k, v in (history.rows[-1] if history.rows else {}).items()
                      if k not in EpochHistory.TIMING_KEYS}
        final = last_epoch | {k: to_float(v) for k, v in trainer.callback_metrics.items()}
        results.update(status="completed", test_split=datamodule.test_split,
                       split_sizes=getattr(datamodule, "split_sizes", None),
                       metrics={k: final[k] for k in FINAL_METRICS if k in final} | final,
                       history=history.rows, epochs=trainer.current_epoch,
                       weight_histogram=weight_magnitude_histogram(module.weight_params),
                       n_parameters=sum(p.numel() for p in model.parameters()),
                       timing=profiling.startup_timing(), peak_memory=profiling.peak_memory(module.device))
        if int(cfg.get("mc_samples", 0)) > 0 and rank == 0:
            add_mc_evaluation(results, module.model, datamodule, int(cfg.mc_samples), int(cfg.seed), module.device,
                              output_dir)
        log.info("test/acc=%.4f val/acc=%.4f gen_gap=%.4f (%s)", final.get("test/acc", float("nan")),
                 final.get("val/acc", float("nan")), final.get("gen_gap", float("nan")), output_dir)
        return results
    except BaseException as err:
        status = ("interrupted" if isinstance(err, KeyboardInterrupt) else
                  "diverged" if isinstance(err, DivergedError) else "failed")
        results.update(status=status, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        results["wall_time_s"] = time.time() - started
        finish_wandb(exit_code=0 if results["status"] == "completed" else 1, summary=results.get("metrics"))
        if rank == 0:
            write_results(output_dir, results)
        distributed.teardown()
