"""Loggers: W&B (offline unless an API key is configured) and CSV (always on)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, WandbLogger

from reglab.errors import ConfigError

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    if requested not in WANDB_MODES:
        raise ConfigError(f"logger.wandb.mode={requested!r}: allowed {list(WANDB_MODES)}")
    if os.environ.get("WANDB_MODE"):  # the user's environment always wins
        return os.environ["WANDB_MODE"]
    if requested == "auto":
        return "online" if wandb_api_key_configured() else "offline"
    return requested


def build_loggers(logger_cfg, output_dir: str | Path, choices: dict, tags: list[str], config: dict,
                  study: str | None = None, wandb_allowed: bool = True, resuming: bool = False) -> list:
    """``wandb_allowed``: False on DDP ranks other than 0, which must not open a W&B run. ``resuming``: a resumed
    run logs into the W&B run it started (its id is kept in the output folder)."""
    loggers = [CSVLogger(save_dir=str(output_dir), name="csv", version="")]
    wandb_cfg = (logger_cfg or {}).get("wandb")
    if wandb_cfg is not None and wandb_allowed:
        mode = resolve_wandb_mode(wandb_cfg.get("mode", "auto"))
        if mode != "disabled":
            # Seeds of one configuration share a group; a study's runs share its name as a prefix and a tag.
            group = "/".join(([study] if study else []) + [choices[k] for k in ("data", "model", "reg")])
            run_tags = [f"{k}={v}" for k, v in choices.items()] + ([f"study={study}"] if study else []) + list(tags)
            loggers.append(WandbLogger(project=wandb_cfg.get("project", "reglab"), entity=wandb_cfg.get("entity"),
                                       group=group, tags=run_tags, save_dir=str(output_dir),
                                       offline=(mode == "offline"), config=config, job_type="train",
                                       id=wandb_run_id(Path(output_dir), resuming), resume="allow"))
            if resuming:
                attach_when_free(loggers[-1])
    return loggers


def attach_when_free(logger: WandbLogger, patience_s: float = 60.0) -> None:
    """Open the resumed W&B run now. A killed process's W&B service outlives it for a few seconds and still
    holds the run id ("run ID ... is in use"); wait for it to let go rather than fail the resumed run."""
    import time

    deadline = time.monotonic() + patience_s
    while True:
        try:
            logger.experiment  # noqa: B018 (opens the run)
            return
        except Exception as err:  # wandb raises its own ServerResponseError
            if "in use" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(output_dir: Path, resuming: bool) -> str:
    """A fresh W&B run id for a new run; the one this folder's run started with when it resumes."""
    import uuid

    from reglab.atomic import atomic_write

    path = output_dir / WANDB_ID_FILE
    if resuming and path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:8]
    atomic_write(path, lambda handle: handle.write(run_id.encode()))
    return run_id


def finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run, so the next job of a multirun starts its own."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=exit_code)
