"""End-to-end: real (short) Lightning runs on data the tests make, in-process and from the CLI."""

from __future__ import annotations

import json
import re
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from reglab.errors import ConfigError
from reglab.results import FINAL_METRICS
from reglab.run import train

pytestmark = pytest.mark.slow

REQUIRED_KEYS = {"status", "choices", "config", "seed", "metrics", "history", "wall_time_s", "git_commit",
                 "test_split", "versions"}


def cfg_overrides(results) -> list[str]:
    """The overrides make_config passed, minus the seed and settings that only change speed or logging."""
    from hydra.core.hydra_config import HydraConfig

    return [o for o in HydraConfig.get().overrides.task if not o.startswith(("trainer.accelerator", "seed"))]


def read_results(cfg) -> dict:
    return json.loads((ROOT / cfg.paths.output_dir / "results.json").read_text())


def test_digits_run_writes_complete_results(make_config):
    cfg = make_config("data=digits", "reg=[l1,dropout]", "reg.l1.strength=1e-3")
    returned = train(cfg)
    results = read_results(cfg)
    assert REQUIRED_KEYS <= set(results)
    assert results["status"] == "completed" and returned["status"] == "completed"
    assert {k: results["choices"][k] for k in ("data", "model", "reg", "optim")} == {
        "data": "digits", "model": "cnn_small", "reg": "l1+dropout", "optim": "adamw"}
    assert results["overrides"] == [o for o in cfg_overrides(results) if not o.startswith("logger")]
    assert results["schema_version"] == 2 and len(results["condition_id"]) == 10
    assert set(FINAL_METRICS) <= set(results["metrics"])
    assert all(math.isfinite(results["metrics"][k]) for k in FINAL_METRICS)
    assert results["metrics"]["test/acc"] > 0.3  # 10 classes: well above chance after 2 epochs
    assert results["config"]["reg"]["dropout"]["p"] is None  # each site at its model's recommended rate
    assert [row["epoch"] for row in results["history"]] == [0, 1]
    last = results["history"][-1]
    assert last["train/reg_loss"] > 0
    assert last["train/loss"] == pytest.approx(last["train/data_loss"] + last["train/reg_loss"], rel=1e-5)
    assert results["metrics"]["gen_gap"] == pytest.approx(last["train/acc"] - last["val/acc"], abs=1e-6)
    assert (ROOT / cfg.paths.output_dir / "csv" / "metrics.csv").is_file()
    # Per-example test predictions: one per test example, their accuracy the run's test/acc.
    from reglab import predictions

    saved = predictions.load(ROOT / cfg.paths.output_dir)
    assert len(saved["label"]) == results["split_sizes"]["test"] == results["test_predictions"]["n"]
    assert float((saved["pred"] == saved["label"]).mean()) == pytest.approx(results["metrics"]["test/acc"], abs=1e-6)


@pytest.mark.parametrize("layout,test_split", [("cifar_parquet", "validation"), ("cifar_imagefolder", "test"),
                                               ("cifar_python_batches", "test")])
def test_cifar_layouts_train_end_to_end(request, make_config, layout, test_split):
    path = request.getfixturevalue(layout)
    cfg = make_config("reg=elasticnet", f"data.path={path}", "data.val_size=20", "data.train_eval_size=20")
    train(cfg)
    results = read_results(cfg)
    assert results["status"] == "completed" and results["test_split"] == test_split
    assert results["choices"]["data"] == "cifar10" and results["choices"]["reg"] == "elasticnet"
    assert results["history"][-1]["train/reg_loss"] > 0


def test_same_seed_same_metrics_on_cpu(make_config, tmp_path):
    first = train(make_config("data=digits", "reg=dropout", "seed=3"))
    second = train(make_config("data=digits", "reg=dropout", "seed=3"))
    other = train(make_config("data=digits", "reg=dropout", "seed=4"))
    assert first["metrics"] == second["metrics"]
    assert [r["train/loss"] for r in first["history"]] == [r["train/loss"] for r in second["history"]]
    assert first["metrics"]["train/loss"] != other["metrics"]["train/loss"]


