"""Where a run's time and memory go: wall-clock marks from process start to the first training step, and peak
memory. Both land in results.json (``timing``, ``peak_memory``); scripts/bench.py reads them."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

# Phase name -> the time.time() at which it ended, in the order a run passes them.
MARKS: dict[str, float] = {}

PHASES = {  # mark -> the name of the phase that ends there
    "imports_started": "python_and_config_s",  # interpreter start, Hydra, config composition
    "imports_done": "imports_s",  # torch, Lightning, torchmetrics, reglab
    "train_started": "preflight_s",  # the pre-flight (skip check, every check: torch and Lightning load here)
    "resume_checked": "record_and_resume_s",  # the run's record, its commit, the checkpoint it resumes from
    "data_ready": "data_s",  # load (or decode and cache) the data, split statistics
    "model_built": "model_s",
    "trainer_built": "trainer_and_loggers_s",  # callbacks, CSV and W&B loggers, the Trainer
    "first_step": "fit_setup_s",  # Lightning's setup, optimizers, data loaders, up to the first batch
}


IMPORT_MARKS = ("imports_started", "imports_done")


def mark(name: str) -> None:
    MARKS[name] = time.time()


def start_job() -> None:
    """A job starts in this process. Only the first job of a process paid for the imports; a later one (a
    multirun's next job) is timed from its own start."""
    first = "train_started" not in MARKS
    kept = {k: v for k, v in MARKS.items() if first and k in IMPORT_MARKS}
    MARKS.clear()
    MARKS.update(kept)
    mark("train_started")


def process_started_at() -> float | None:
    """When this process started (Linux /proc, 10 ms resolution); None elsewhere: that phase is left out."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 (starttime), after pid and comm
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def startup_timing() -> dict[str, float]:
    """Seconds spent in each phase up to the first training step, and their total (``to_first_step_s``): from
    process start for a process's first job, from the job's start for a later one."""
    start = process_started_at() if "imports_started" in MARKS else None
    start = start if start is not None else MARKS.get("train_started")
    # Marks older than this process (a forked DDP rank inherits its parent's) are not its phases.
    points = [("start", start)] + sorted(((k, v) for k, v in MARKS.items() if start is not None and v >= start),
                                         key=lambda item: item[1])
    timing = {PHASES[name]: after - before for (_, before), (name, after) in zip(points, points[1:])
              if before is not None and name in PHASES}
    if start is not None and "first_step" in MARKS:
        timing["to_first_step_s"] = MARKS["first_step"] - start
    return timing


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB). /proc's VmHWM is per process image; ru_maxrss (the fallback,
    off Linux) carries a forking parent's peak over into the child on Linux, so it is not used there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def peak_memory(device) -> dict[str, float]:
    """Peak resident memory of this process (MB) and, on a GPU, the peak memory torch allocated on it."""
    import torch

    peak = {"cpu_peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        peak["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak
