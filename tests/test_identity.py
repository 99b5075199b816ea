"""Run identity: Hydra's own choices in results.json, the condition (config minus seed, paths and launch
settings), and W&B groups and names that match conditions."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import ROOT, run_cli, wandb_offline_records
from reglab.identity import RunLabel, bounded, condition, condition_id
from reglab.run import train

CONFIG = {"seed": 0, "study": "s", "tags": ["a"], "paths": {"output_dir": "/runs/reg=l1,seed=0"},
          "reg": {"l1": {"strength": 1e-3}}, "model": {"widths": [8, 16]}, "mc_samples": 0,
          "data": {"batch_size": 32, "num_workers": 0},
          "trainer": {"max_epochs": 3, "devices": 1, "accelerator": "cpu", "default_root_dir": "/runs/reg=l1,seed=0"},
          "callbacks": {"model_checkpoint": {"dirpath": "/runs/reg=l1,seed=0/checkpoints", "monitor": "val/acc"}}}


def variant(**changes) -> dict:
    config = copy.deepcopy(CONFIG)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


def test_condition_is_the_config_minus_seed_paths_and_launch():
    same = [variant(seed=3), variant(study="other", tags=[]),
            variant(trainer__devices=4, trainer__accelerator="gpu", trainer__default_root_dir="/x"),
            variant(callbacks__model_checkpoint__dirpath="/elsewhere/checkpoints",
                    paths={"output_dir": "/elsewhere"}),
            variant(data__num_workers=8), variant(mc_samples=30),
            variant(data__train_size=None)]  # a null setting is an absent one (knobs added later)
    for config in same:
        assert condition_id(config) == condition_id(CONFIG), condition(config)
    different = [variant(trainer__max_epochs=4), variant(reg={"l1": {"strength": 1e-4}}),
                 variant(model={"widths": [8, 32]}), variant(data__batch_size=64),
                 variant(callbacks__model_checkpoint__monitor="val/loss")]
    assert len({condition_id(c) for c in different} | {condition_id(CONFIG)}) == len(different) + 1
    assert condition(CONFIG) == {"reg.l1.strength": 1e-3, "model.widths": "[8, 16]", "data.batch_size": 32,
                                 "trainer.max_epochs": 3, "callbacks.model_checkpoint.monitor": "val/acc"}


def test_label_names_group_and_run():
    label = RunLabel({"data": "digits", "model": "cnn_small", "reg": "l1"}, ("reg.l1.strength=0.001",))
    assert label.wandb_group("l1_sweep") == "l1_sweep/reg.l1.strength=0.001"
    assert label.wandb_group(None) == "digits/cnn_small/l1/reg.l1.strength=0.001"
    assert label.wandb_name(2) == "digits/cnn_small/l1 reg.l1.strength=0.001 seed=2"
    plain = RunLabel({"data": "digits", "model": "cnn", "reg": "none"}, ("data=digits",))
    assert plain.wandb_group(None) == "digits/cnn/none"  # a choice already in the prefix is not repeated
    from reglab.identity import NOT_CONDITION, NOT_LABEL, override_key, under

    for launch in ("hydra/launcher=gpus", "hydra.sweep.dir=/x", "seed=3", "paths.log_dir=/y", "+trainer.devices=2",
                   "experiment=demo", "logger=csv"):
        assert under(override_key(launch), NOT_CONDITION + NOT_LABEL), launch
    assert not under(override_key("+reg.l1.strength=0.1"), NOT_CONDITION + NOT_LABEL)
    long = bounded("x" * 300, 128)
    assert len(long) == 128 and long != bounded("x" * 299 + "y", 128)


@pytest.mark.slow
def test_cnn_small_is_recorded_as_cnn_small(make_config):
    cfg = make_config("data=digits", "model=cnn_small", "trainer.max_epochs=1")
    results = json.loads((ROOT / cfg.paths.output_dir / "results.json").read_text()) if train(cfg) else None
    assert results["choices"]["model"] == "cnn_small" and results["choices"]["data"] == "digits"
    assert results["condition_id"] == condition_id(results["config"])


@pytest.mark.slow
def test_wandb_group_and_name_for_a_lambda_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "data=digits", "model=cnn_small", "reg=l1", "reg.l1.strength=1e-4,1e-3", "seed=0,1",
                   "study=lsweep", "trainer.max_epochs=1", "logger=default", "data.train_eval_size=100",
                   f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {}
    for results_file in sorted(sweep.glob("*/results.json")):
        results = json.loads(results_file.read_text())
        logs = list(results_file.parent.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(logs) == 1, logs  # each job its own W&B run
        runs[(results["config"]["reg"]["l1"]["strength"], results["seed"])] = (results, wandb_offline_records(logs[0]))
    assert len(runs) == 4
    groups = {key: logged["run"].run_group for key, (_, logged) in runs.items()}
    assert groups[(1e-4, 0)] == groups[(1e-4, 1)] != groups[(1e-3, 0)] == groups[(1e-3, 1)]  # one group a λ
    assert groups[(1e-4, 0)].startswith("lsweep/") and "reg.l1.strength=0.0001" in groups[(1e-4, 0)]
    assert "seed" not in groups[(1e-4, 0)]
    for (strength, seed), (results, logged) in runs.items():
        name = logged["run"].display_name
        assert name.startswith("digits/cnn_small/l1 ") and name.endswith(f"seed={seed}")
        assert f" reg.l1.strength={strength} " in name
        for key in ("test/acc", "val/acc", "gen_gap"):  # final metrics in the summary, as in results.json
            assert logged["summary"][key] == pytest.approx(results["metrics"][key])
        for key in ("study", "seed", "choices", "condition_id"):  # the config has results.json's keys
            assert logged["config"][key] == results[key]
        assert logged["config"]["config"]["reg"] == results["config"]["reg"]


def test_the_top_level_keys_are_declared_once_and_match_conf_train_yaml():
    """identity.TOP_LEVEL_KEYS is the one declaration: conf/train.yaml's groups and keys are exactly its keys, and
    the launch / not-condition lists and the typo check are derived from it."""
    from omegaconf import OmegaConf

    from reglab import identity, values
    from conftest import ROOT

    train = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "train.yaml"))
    groups = {next(iter(entry)) for entry in train.pop("defaults") if isinstance(entry, dict)}
    declared = (groups - {"hydra", "experiment", "hparams_search", "debug"}) | set(train)
    assert declared == set(identity.TOP_LEVEL_KEYS)
    assert set(identity.TOP_LEVEL_KEYS.values()) == {"condition", "replicate", "label", "launch"}
    assert values.TOP_LEVEL_KEYS is identity.TOP_LEVEL_KEYS
    assert set(identity.LAUNCH_KEYS) == {"paths", "dry_run", "skip_completed", "resume", "checkpoint_every_n_steps",
                                         "optimized_metric", "verbose", "report"}
    top_level_not_condition = {key for key in identity.NOT_CONDITION if "." not in key}
    assert top_level_not_condition == {"seed", "study", "tags", "logger", "mc_samples", "compile",
                                       *identity.LAUNCH_KEYS}
