"""Broken checkpoints and reused folders (issue 17): a torn last.ckpt costs the steps since the previous readable
checkpoint, not the run; eval.py names the file; a folder holding a completed run of another config is refused."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

RUN = ["data=digits", "model=cnn_small", "model.widths=[8]", "model.fc_hidden=8", "trainer.max_epochs=2",
       "logger=csv"]


def interrupted_run(run_dir):
    """A finished run made to look unfinished: results.json says running, checkpoints stay."""
    done = run_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps(results | {"status": "running"}))
    return results


def test_a_torn_last_ckpt_falls_back_to_the_newest_readable_checkpoint_with_one_warning(tmp_path):
    run_dir = tmp_path / "run"
    interrupted_run(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # cut short, as a full disk leaves it
    others = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p != last]
    assert others  # the best-epoch checkpoint Lightning keeps beside it
    done = run_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["resumed_from"] == str(others[0])
    log = (run_dir / "train.log").read_text()
    assert f"not resuming from {last}: not a readable checkpoint" in log


def test_resume_true_and_eval_name_the_unreadable_file(tmp_path):
    run_dir = tmp_path / "run"
    interrupted_run(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(b"\x00\x01 random bytes, not a checkpoint")
    done = run_cli(*RUN, "resume=true", f"hydra.run.dir={run_dir}")
    assert done.returncode == 2
    assert f"resume=true: ckpt='{last}': not a readable checkpoint" in done.stderr and "Traceback" not in done.stderr
    evaluated = run_cli(f"ckpt={last}", script="eval.py")
    assert evaluated.returncode == 2 and "not a readable checkpoint" in evaluated.stderr
    assert "weights_only" not in evaluated.stderr and "Traceback" not in evaluated.stderr


def test_a_completed_folder_rerun_with_another_config_moves_the_old_run_aside(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli(*RUN, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    before = (run_dir / "results.json").read_text()
    other = run_cli(*RUN, "seed=7", f"hydra.run.dir={run_dir}")
    assert other.returncode == 0, other.stderr[-2000:]
    (moved,) = (run_dir / "replaced").iterdir()
    assert (moved / "results.json").read_text() == before  # the old run, byte for byte
    assert (moved / "checkpoints" / "last.ckpt").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["seed"] == 7 and results["status"] == "completed" and "resumed_from" not in results
    assert "held a completed run of another config: moved" in (run_dir / "train.log").read_text()
