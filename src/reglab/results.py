"""One ``results.json`` per run: the only thing reports read. Written atomically and last, so a
partial run never looks complete. ``RunRecord`` is its one shape, built here and nowhere else."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path

from reglab.atomic import atomic_write
from reglab.identity import SCHEMA_VERSION, condition_id

RESULTS_FILE = "results.json"
CONFIG_KEY = "reglab_config"  # where a checkpoint carries the resolved config it was trained with
FINAL_METRICS = ("test/acc", "test/loss", "val/acc", "val/loss", "train/acc", "gen_gap",
                 "weights/zero_frac", "weights/small_frac", "weights/l1", "weights/l2", "weights/nonzero",
                 "weights/sparse_bytes", "weights/dense_bytes")
LIBRARIES = ("torch", "pytorch-lightning", "torchmetrics", "hydra-core", "wandb", "datasets", "numpy")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """HEAD of the project checkout, with '-dirty' when it has uncommitted changes; None outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def as_int(value):
    """A config value as an int where it is one; else as given (a record of a bad seed still says what it was)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def write_results(output_dir: str | Path, results: dict) -> Path:
    text = json.dumps(results, indent=2, sort_keys=False, default=str, allow_nan=True)
    return atomic_write(Path(output_dir) / RESULTS_FILE, lambda handle: handle.write(text.encode()))


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


@dataclass
class RunRecord:
    """What results.json holds, in the order it is written. The first block is every record's, failed ones
    included; the rest is filled in as the run gets that far (None: not reached, left out of the file)."""

    status: str  # running | completed | failed | diverged | interrupted
    study: str | None
    choices: dict  # Hydra's own group choices (model=cnn_small stays cnn_small)
    overrides: list
    seed: int
    condition_id: str  # equal for the seeds (and cross-validation folds) of one condition (reglab.identity)
    config: dict  # the resolved config
    output_dir: str
    started_at: float
    schema_version: int = SCHEMA_VERSION
    git_commit: str | None = None
    versions: dict | None = None
    torch_threads: int | None = None
    fold: int | None = None  # data.fold: the cross-validation fold tested on (a replicate, as the seed is)
    device_slot: int | None = None  # hydra/launcher=gpus: the GPU (or CPU worker) slot this job held
    resumed_from: str | None = None
    error: str | None = None
    input_kind: str | None = None  # the data's: image | tokens | features (reports group tasks by it)
    test_split: str | None = None
    split_sizes: dict | None = None
    metrics: dict | None = None
    history: list | None = None
    epochs: int | None = None
    weight_histogram: dict | None = None
    features: dict | None = None  # a linear model's non-zero features, by name (reglab.module.feature_record)
    n_parameters: int | None = None
    timing: dict | None = None
    peak_memory: dict | None = None
    distributed: dict | None = None
    calibration: dict | None = None
    test_predictions: dict | None = None  # {file, n, accuracy}: per-example predictions (reglab.predictions)
    wall_time_s: float | None = None

    ALWAYS = ("status", "study", "choices", "overrides", "seed", "condition_id", "config", "output_dir",
              "started_at", "schema_version")

    @classmethod
    def start(cls, cfg, label, started: float | None = None, status: str = "running") -> RunRecord:
        """A record of the run ``cfg`` (composed, may hold interpolations) labelled ``label`` (a RunLabel)."""
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(cfg, resolve=True)
        return cls(status=status, study=cfg.get("study"), choices=label.choices, overrides=list(label.overrides),
                   seed=as_int(cfg.seed), condition_id=condition_id(config), config=config,
                   fold=(config.get("data") or {}).get("fold"),
                   output_dir=str(cfg.paths.output_dir), started_at=time.time() if started is None else started)

    @classmethod
    def of_job(cls, cfg, label, device_slot: int | None = None) -> RunRecord:
        """A starting job's record: ``start``, and where it runs (commit, library versions, threads, GPU slot)."""
        import torch

        record = cls.start(cfg, label)
        record.git_commit, record.versions, record.torch_threads = (git_commit(), library_versions(),
                                                                    torch.get_num_threads())
        record.device_slot = device_slot
        return record

    def complete(self, trainer, module, datamodule, history) -> None:
        """The outcome of a run that trained and tested, read off what it trained with: the Lightning trainer, the
        ClassifierModule, the datamodule and the EpochHistory callback."""
        from reglab import profiling

        # trainer.test() replaces callback_metrics, so the last epoch's row supplies val/train.
        last_epoch = {k: v for k, v in (history.rows[-1] if history.rows else {}).items()
                      if k not in history.TIMING_KEYS}
        final = last_epoch | {k: to_float(v) for k, v in trainer.callback_metrics.items()}
        self.status, self.input_kind = "completed", datamodule.input_kind
        self.test_split, self.split_sizes = datamodule.test_split, datamodule.split_sizes
        self.metrics = {k: final[k] for k in FINAL_METRICS if k in final} | final
        self.history, self.epochs = history.rows, trainer.current_epoch
        weights = module.weight_summary(getattr(datamodule, "feature_names", None))
        self.weight_histogram, self.features = weights["weight_histogram"], weights["features"]
        self.n_parameters = weights["n_parameters"]
        self.timing, self.peak_memory = profiling.startup_timing(), profiling.peak_memory(module.device)

    def ranks_after_fit(self, trainer, module) -> None:
        """Under DDP, how far the ranks' penalty and weight norm drifted apart by the end of training (0: in
        step), measured before testing loads any checkpoint. Every rank calls it: the spread is a collective."""
        if trainer.world_size == 1:
            return
        from reglab import distributed

        penalty = sum(float(t) for t in module.penalty_terms().values())
        weight_l2 = module.weight_summary()["weight_l2"]
        self.distributed = {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
                            "penalty_rank_spread": distributed.rank_spread(penalty, module.device),
                            "weight_l2_rank_spread": distributed.rank_spread(weight_l2, module.device)}

    @classmethod
    def failed(cls, cfg, label, err: BaseException, started: float) -> RunRecord:
        record = cls.start(cfg, label, started, status="failed")
        record.fail(err)
        return record

    def fail(self, err: BaseException) -> None:
        from reglab.errors import DivergedError

        from reglab.errors import Interrupted

        self.status = ("interrupted" if isinstance(err, (KeyboardInterrupt, Interrupted)) else
                       "diverged" if isinstance(err, DivergedError) else "failed")
        self.error = f"{type(err).__name__}: {err}"
        self.wall_time_s = time.time() - self.started_at

    def run_fields(self) -> dict:
        """Who the run is and what it ran: what the W&B run's config shows, under results.json's keys."""
        return {k: getattr(self, k) for k in ("study", "choices", "overrides", "seed", "fold", "condition_id",
                                              "config")}

    def to_dict(self) -> dict:
        values = {"schema_version": self.schema_version} | {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if v is not None or k in self.ALWAYS}

    def write(self) -> Path:
        return write_results(self.output_dir, self.to_dict())
