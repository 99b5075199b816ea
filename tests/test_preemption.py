"""Preemption (issue 17): SIGTERM (a scheduler's warning) and SIGINT (Ctrl+C) stop a real training process at the
next step boundary, write last.ckpt there, record ``interrupted`` and exit with 128 + the signal; re-running the
command resumes and ends with the numbers of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

from conftest import run_cli, start_cli

pytestmark = pytest.mark.slow

# 8 epochs of 17 steps on digits; no periodic checkpoint, so a mid-epoch last.ckpt can only be the signal's.
RUN = ["data=digits", "model=cnn_small", "model.widths=[8,16]", "model.fc_hidden=16", "trainer.max_epochs=8",
       "reg=[l1,dropout]", "reg.dropout.p=0.2", "reg.l1.strength=1e-3", "logger=csv"]
STEPS_PER_EPOCH = 17


def start_until_checkpoint(args: list[str], run_dir):
    """``train.py args`` in a subprocess, returned once last.ckpt exists (the end of epoch 0)."""
    process = start_cli(*args, f"hydra.run.dir={run_dir}")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not checkpoint.is_file():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be signalled"
        time.sleep(0.01)
    return process, checkpoint


def assert_resumes_exactly(args: list[str], run_dir, expected: dict) -> None:
    """Re-running the command completes from last.ckpt with the uninterrupted run's final numbers."""
    resumed = run_cli(*args, f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["resumed_from"].endswith("last.ckpt")
    for key in ("test/acc", "test/loss", "val/loss", "weights/l1", "weights/l2"):
        assert results["metrics"][key] == expected["metrics"][key], key  # to the last digit


def run_to_completion(args: list[str], run_dir) -> dict:
    done = run_cli(*args, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run_to_completion(RUN, tmp_path_factory.mktemp("straight"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_checkpoints_at_a_step_marks_the_run_interrupted_and_the_rerun_resumes_exactly(
        tmp_path, uninterrupted, signum):
    run_dir = tmp_path / "run"
    process, checkpoint = start_until_checkpoint(RUN, run_dir)
    sent = time.time()
    process.send_signal(signum)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signum, stderr[-2000:]
    assert "interrupted: stopped by" in stderr and "Traceback" not in stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and signal.Signals(signum).name in results["error"]
    step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert checkpoint.stat().st_mtime >= sent - 0.01  # written at the signal (a step boundary), not before
    assert STEPS_PER_EPOCH <= step < 8 * STEPS_PER_EPOCH

    assert_resumes_exactly(RUN, run_dir, uninterrupted)
    # every epoch once in the CSV log, across the stop and the resume
    import pandas as pd

    logged = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert logged.dropna(subset=["val/acc"])["epoch"].astype(int).tolist() == list(range(8))


def submitit_job_pid(sweep) -> int | None:
    """The process submitit's local controller runs the job in (python -m submitit.core._submit <sweep>/...)."""
    from pathlib import Path

    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in args and any(str(sweep).encode() in a for a in args):
            return int(cmdline.parent.name)
    return None


def test_submitit_preemption_checkpoints_requeues_and_resumes_exactly(tmp_path, uninterrupted):
    """hydra/launcher=submitit_local runs a job the way hydra/launcher=slurm does on a node, with submitit's
    preemption handling: SIGUSR2 (submitit's preemption signal), a requeue, the same job started again."""
    sweep = tmp_path / "sweep"
    process = start_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *RUN,
                        f"hydra.sweep.dir={sweep}")
    deadline = time.monotonic() + 240
    while not list(sweep.glob("*/checkpoints/last.ckpt")):  # the end of epoch 0
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before its job was signalled"
        time.sleep(0.01)
    pid = submitit_job_pid(sweep)
    assert pid is not None
    os.kill(pid, signal.SIGUSR2)
    stderr = process.communicate(timeout=240)[1]
    assert process.returncode == 0, stderr[-3000:]

    job_log = next(sweep.glob(".submitit/*/*_0_log.err")).read_text()
    assert "stopped by SIGUSR2" in job_log and "handing SIGUSR2 on to the scheduler's handler" in job_log
    results = json.loads(next(sweep.glob("*/results.json")).read_text())
    assert results["status"] == "completed" and results["resumed_from"].endswith("last.ckpt")
    for key in ("test/acc", "test/loss", "val/loss", "weights/l1", "weights/l2"):
        assert results["metrics"][key] == uninterrupted["metrics"][key], key  # to the last digit


DDP_RUN = [*RUN, "trainer=ddp_cpu"]  # two gloo ranks, spawned by reglab


def child_pids(pid: int) -> list[int]:
    from pathlib import Path

    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            children.append(int(status.parent.name))
    return sorted(children)


@pytest.fixture(scope="module")
def uninterrupted_ddp(tmp_path_factory):
    return run_to_completion(DDP_RUN, tmp_path_factory.mktemp("straight_ddp"))


@pytest.mark.parametrize("target", ["launcher", "one_rank"])
def test_ddp_ranks_stop_together_at_a_step_and_resume_exactly(tmp_path, uninterrupted_ddp, target):
    """SIGTERM to the launching process (forwarded to the ranks) or to one rank alone (as when a node is
    preempted): every rank stops after the same step, one checkpoint is written, and the re-run ends with the
    numbers of the uninterrupted DDP run, RNG streams of every rank included."""
    run_dir = tmp_path / "run"
    process, checkpoint = start_until_checkpoint(DDP_RUN, run_dir)
    ranks = child_pids(process.pid)
    assert len(ranks) >= 2
    os.kill(process.pid if target == "launcher" else ranks[-1], signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "interrupted: stopped by SIGTERM" in stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert STEPS_PER_EPOCH <= step < 8 * STEPS_PER_EPOCH

    assert_resumes_exactly(DDP_RUN, run_dir, uninterrupted_ddp)
