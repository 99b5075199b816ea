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
