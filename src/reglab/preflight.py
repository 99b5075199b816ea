"""The one pre-flight: everything a job checks and builds before it trains, each step once, in one place.

    drop unselected reg settings -> label -> skip a completed run -> .hydra/ files
      -> validate: values (no import) -> regularizers (their declared fields) -> optimizer, batch split,
         launcher -> targets (imports Lightning) -> datamodule (not loaded yet)
      -> Preflight: what the launcher launches and what the job trains with

The launcher (reglab.run) calls ``preflight`` once per job and then only chooses how to launch; spawned DDP
ranks receive the Preflight it returned. A script or a test that trains without the launcher's folder handling
calls ``validate``, the same checks without the run folder."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from reglab import distributed
from reglab.errors import ReglabError
from reglab.identity import RunLabel, run_identity
from reglab.results import RESULTS_FILE, RunRecord, read_results

log = logging.getLogger(__name__)


@dataclass
class Preflight:
    """A job that passed pre-flight: its composed config (unselected regularizer settings dropped), its label and
    identity, and what validation built. ``completed``: an earlier run's results with the same identity, which
    the launcher returns instead of training (nothing else is checked or built then)."""

    cfg: DictConfig
    label: RunLabel
    identity: dict  # reglab.identity.run_identity of the resolved config
    processes: int = 1  # DDP ranks per job on this node (reglab.distributed.processes_per_job)
    regularizers: list = field(default_factory=list)
    datamodule: object = None  # a LightningDataModule, set up by the job (setup reads the data)
    completed: dict | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)

    def resolved(self) -> Preflight:
        """This pre-flight with its config resolved to plain values: what a spawned rank receives, since Hydra's
        interpolations (${hydra:...}) need the Hydra of the process that composed the job."""
        plain = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=True))
        return Preflight(plain, self.label, self.identity, self.processes, self.regularizers, self.datamodule,
                         self.completed)


def label_and_identity(cfg: DictConfig) -> tuple[RunLabel, dict]:
    """The composed config as a job runs it, named: an experiment's settings for regularizers this job does not
    select are dropped (they are not part of the run); then the run's label, read off Hydra (here, where Hydra
    composed the job: spawned ranks have no Hydra of their own), and its identity (what a completed run must
    match to be skipped)."""
    from reglab.regularizers import drop_unselected

    unselected = drop_unselected(cfg.reg)
    if unselected:
        # debug: a study sets every regularizer it sweeps, so each of its jobs ignores most of them
        log.debug("ignoring settings of regularizers this run does not select: %s", ", ".join(unselected))
    return RunLabel.of(cfg), run_identity(OmegaConf.to_container(cfg, resolve=True))


def preflight(cfg: DictConfig) -> Preflight:
    """The launcher's pre-flight, with this process holding the run folder: skip a run that already completed
    with this config (moving aside a completed run of another config), write Hydra's .hydra/ files, validate.
    A config that fails validation leaves a ``status: failed`` results.json (a sweep's record of the job)."""
    dry_run = cfg.get("dry_run", False)
    output_dir = Path(cfg.paths.output_dir)
    label, identity = label_and_identity(cfg)
    previous = completed_results(output_dir, identity, dry_run, cfg.get("resume", "auto"))
    if previous is not None and cfg.get("skip_completed", True):
        return Preflight(cfg, label, identity, completed=previous)
    writes = not dry_run and distributed.global_rank() == 0
    if writes:
        save_hydra_files(cfg, output_dir)
    started = time.time()
    try:
        return checked(cfg, label, identity)
    except ReglabError as err:
        if writes:
            RunRecord.failed(cfg, label, err, started).write()
        raise


def validate(cfg: DictConfig) -> Preflight:
    """Every check of ``cfg`` and what they build, without the run folder: for scripts and tests that train
    without the launcher (scripts/bench.py). It and the launcher's ``preflight`` both run ``checked``."""
    return checked(cfg, *label_and_identity(cfg))


def checked(cfg: DictConfig, label: RunLabel, identity: dict) -> Preflight:
    """Each check once, cheapest first, so a typo fails before the slow imports: the values that need no import
    (about a second after the command), the regularizers (built from the fields their classes declare), the
    optimizer, batch split and launcher (torch), every ``_target_`` and the data/model fit (Lightning), and the
    datamodule's own arguments (paths, sizes)."""
    from reglab.values import check_early

    check_early(cfg)
    from reglab.regularizers import build_regularizers

    regularizers = build_regularizers(cfg.reg)
    from reglab import checks

    processes = checks.check_launch(cfg, regularizers)
    checks.check_targets(cfg, label)
    from reglab.errors import instantiate

    datamodule = instantiate(cfg.data, "data", seed=int(cfg.seed))
    return Preflight(cfg, label, identity, processes, regularizers, datamodule)


def completed_results(output_dir: Path, identity: dict, dry_run: bool = False, resume=None) -> dict | None:
    """The results of an earlier run in ``output_dir`` that completed with the same identity, else None. A
    completed run of another config is moved aside first (``replaced/<time>/``: its results.json, checkpoints,
    logs, W&B files and .hydra/), so the new run neither overwrites its results nor resumes from or mixes with
    its checkpoints. A dry run only says it would; ``resume=true`` refuses and moves nothing."""
    from reglab.errors import ConfigError

    try:
        previous = read_results(output_dir / RESULTS_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("status") != "completed":
        return None
    if run_identity(previous.get("config") or {}) != identity:
        if dry_run:
            print(f"[dry-run] would move aside a completed run of another config: {output_dir}")
            return None
        if resume is True:
            raise ConfigError(f"resume=true: {output_dir} holds a completed run of another config, so there is "
                              "nothing to resume (it is left as it is)")
        moved = move_aside(output_dir)
        log.warning("%s held a completed run of another config: moved its results, checkpoints and logs to %s",
                    output_dir, moved)
        return None
    return previous


RUN_FILES = (RESULTS_FILE, "checkpoints", "csv", "tensorboard", "wandb_run.json", "reliability.png", "train.log",
             "wandb", ".hydra", "test_predictions.npz", "evaluation.json")


def move_aside(output_dir: Path) -> Path:
    target = output_dir / "replaced" / time.strftime("%Y-%m-%d_%H-%M-%S")
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (output_dir / name).exists():
            os.replace(output_dir / name, target / name)
    reopen_log_files(output_dir / "train.log")
    return target


def reopen_log_files(path: Path) -> None:
    """A log handler that already opened ``path`` (now moved aside) writes on into a fresh file at ``path``."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.absolute():
            handler.close()  # a FileHandler in append mode opens its file again at the next line


def save_hydra_files(cfg: DictConfig, output_dir: Path) -> None:
    """Hydra's copy of the job's config (``.hydra/``: config, hydra, overrides), written here once this process
    holds the folder rather than by Hydra before the job starts, so a second process refused the folder
    overwrites nothing, and a run moved aside takes its own copy with it."""
    from hydra.core.hydra_config import HydraConfig

    from reglab.atomic import atomic_write

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    files = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
             "overrides.yaml": hydra_cfg.overrides.task}
    for name, node in files.items():
        text = OmegaConf.to_yaml(node)
        atomic_write(output_dir / ".hydra" / name, lambda handle, text=text: handle.write(text.encode()))
