"""One ``results.json`` per run: the only thing reports read. Written atomically and last, so a
partial run never looks complete."""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from reglab.atomic import atomic_write

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


def write_results(output_dir: str | Path, results: dict) -> Path:
    text = json.dumps(results, indent=2, sort_keys=False, default=str, allow_nan=True)
    return atomic_write(Path(output_dir) / RESULTS_FILE, lambda handle: handle.write(text.encode()))


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
