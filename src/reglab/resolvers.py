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


SWEPT_KEYS = "REGLAB_SWEPT_KEYS"  # the keys a sweep varies, set where it starts (sweep_started) for its jobs


def job_folder(task_overrides, exclude_keys) -> str:
    """A sweep job's folder: the keys the sweep varies, as key=value, sorted ('reg=dropout,seed=0'). Everything
    else the job was given (the overrides all its jobs share, a path such as data.path=..., a value longer than
    40 characters) goes into one short hash at the end ('reg=dropout,seed=0,h-3fa2c1d0'): names stay short,
    readable and safe to paste into any reglab command, and two sweeps that differ only there still get two
    folders. The full overrides are in each job's results.json and .hydra/overrides.yaml."""
    value = os.environ.get(SWEPT_KEYS)
    return folder_name(task_overrides, exclude_keys, None if value is None else set(filter(None, value.split(","))))


def folder_name(task_overrides, exclude_keys, swept: set | None) -> str:
    """job_folder with the swept keys given; ``swept=None`` (not known) spells out every short override."""
    import hashlib

    lines, hidden = [], []
    for line in sorted(str(o) for o in task_overrides):
        key = line.split("=", 1)[0].lstrip("+~")
        if key in set(exclude_keys):
            continue
        value = line.split("=", 1)[1] if "=" in line else ""
        shown = (swept is None or key in swept) and "/" not in value and len(line) <= LONG_VALUE
        (lines if shown else hidden).append(line)
    if hidden:
        lines.append("h-" + hashlib.sha1(",".join(hidden).encode()).hexdigest()[:8])
    return path_safe(",".join(lines))


def sweep_started(config) -> None:
    """Where a sweep starts, before any job: note the keys it varies (a command-line list, range() or glob, or
    its sweeper's params) for its jobs' folder names. The jobs (this process, loky workers, submitit jobs) inherit
    the environment. Unparseable overrides leave it unset: then every short override is spelled out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [str(line) for line in config.hydra.overrides.task]
    params = config.hydra.sweeper.get("params") or {}
    lines += [f"{key}={value}" for key, value in params.items()]
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except Exception:  # noqa: BLE001 - Hydra itself reports a bad override; the folder names fall back
        os.environ.pop(SWEPT_KEYS, None)
        return
    swept = sorted({o.key_or_group for o in overrides if o.is_sweep_override()})
    os.environ[SWEPT_KEYS] = ",".join(swept)


def legacy_folder_names(task_overrides, exclude_keys, override_dirname: str) -> list[str]:
    """What reglab named a job's folder before: every override spelled out (Hydra's override_dirname), then every
    short override spelled out with paths hashed. A re-run takes such a folder over (reglab.run)."""
    return [path_safe(override_dirname), folder_name(task_overrides, exclude_keys, None)]


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
    # oc.select falls back only where a key is missing; `study: null` is present, and would name a sweep "None".
    OmegaConf.register_new_resolver("if_null", lambda value, fallback: fallback if value is None else value,
                                    replace=True)
    OmegaConf.register_new_resolver("launch_stamp", launch_stamp, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("gpu_count", gpu_count, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("unless_dry_run", unless_dry_run, replace=True)
    OmegaConf.register_new_resolver("devnull", lambda: os.devnull, replace=True)
