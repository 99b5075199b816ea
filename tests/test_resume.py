"""Exact resume: a real training process SIGKILLed mid-epoch, re-run, ends with the same numbers as a run that
was never interrupted."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_cli, start_cli

pytestmark = pytest.mark.slow

# 3 epochs of 17 steps on digits, a checkpoint every 4 steps, dropout (RNG), an L1 warmup (schedule state) and
# DropConnect (a regularizer with a state of its own: its mask generator, carried in checkpoints).
RUN = ["data=digits", "model=cnn_small", "model.widths=[8,16]", "model.fc_hidden=16", "trainer.max_epochs=3",
       "reg=[l1,dropout,dropconnect]", "reg.dropout.p=0.2", "reg.dropconnect.p=0.3", "reg.l1.strength=1e-3",
       "reg.l1.warmup=linear", "reg.l1.warmup_epochs=2", "checkpoint_every_n_steps=4", "logger=default"]
COMPARED = ("test/acc", "test/loss", "val/acc", "val/loss", "train/acc", "train/loss", "train/reg/l1", "weights/l1",
            "weights/l2")


def kill_after_checkpoint(run_dir: Path, min_step: int) -> int:
    """Start the run, SIGKILL it once last.ckpt holds at least ``min_step`` steps; return that step."""
    process = start_cli(*RUN, f"hydra.run.dir={run_dir}")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if checkpoint.is_file():
                step = torch.load(checkpoint, weights_only=True)["global_step"]
                if step >= min_step:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return step
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        raise AssertionError("no checkpoint appeared")
    finally:
        if process.poll() is None:
            process.kill()


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = run_cli(*RUN, f"hydra.run.dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads((tmp_path / "straight" / "results.json").read_text())

    killed_at = kill_after_checkpoint(tmp_path / "killed", min_step=20)  # epoch 1, mid-epoch
    assert killed_at % 17 != 0 or killed_at > 20
    assert not (tmp_path / "killed" / "results.json").exists()  # written once, at the real end
    resumed = run_cli(*RUN, f"hydra.run.dir={tmp_path / 'killed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((tmp_path / "killed" / "results.json").read_text())

    assert results["status"] == "completed" and results["resumed_from"].endswith("last.ckpt")
    for key in COMPARED:
        assert results["metrics"][key] == expected["metrics"][key], key  # to the last digit
    assert [r["epoch"] for r in results["history"]] == [0, 1, 2]
    resumed_epoch = killed_at // 17
    for row, expected_row in zip(results["history"], expected["history"]):
        assert row["val/loss"] == expected_row["val/loss"] and row["weights/l1"] == expected_row["weights/l1"]
        if row["epoch"] != resumed_epoch:  # that epoch's train/* means cover the batches after the resume only
            assert row["train/loss"] == expected_row["train/loss"]
    # The CSV log holds every epoch once, as the uninterrupted run's does (Lightning's own CSV logger would have
    # deleted the rows from before the kill).
    straight_csv, resumed_csv = (pd.read_csv(tmp_path / name / "csv" / "metrics.csv")
                                 for name in ("straight", "killed"))
    assert resumed_csv[["epoch", "step"]].equals(straight_csv[["epoch", "step"]])
    for key in ("val/acc", "val/loss", "weights/l1", "lr-AdamW", "test/acc"):
        assert resumed_csv[key].equals(straight_csv[key]), key
    # W&B: the resumed process logged into the run the killed one started
    runs = sorted((tmp_path / "killed" / "wandb").glob("offline-run-*"))
    run_id = json.loads((tmp_path / "killed" / "wandb_run.json").read_text())["id"]
    assert len(runs) == 2 and all(p.name.endswith(run_id) for p in runs)


def test_resume_true_without_a_checkpoint_is_an_error(tmp_path):
    done = run_cli(*RUN, "resume=true", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2 and "resume=true: no unfinished run to resume" in done.stderr


def test_the_csv_writer_keeps_the_rows_a_checkpoint_covers_and_appends_after_them(tmp_path):
    from reglab.loggers import CSVHistoryLogger

    def rows() -> list[str]:
        return (tmp_path / "csv" / "metrics.csv").read_text().splitlines()

    first = CSVHistoryLogger(save_dir=str(tmp_path), name="csv", version="")
    for step in range(3):
        first.log_metrics({"val/acc": step / 10}, step=step)
    first.save()
    # A resumed process: Lightning's writer would delete the file here; this one keeps it until told.
    resumed = CSVHistoryLogger(save_dir=str(tmp_path), name="csv", version="")
    assert resumed.experiment.rows_in_file() == 3 and len(rows()) == 4
    resumed.experiment.keep_rows(2)  # the checkpoint was written after two rows
    resumed.log_metrics({"val/acc": 0.9, "val/loss": 1.5}, step=2)  # a new column rewrites the header
    resumed.save()
    assert rows() == ["step,val/acc,val/loss", "0,0.0,", "1,0.1,", "2,0.9,1.5"]
    fresh = CSVHistoryLogger(save_dir=str(tmp_path), name="csv", version="")
    fresh.experiment.keep_rows(0)  # a run that starts over keeps nothing of the old one
    fresh.log_metrics({"val/acc": 0.5}, step=0)
    fresh.save()
    assert rows() == ["step,val/acc", "0,0.5"]