def test_wandb_offline_run_is_written_and_finished(make_config):
    import wandb

    cfg = make_config("data=digits", "logger=default", "trainer.max_epochs=1")
    train(cfg)
    runs = list((ROOT / cfg.paths.output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    assert wandb.run is None  # finished, so the next job of a multirun gets its own run


def test_failed_run_still_writes_results(make_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = make_config(f"data.path={empty}")
    with pytest.raises(ConfigError, match="no CIFAR-10 found"):
        train(cfg)
    results = read_results(cfg)
    assert results["status"] == "failed" and "no CIFAR-10 found" in results["error"]


@pytest.mark.parametrize("override,message", [
    ("reg.l1.strength=-1", "reg.l1.strength=-1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0"),
    ("data.path=/does/not/exist", "data.path='/does/not/exist'"),
])
def test_cli_bad_value_is_one_line_error(tmp_path, override, message):
    started = time.time()
    done = run_cli("data=cifar10", "reg=l1", override, f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert time.time() - started < 60  # no data loaded, no model built


def test_cli_multirun_names_job_folders_and_report_reads_them(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "data=digits", "reg=none,l1", "trainer.max_epochs=1", "logger=csv", "tags=[a/b]",
                   "model.widths=[8]", "model.convs_per_stage=1", "model.fc_hidden=16",
                   f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    job_dirs = sorted(p.parent.name for p in sweep.rglob("results.json"))
    assert len(job_dirs) == 2 and all("reg=" in name for name in job_dirs)
    assert all(p.parent.parent == sweep for p in sweep.rglob("results.json"))  # '/' in a value does not nest
    assert any(name.endswith("reg=l1") or "reg=l1," in name for name in job_dirs)

    report = subprocess.run([str(Path(sys.executable).parent / "reglab-report"), str(sweep), "--out",
                             str(tmp_path / "report")], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0].startswith("| Regularizer | n | Test acc. (%)")
    assert lines[2].startswith("| none | 1 |") and lines[3].startswith("| l1 | 1 |")
    assert (tmp_path / "report" / "table.csv").is_file() and (tmp_path / "report" / "table.tex").is_file()
    # Only the swept key is spelled out; what every job shares (data=digits, a path-like tags=[a/b], ...) is in
    # one short hash, the same for both jobs, and every override is in results.json.
    assert [name.split(",h-")[0] for name in job_dirs] == ["reg=l1", "reg=none"], job_dirs
    assert len({name.split(",h-")[1] for name in job_dirs}) == 1 and re.fullmatch(r"reg=l1,h-[0-9a-f]{8}",
                                                                                    job_dirs[0])
    results = json.loads((sweep / job_dirs[0] / "results.json").read_text())
    assert {"data=digits", "reg=l1"} <= set(results["overrides"]) and results["config"]["tags"] == ["a/b"]
    assert "tags=[a/b]" in (sweep / job_dirs[0] / ".hydra" / "overrides.yaml").read_text()
    other = run_cli("-m", "data=digits", "reg=l1", "trainer.max_epochs=1", "logger=csv", "model.widths=[8]",
                    "model.convs_per_stage=1", "model.fc_hidden=16", f"hydra.sweep.dir={sweep}", "dry_run=true")
    assert other.returncode == 0 and "skip (completed)" not in other.stdout  # other shared values: another hash
    assert f"{sweep}/h-" in other.stdout, other.stdout  # nothing swept: the hash alone

    # Folders named the old ways (every override spelled out; every short override spelled out) are taken over
    # by a re-run, not run again.
    for name in job_dirs:
        reg = "l1" if "reg=l1" in name else "none"
        spelled = ["data=digits", f"reg={reg}", "trainer.max_epochs=1", "model.widths=[8]",
                   "model.convs_per_stage=1", "model.fc_hidden=16"]
        oldest = ",".join(sorted(spelled + ["tags=[a/b]"])).replace("/", "_")
        shorter = ",".join(sorted(spelled)) + ",h-ce021aa6"  # the hash of tags=[a/b] alone
        (sweep / name).rename(sweep / (oldest if reg == "l1" else shorter))
    again = run_cli("-m", "data=digits", "reg=none,l1", "trainer.max_epochs=1", "logger=csv", "tags=[a/b]",
                    "model.widths=[8]", "model.convs_per_stage=1", "model.fc_hidden=16",
                    f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 skipped (already complete)" in again.stdout + again.stderr
    assert sorted(p.parent.name for p in sweep.rglob("results.json")) == job_dirs


def test_a_sweep_without_a_study_gets_a_timestamped_folder_and_a_study_its_own(tmp_path):
    """`study: null` is in the config: the sweep folder falls back to the time (not "None", which every ad-hoc
    sweep would share)."""
    plain = run_cli("-m", "data=digits", "reg=none,l1", f"paths.log_dir={tmp_path}", "dry_run=true")
    study = run_cli("-m", "experiment=demo", f"paths.log_dir={tmp_path}", "dry_run=true")
    assert plain.returncode == 0 and study.returncode == 0, plain.stderr[-2000:] + study.stderr[-2000:]
    assert re.search(rf"-> {tmp_path}/multiruns/\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d/reg=l1,h-", plain.stdout), plain.stdout
    assert f"-> {tmp_path}/multiruns/demo/reg=l1," in study.stdout and "None" not in plain.stdout + study.stdout


def folder_state(sweep: Path) -> dict:
    """Every file in the sweep's job folders, with its size and modification time."""
    return {str(p.relative_to(sweep)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sweep.rglob("*") if p.is_file() and p.parent != sweep}


def test_multirun_survives_a_failing_job_and_resumes_without_rerunning(tmp_path):
    sweep = tmp_path / "sweep"
    # experiment=demo tunes reg.l1 for every job; the none job ignores it, the l1 job fails on it
    args = ["-m", "experiment=demo", "reg=none,l1", "reg.l1.strength=-1", "trainer.max_epochs=1", "logger=csv",
            f"hydra.sweep.dir={sweep}"]

    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]  # the failing job did not stop the sweep
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.rglob("results.json")}
    by_reg = {r["choices"]["reg"]: r for r in results.values()}
    assert by_reg["none"]["status"] == "completed"
    assert by_reg["l1"]["status"] == "failed" and "reg.l1.strength=-1" in by_reg["l1"]["error"]
    trained = lambda done: (done.stdout + done.stderr).count("test/acc=")  # noqa: E731
    assert trained(first) == 1

    before = folder_state(sweep)
    dry = run_cli(*args, "dry_run=true")
    assert dry.returncode == 0
    assert "[dry-run] skip (completed)" in dry.stdout and "reg.l1.strength=-1" in dry.stderr
    assert trained(dry) == 0
    assert folder_state(sweep) == before  # nothing written into the job folders: no .hydra/, train.log, results

    again = run_cli(*args)
    assert again.returncode == 0
    assert again.stdout.count("skip (completed)") == 1  # the finished job is not run again
    assert trained(again) == 0
    finished = next(name for name, result in results.items() if result["status"] == "completed")
    assert json.loads((sweep / finished / "results.json").read_text()) == results[finished]


def test_optuna_search_runs_trials_as_normal_runs(tmp_path):
    sweep = tmp_path / "search"
    done = run_cli("-m", "hparams_search=l1", "data=digits", "model=cnn_small", "trainer.max_epochs=1",
                   "logger=csv", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sweep.rglob("results.json")]
    assert len(results) == 2 and all(r["status"] == "completed" for r in results)
    assert all(r["study"] == "hparams_l1" and r["choices"]["reg"] == "l1" for r in results)
    strengths = {r["config"]["reg"]["l1"]["strength"] for r in results}
    assert len(strengths) == 2 and all(1e-6 <= s <= 1e-2 for s in strengths)
    best = (sweep / "optimization_results.yaml").read_text()
    assert "reg.l1.strength" in best and "best_value" in best


def test_any_lightning_logger_and_any_torch_optimizer_plug_in_from_config_alone(make_config):
    """logger=tensorboard (a Lightning logger by _target_) writes event files; optim._target_ takes any torch
    optimizer, its arguments beside it."""
    cfg = make_config("data=digits", "logger=[tensorboard,csv]", "optim._target_=torch.optim.RMSprop",
                      "~optim.betas", "+optim.alpha=0.9", "trainer.max_epochs=1")
    results = train(cfg)
    assert results["status"] == "completed" and results["config"]["optim"]["_target_"] == "torch.optim.RMSprop"
    run_dir = ROOT / cfg.paths.output_dir
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "csv" / "metrics.csv").is_file()
    # and TensorBoard itself (installed with reglab) reads them back
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert "val/acc" in events.Tags()["scalars"]


@pytest.mark.parametrize("overrides,message", [
    (["optim._target_=torch.optim.RMSprop"], "optim.betas: not an argument of RMSprop; allowed ['lr', 'alpha'"),
    (["optim._target_=torch.optim.RMSprop", "~optim.betas", "reg=weight_decay"],
     "reg=weight_decay is decoupled decay, but optim._target_=torch.optim.RMSprop would couple it"),
    (["optim._target_=torch.nn.Linear"], "optim._target_='torch.nn.Linear': not an importable torch.optim.Optimizer"),
    (["optim._partial_=false"], "optim._partial_: must be true"),
])
def test_a_plugged_in_optimizer_is_checked(make_config, overrides, message):
    from reglab.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        train(make_config("data=digits", "trainer.max_epochs=1", *overrides))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_job_returns_its_optimized_metric_to_the_sweeper(make_config):
    from reglab.run import main

    cfg = make_config("data=digits", "trainer.max_epochs=1", "optimized_metric=test/loss")
    returned = main(cfg)
    assert returned == read_results(cfg)["metrics"]["test/loss"] and returned != read_results(cfg)["metrics"]["val/acc"]


def test_a_dry_run_into_a_completed_folder_of_another_config_changes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data=digits", "model=cnn_small", "model.widths=[4,8]", "model.fc_hidden=8", "trainer.max_epochs=1",
            "logger=csv", f"hydra.run.dir={run_dir}"]
    assert run_cli(*args).returncode == 0
    before = {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
              for p in run_dir.rglob("*") if p.is_file()}
    dry = run_cli(*args, "seed=7", "dry_run=true")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert f"[dry-run] would move aside a completed run of another config: {run_dir}" in dry.stdout
    assert "[dry-run] would run" in dry.stdout
    after = {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
             for p in run_dir.rglob("*") if p.is_file()}
    assert after == before and not (run_dir / "replaced").exists()


@pytest.mark.parametrize("override,message", [
    ("trainer.max_epoch=3", "trainer.max_epoch: not a config key; did you mean trainer.max_epochs?"),
    ("model.widht=[8]", "model.widht: not a config key; did you mean model.widths?"),
    ("trainer.max_steps=3", "a Lightning Trainer argument that conf/trainer does not set; add it with "
                            "+trainer.max_steps=VALUE"),
])
def test_a_mistyped_key_is_one_line_naming_the_nearest(tmp_path, override, message):
    done = run_cli("data=digits", override, f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert message in done.stderr and (override.startswith("trainer.max_steps") or "+" not in done.stderr)
    assert not (tmp_path / "run").exists()


def test_a_sweep_jobs_checkpoint_path_works_as_typed_in_eval(tmp_path):
    """A sweep job's folder holds ',' and '=' (reg=dropout,seed=0), which Hydra's grammar reads as syntax."""
    from reglab.overrides import hydra_value, quote_path_values

    run_dir = tmp_path / "reg=dropout,seed=0"
    done = run_cli("data=digits", "reg=dropout", "trainer.max_epochs=1", "data.train_size=200",
                   f"hydra.run.dir={hydra_value(str(run_dir))}", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert f"evaluate: python eval.py ckpt={ckpt} mc_samples=30" in done.stdout + done.stderr
    evaluated = run_cli(f"ckpt={ckpt}", "mc_samples=2", script="eval.py", timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert (run_dir / "evaluation.json").is_file()
    assert quote_path_values(["ckpt='already/quoted'", "mc_samples=3"], ("ckpt",)) == ["ckpt='already/quoted'",
                                                                                        "mc_samples=3"]
