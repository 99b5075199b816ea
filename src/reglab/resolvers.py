"""OmegaConf resolvers the configs use. Registered by train.py before Hydra composes anything."""

import os
from datetime import datetime

from omegaconf import OmegaConf


MAX_NAME = 200  # file systems allow 255 bytes per name


def path_safe(text: str) -> str:
    """A job folder is named by its overrides; a '/' in a value (data.path=../data/x) must not nest folders, and
    a long list of overrides must not exceed the file system's name limit (cut, plus a hash of the whole)."""
    name = text.replace("/", "_")
    if len(name.encode()) > MAX_NAME:
        import hashlib

        name = name.encode()[:MAX_NAME - 17].decode(errors="ignore") + "-" + hashlib.sha1(name.encode()).hexdigest()[:16]
    return name


LONG_VALUE = 40  # an override longer than this goes into the folder name's hash, not in full


def job_folder(task_overrides, exclude_keys) -> str:
    """A sweep job's folder: its overrides as Hydra's override_dirname writes them (sorted, 'reg=dropout,seed=0'),
    except that a path (data.path=../shared/data/cifar10-sample) or a long value is not spelled out: those go
    into one short hash at the end ('reg=dropout,seed=0,h-3fa2c1d0'), so names stay short and readable and two
    jobs that differ only there still get two folders. A sweep without paths or long values keeps exactly the
    names it always had, so its finished jobs are still found and skipped."""
    import hashlib

    lines, hidden = [], []
    for line in sorted(str(o) for o in task_overrides):
        key = line.split("=", 1)[0].lstrip("+~")
        if key in set(exclude_keys):
            continue
        value = line.split("=", 1)[1] if "=" in line else ""
        (hidden if "/" in value or len(line) > LONG_VALUE else lines).append(line)
    if hidden:
        lines.append("h-" + hashlib.sha1(",".join(hidden).encode()).hexdigest()[:8])
    return path_safe(",".join(lines))


def launch_stamp() -> str:
    """The run folder's name. Under torchrun or srun every rank runs Hydra itself, a moment apart: they must
    agree on one folder, so it is named by the launch, not by the clock."""
    if "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        return f"torchrun-{run_id if run_id != 'none' else os.environ.get('MASTER_PORT', 'run')}"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def gpu_count() -> int:
    """Visible GPUs (at least 1): how many jobs hydra/launcher=gpus runs at once."""
    import torch

    return max(1, torch.cuda.device_count())


def unless_dry_run(value, otherwise=None, *, _root_):
    """``value``, or ``otherwise`` in a dry run (``dry_run=true``): a dry run writes nothing into job folders, so
    the Hydra settings that write there (.hydra/, train.log) point elsewhere."""
    return otherwise if _root_.get("dry_run", False) else value


def register() -> None:
    OmegaConf.register_new_resolver("path_safe", path_safe, replace=True)
    OmegaConf.register_new_resolver("job_folder", job_folder, replace=True)
    OmegaConf.register_new_resolver("launch_stamp", launch_stamp, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("gpu_count", gpu_count, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("unless_dry_run", unless_dry_run, replace=True)
    OmegaConf.register_new_resolver("devnull", lambda: os.devnull, replace=True)
