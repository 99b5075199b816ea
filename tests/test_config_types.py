"""Config values of the wrong type, typos of top-level keys and a data.path that is a file: one line naming the key,
the value and what is allowed, before any data is read (issue 17)."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from reglab.errors import ConfigError


@pytest.mark.parametrize("overrides,message", [
    (["reg=l1", "reg.l1.strength=abc"], "reg.l1.strength='abc': must be a number >= 0"),
    (["reg=dropout", "reg.dropout.p=abc"], "reg.dropout.p='abc': a dropout rate must be in [0, 1)"),
    (["reg=elasticnet", "reg.elasticnet.strength=true"], "reg.elasticnet.strength=True: must be a number >= 0"),
    (["optim.lr=abc"], "optim.lr='abc': must be a number > 0"),
    (["optim.warmup_epochs=soon"], "optim.warmup_epochs='soon': must be >= 0"),
    (["seed=-5"], "seed=-5: must be an integer in [0, 2**32)"),
    (["seed=1.5"], "seed=1.5: must be an integer in [0, 2**32)"),
    (["+seeed=3"], "seeed: not a config key (a typo?); top-level keys are"),
])
def test_wrong_types_and_typos_are_one_line_errors_naming_the_key(make_config, overrides, message):
    from reglab.preflight import validate
    from reglab.regularizers import drop_unselected

    cfg = make_config("data=digits", *overrides)
    drop_unselected(cfg.reg)
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_data_path_that_is_a_file_says_so(make_config, tmp_path):
    from reglab.preflight import validate

    a_file = tmp_path / "train.parquet"
    a_file.write_bytes(b"not a folder")
    with pytest.raises(ConfigError, match="is a file; give the folder that holds the data files"):
        validate(make_config("data=cifar10", f"data.path={a_file}"))


@pytest.mark.slow
def test_a_sweep_job_with_a_bad_value_leaves_a_failed_results_json(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "data=digits", "reg=l1", "reg.l1.strength=1e-4,abc", "trainer.max_epochs=1", "logger=csv",
                   "model=cnn_small", "model.widths=[8]", "model.fc_hidden=8", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sweep.rglob("results.json")]
    assert sorted(r["status"] for r in records) == ["completed", "failed"]
    failed = next(r for r in records if r["status"] == "failed")
    assert "reg.l1.strength='abc': must be a number >= 0" in failed["error"]
    assert "error: reg.l1.strength='abc'" in done.stderr and "Traceback" not in done.stderr
