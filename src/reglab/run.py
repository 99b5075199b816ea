"""The one path a run takes: validate -> seed -> build -> fit -> test -> results.json."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from reglab.callbacks import EpochHistory, WeightHistograms
from reglab.errors import ConfigError, ReglabError, instantiate
from reglab.loggers import build_loggers, finish_wandb
from reglab.module import ClassifierModule, weight_magnitude_histogram
from reglab.optim import check_optim_config
from reglab.regularizers import build_regularizers, drop_unselected
from reglab.results import (FINAL_METRICS, RESULTS_FILE, git_commit, library_versions, read_results, to_float,
                            write_results)

log = logging.getLogger(__name__)


def choice_name(target: str) -> str:
    """'reglab.data.cifar10.CIFAR10DataModule' -> 'cifar10' (the module is the choice)."""
    return target.rsplit(".", 2)[-2]


def run_choices(cfg: DictConfig) -> dict[str, str]:
    return {"data": choice_name(cfg.data._target_), "model": choice_name(cfg.model._target_),
            "reg": "+".join(cfg.reg or {}) or "none",
            "optim": cfg.optim.name}


def check_config(cfg: DictConfig) -> None:
    """Cheap checks that need no data and no model, so a typo fails in the first second."""
    if int(cfg.trainer.get("max_epochs", 1)) < 1:
        raise ConfigError(f"trainer.max_epochs={cfg.trainer.max_epochs}: must be >= 1")
    if cfg.test_ckpt not in ("last", "best"):
        raise ConfigError(f"test_ckpt={cfg.test_ckpt!r}: allowed ['last', 'best']")
    check_optim_config(cfg.optim)
    data_kind = getattr(get_class(cfg.data._target_), "input_kind", None)
    model_kind = getattr(get_class(cfg.model._target_), "input_kind", None)
    if data_kind != model_kind:
        raise ConfigError(f"model={choice_name(cfg.model._target_)} takes {model_kind} input but "
                          f"data={choice_name(cfg.data._target_)} gives {data_kind} input")


def validate(cfg: DictConfig):
    """Everything that can be checked without data or a model: the config, the regularizers' values and the
    datamodule's arguments (paths, sizes). Returns the regularizers and the (not yet loaded) datamodule."""
    check_config(cfg)
    return build_regularizers(cfg.reg), instantiate(cfg.data, "data")


def run_identity(config: dict) -> dict:
    """What makes two runs the same run (Dora's idea): the config, minus where it writes and how it is launched."""
    return {k: v for k, v in config.items() if k not in ("paths", "dry_run", "skip_completed")}


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
    started = time.time()
    unselected = drop_unselected(cfg.reg)
    if unselected:
        log.info("ignoring settings of regularizers this run does not select: %s", ", ".join(unselected))
    output_dir = Path(cfg.paths.output_dir)
    choices = run_choices(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    previous = completed_results(output_dir, config)
    if previous is not None and cfg.get("skip_completed", True):
        log.info("skipping %s: it already completed with this config (skip_completed=false reruns it)", output_dir)
        print(f"{'[dry-run] ' if cfg.get('dry_run') else ''}skip (completed): {output_dir}")
        return previous
    if cfg.get("dry_run", False):
        validate(cfg)
        print(f"[dry-run] would run: {'/'.join(choices.values())} seed={cfg.seed} -> {output_dir}")
        return {"status": "dry_run", "choices": choices, "seed": int(cfg.seed), "output_dir": str(output_dir)}
    results = {"status": "running", "study": cfg.get("study"), "choices": choices, "seed": int(cfg.seed),
               "config": config, "output_dir": str(output_dir), "git_commit": git_commit(),
               "versions": library_versions()}
    try:
        regularizers, datamodule = validate(cfg)
        pl.seed_everything(int(cfg.seed), workers=True)
        datamodule.setup()
        model = instantiate(cfg.model, "model", **datamodule.model_kwargs)
        module = ClassifierModule(model, regularizers, cfg.optim, datamodule.model_kwargs["num_classes"],
                                  small_weight_eps=float(cfg.small_weight_eps))
        history = EpochHistory()
        wandb_cfg = (cfg.logger or {}).get("wandb") or {}
        callbacks = [instantiate(c, f"callbacks.{k}") for k, c in (cfg.callbacks or {}).items() if c is not None]
        callbacks += [history, WeightHistograms(wandb_cfg.get("log_histograms_every_n_epochs", 1))]
        loggers = build_loggers(cfg.logger, output_dir, choices, list(cfg.tags), config, cfg.get("study"))
        trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)

        trainer.fit(module, datamodule=datamodule)
        has_best = any(getattr(c, "best_model_path", "") for c in callbacks)
        ckpt = "best" if cfg.test_ckpt == "best" and has_best else None
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)

        # trainer.test() replaces callback_metrics, so the last epoch's row supplies val/train.
        last_epoch = {k: v for k, v in (history.rows[-1] if history.rows else {}).items()
                      if k not in EpochHistory.TIMING_KEYS}
        final = last_epoch | {k: to_float(v) for k, v in trainer.callback_metrics.items()}
        results.update(status="completed", test_split=datamodule.test_split,
                       metrics={k: final[k] for k in FINAL_METRICS if k in final} | final,
                       history=history.rows, epochs=trainer.current_epoch,
                       weight_histogram=weight_magnitude_histogram(module.weight_params),
                       n_parameters=sum(p.numel() for p in model.parameters()))
        log.info("test/acc=%.4f val/acc=%.4f gen_gap=%.4f (%s)", final.get("test/acc", float("nan")),
                 final.get("val/acc", float("nan")), final.get("gen_gap", float("nan")), output_dir)
        return results
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        results.update(status=status, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        results["wall_time_s"] = time.time() - started
        finish_wandb(exit_code=0 if results["status"] == "completed" else 1)
        write_results(output_dir, results)
