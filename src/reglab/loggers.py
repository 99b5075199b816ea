"""Loggers from ``cfg.logger``: each entry a Lightning logger by ``_target_`` (CSV, TensorBoard, MLflow, ...).
An entry marked ``_partial_`` is a factory that needs the run (its name, group, tags, config): reglab calls it
with ``run=RunContext``. W&B is such a factory (``wandb_logger``: offline unless an API key is configured, grouped
by condition, resumable)."""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
from pathlib import Path

from dataclasses import dataclass

from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from reglab.atomic import atomic_write
from reglab.errors import ConfigError, instantiate
from reglab.network import reachable

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_reachable(timeout: float = 3.0) -> bool:
    """Whether W&B's API answers within a few seconds (an online init without a network hangs far longer)."""
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return False
    return bool(url.hostname) and reachable(url.hostname, port, timeout)


def resolve_wandb_mode(requested: str) -> str:
    """The mode a run logs in: the user's WANDB_MODE wins; auto is online when an API key is configured. Online
    falls back to offline, with one warning, when W&B is unreachable, so a run never waits on the network."""
    if requested not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={requested!r}: allowed {list(WANDB_MODES)}")
    if os.environ.get("WANDB_MODE"):  # the user's environment always wins
        return os.environ["WANDB_MODE"]
    mode = ("online" if wandb_api_key_configured() else "offline") if requested == "auto" else requested
    if mode == "online" and not wandb_reachable():
        log.warning("W&B is unreachable: logging offline instead (upload later with `wandb sync`)")
        return "offline"
    return mode


@dataclass
class RunContext:
    """What a logger factory may need to know about the run. ``label``: a reglab.identity.RunLabel (W&B group,
    name and tags). ``config``: what the run's config shows in the logger, with the keys of results.json.
    ``rank_zero``: False on DDP ranks other than 0, which must not open a run of their own. ``resuming``: a
    resumed run logs into the run it started."""

    output_dir: Path
    label: object
    seed: int
    tags: list
    config: dict
    study: str | None = None
    rank_zero: bool = True
    resuming: bool = False


def build_loggers(logger_cfg, run: RunContext) -> list:
    loggers = []
    for key, entry in (logger_cfg or {}).items():
        if entry is None or "_target_" not in entry:  # off (null), or an experiment's settings for a logger
            continue                                   # this run does not select (cifar_fast's wandb histograms)
        logger = instantiate(entry, f"logger.{key}")
        if entry.get("_partial_"):
            logger = logger(run=run)
        if logger is not None:
            loggers.append(logger)
    return loggers


class KeptMetricsWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it never deletes an existing metrics.csv: what part of it stays is
    decided by the checkpoint the run resumes from (``keep_rows``, called by callbacks.CSVHistory)."""

    def _check_log_dir_exists(self) -> None:
        pass

    def rows_in_file(self) -> int:
        if not os.path.isfile(self.metrics_file_path):
            return 0
        with open(self.metrics_file_path, newline="") as handle:
            return max(0, sum(1 for _ in csv.reader(handle)) - 1)

    def keep_rows(self, count: int) -> None:
        """Keep the header and the first ``count`` rows (those logged before the checkpoint), written atomically."""
        self.metrics = []
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as handle:
            lines = list(csv.reader(handle))
        if not lines or count <= 0:
            os.remove(self.metrics_file_path)
            self.metrics_keys = []
            return
        header, rows = lines[0], lines[1:count + 1]

        def write(handle) -> None:
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows([header, *rows])
            handle.write(text.getvalue().encode())

        atomic_write(self.metrics_file_path, write)
        self.metrics_keys = list(header)


class CSVHistoryLogger(CSVLogger):
    """Lightning's CSV logger (``<run>/csv/metrics.csv``) that keeps every epoch across resumes: Lightning's own
    deletes the file when a resumed run opens it. Which rows stay is the checkpoint's to say: callbacks.CSVHistory
    records the row count in each checkpoint and trims to it on resume (a fresh start keeps none)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> KeptMetricsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeptMetricsWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_logger(run: RunContext, project: str = "reglab", entity: str | None = None, mode: str = "auto",
                 log_histograms_every_n_epochs: int = 1) -> WandbLogger | None:
    """The run's W&B logger, or None (mode disabled, or a DDP rank other than 0). Seeds of one condition share a
    group (each λ of a sweep its own); a study's runs share its name as a prefix and a tag.
    ``log_histograms_every_n_epochs`` is read by the WeightHistograms callback."""
    if not run.rank_zero:
        return None
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return None
    label = run.label
    run_tags = [f"{k}={label.choices.get(k)}" for k in ("data", "model", "reg", "optim") if label.choices.get(k)]
    run_tags += ([f"study={run.study}"] if run.study else []) + list(run.tags)
    run_id, previous_pid = wandb_run_id(Path(run.output_dir), run.resuming)

    def make(offline: bool) -> WandbLogger:
        logger = WandbLogger(project=project, entity=entity, group=label.wandb_group(run.study),
                             name=label.wandb_name(run.seed, run.config.get("fold")), tags=run_tags, save_dir=str(run.output_dir),
                             offline=offline, config=run.config, job_type="train", id=run_id, resume="allow")
        # Lightning always passes anonymous=None, which W&B 0.31 answers with a deprecation warning every run.
        logger._wandb_init.pop("anonymous", None)
        return logger

    logger = make(offline=(mode == "offline"))
    if run.resuming:
        attach_when_free(logger, previous_pid)
    elif mode == "online":
        logger = online_or_offline(logger, lambda: make(offline=True))
    return logger


def online_or_offline(logger: WandbLogger, offline_logger) -> WandbLogger:
    """Open an online run now; if W&B refuses it (a bad API key, a server error), log offline instead, with one
    warning, rather than fail or hang the run."""
    try:
        logger.experiment  # noqa: B018 (opens the run)
        return logger
    except Exception as err:
        log.warning("W&B online init failed (%s): logging offline instead", str(err).splitlines()[0][:200])
        finish_wandb(exit_code=1)
        return offline_logger()


def attach_when_free(logger: WandbLogger, previous_pid: int | None, patience_s: float = 60.0) -> None:
    """Open the resumed W&B run now. A killed process's W&B service outlives it for a few seconds and holds the
    run id meanwhile; a W&B init in that window fails and leaves the id taken for this process too, so wait
    for that service to exit first (Linux: its command line names the killed pid)."""
    import time

    deadline = time.monotonic() + patience_s
    while previous_pid and wandb_service_alive(previous_pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    logger.experiment  # noqa: B018 (opens the run)


def wandb_service_alive(pid: int) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"wandb-core") and str(pid).encode() in argv:
            return True
    return False


WANDB_ID_FILE = "wandb_run.json"


def wandb_run_id(output_dir: Path, resuming: bool) -> tuple[str, int | None]:
    """A fresh W&B run id for a new run; the one this folder's run started with when it resumes, and the pid of
    the process that last used it."""
    import json
    import uuid

    from reglab.atomic import atomic_write

    path = output_dir / WANDB_ID_FILE
    previous = None
    if resuming and path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = None
    run_id = previous["id"] if previous else uuid.uuid4().hex[:8]
    atomic_write(path, lambda handle: handle.write(json.dumps({"id": run_id, "pid": os.getpid()}).encode()))
    return run_id, previous.get("pid") if previous else None


def finish_wandb(exit_code: int = 0, summary: dict | None = None) -> Path | None:
    """Close the W&B run, so the next job of a multirun starts its own; ``summary``: the final metrics, as
    results.json has them (W&B's own summary would hold only the last value logged of each). Returns the run's
    folder when it was an offline run (what ``wandb sync`` uploads), else None."""
    import sys

    if "wandb" not in sys.modules:
        return None
    import wandb

    if wandb.run is None:
        return None
    offline_dir = Path(wandb.run.dir).parent if wandb.run.offline else None
    if summary:
        wandb.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    wandb.finish(exit_code=exit_code)
    return offline_dir
