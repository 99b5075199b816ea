"""A NaN mid-run: the run stops at that step, says why, keeps its last good checkpoint, records 'diverged'."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT, run_cli
from reglab.errors import DivergedError
from reglab.regularizers.base import Regularizer
from reglab.run import train

pytestmark = pytest.mark.slow


class NaNAtStep(Regularizer):
    """A penalty that is 0 until optimizer step ``step``, then NaN (fault injection)."""

    name = "nan_at"

    def __init__(self, step: int = 5):
        super().__init__()
        self.step, self.calls = int(step), 0

    def configure(self, model) -> None:
        self.params = [next(model.parameters())]

    def penalty(self, model):
        value = float("nan") if self.calls >= self.step else 0.0
        self.calls += 1
        return self.params[0].sum() * 0 + value


def test_nan_at_step_k_stops_the_run_and_keeps_the_last_good_checkpoint(make_config):
    cfg = make_config("data=digits", "+reg.nan_at={_target_: test_failures.NaNAtStep, step: 5}",
                      "checkpoint_every_n_steps=2", "trainer.max_epochs=2")
    with pytest.raises(DivergedError) as raised:
        train(cfg)
    message = str(raised.value)
    assert "loss is not finite at step 5 (epoch 0)" in message
    assert "data loss" in message and "nan_at nan" in message and "NaNAtStep(" in message and "step=5" in message
    run_dir = ROOT / cfg.paths.output_dir
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and "step 5" in results["error"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # the last good state, saved before the NaN
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())


def test_a_diverging_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "data=digits", "model=cnn_small", "model.widths=[8]", "model.fc_hidden=8",
                   "trainer.max_epochs=1", "logger=csv", "+reg.nan_at={_target_: test_failures.NaNAtStep, step: 3}",
                   "reg.nan_at.step=3,1000", f"hydra.sweep.dir={sweep}",
                   env={"PYTHONPATH": str(ROOT / "tests")})
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.rglob("results.json"))
    assert statuses == ["completed", "diverged"]


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, mode):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    args = (["-m", "reg=none,l1"] if mode == "multirun" else []) + ["data=digits", f"{key}={blocker}/out"]
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {key}='{blocker}/out': {blocker} is a file, not a folder (the run's "
                                   "logs, checkpoints and results.json are written there)")


def test_a_folder_without_write_permission_is_named_before_hydra_writes(tmp_path, monkeypatch, capsys):
    import os

    from omegaconf import OmegaConf

    from reglab.hydra_callbacks import OutputWritable

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # root may write anywhere, so the permission answer is what the test sets
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    config = OmegaConf.create({"hydra": {"run": {"dir": str(locked / "run")}, "sweep": {"dir": str(locked)}}})
    for start, key in ((OutputWritable().on_run_start, "hydra.run.dir"),
                       (OutputWritable().on_multirun_start, "hydra.sweep.dir")):
        with pytest.raises(SystemExit) as stopped:
            start(config)
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {key}=") and f"{locked}, which is not writable by this user" in err \
            or f"{key}='{locked}': is not writable by this user" in err
    assert not (locked / "run").exists()
