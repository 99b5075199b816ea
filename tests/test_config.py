"""Every config group choice composes, and composition means what the README says."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import CONF, compose_config
from reglab.regularizers import Regularizer, build_regularizers, drop_unselected
from reglab.identity import RunLabel
from reglab.preflight import validate


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,choice", [(g, c) for g in ("data", "model", "reg", "optim", "trainer", "logger",
                                                            "callbacks", "experiment", "hparams_search", "debug", "paths",
                                                            "hydra")
                                           for c in group_choices(g)])
def test_every_group_choice_composes(tmp_path, group, choice):
    cfg = compose_config(tmp_path, [f"{group}={choice}"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    drop_unselected(cfg.reg)
    built = build_regularizers(cfg.reg)  # every selected regularizer builds from its yaml
    assert [r.name for r in built] == list(cfg.reg) and all(isinstance(r, Regularizer) for r in built)
    get_class(cfg.data._target_), get_class(cfg.model._target_)


def test_defaults(tmp_path):
    cfg = compose_config(tmp_path, [])
    choices = RunLabel.of(cfg).choices
    assert {k: choices[k] for k in ("data", "model", "reg", "optim")} == {
        "data": "cifar10", "model": "cnn", "reg": "none", "optim": "adamw"}
    assert not any(k.startswith("hydra") for k in choices)
    assert not cfg.reg
    validate(cfg)


def test_combos_and_lists_compose_the_same(tmp_path):
    named = compose_config(tmp_path, ["reg=elasticnet_dropout"])
    assert RunLabel.of(named).choices["reg"] == "elasticnet_dropout"  # Hydra's own choice, as typed
    listed = compose_config(tmp_path, ["reg=[elasticnet,dropout]"])
    assert RunLabel.of(listed).choices["reg"] == "elasticnet+dropout"  # a list has none: its members
    assert OmegaConf.to_container(named.reg) == OmegaConf.to_container(listed.reg)
    for combo, first in (("l1_dropout", "l1"), ("l2_dropout", "l2")):
        assert list(compose_config(tmp_path, [f"reg={combo}"]).reg) == [first, "dropout"]


def test_overrides_reach_the_regularizer(tmp_path):
    cfg = compose_config(tmp_path, ["reg=[l1,dropout]", "reg.l1.strength=3e-5", "reg.dropout.p=0.4", "seed=7",
                                    "trainer.max_epochs=3"])
    assert cfg.reg.l1.strength == 3e-5 and cfg.reg.dropout.p == 0.4
    assert cfg.seed == 7 and cfg.trainer.max_epochs == 3


def test_no_optimizer_carries_weight_decay(tmp_path):
    for choice in group_choices("optim"):
        assert "weight_decay" not in compose_config(tmp_path, [f"optim={choice}"]).optim


@pytest.mark.parametrize("override,message", [
    # prefixes of the sorted choices: adding a choice (a new yaml) must not need this test edited
    ("reg=l3", "reg=l3: unknown choice; allowed ['activity', 'd"),
    ("reg=[l1,nope]", "reg=nope: unknown choice"),
    ("model=resnet", "model=resnet: unknown choice; allowed ['cnn', 'cnn_small', 'hf_encoder', "),
    ("optim=lion", "optim=lion: unknown choice; allowed ['adadelta', 'adam', 'adamw', 'lbfgs', 'sgd']"),
])
def test_unknown_group_choice_is_one_line_before_anything_loads(tmp_path, override, message):
    import time

    from conftest import run_cli

    started = time.time()
    done = run_cli(override, f"hydra.run.dir={tmp_path}", fresh=True)  # start-up is the subject
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), done.stderr
    assert time.time() - started < 20


def test_sweep_values_are_checked_and_valid_lists_pass():
    from reglab.overrides import unknown_choice

    conf = CONF
    assert unknown_choice(["-m", "reg=l1,l2", "seed=0,1"], conf) is None
    assert unknown_choice(["reg=[l1,dropout]", "reg.l1.strength=1e-3", "hydra/launcher=gpus"], conf) is None
    assert unknown_choice(["-m", "reg=l1,l7"], conf) == ("reg=l7: unknown choice; allowed "
                                                      f"{sorted(p.stem for p in (conf / 'reg').glob('*.yaml'))}")


@pytest.mark.parametrize("overrides,message", [
    (["reg=l1", "reg.l1.strength=-1"], "reg.l1.strength=-1: must be a number >= 0"),
    (["reg=dropout", "reg.dropout.p=1.5"], "reg.dropout.p=1.5: a dropout rate must be in [0, 1)"),
    (["data=sst2", "model=cnn"], "model=cnn takes image input but data=sst2 gives tokens input"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be >= 1"),
    (["reg=l1", "+reg.l1.strenght=1"], "reg.l1.strenght: L1 has no such field; allowed: strength, "),
    (["reg=elasticnet", "reg.elasticnet.alpha=2"], "reg.elasticnet.alpha=2: must be in [0, 1]"),
    (["data.batch_size=0"], "data.batch_size=0: must be > 0"),
    (["data.path=/does/not/exist"], "data.path='/does/not/exist': directory does not exist"),
    (["reg=l1", "reg.l1.warmup=cosine"], "reg.l1.warmup='cosine': allowed ['constant', 'linear']"),
])
def test_bad_values_are_caught_before_any_data_or_model(make_config, overrides, message):
    """Issue 7's list: each is a ConfigError naming the key, the value and what is allowed, from validate()
    alone (no data loaded, no model built). The CLI turns it into one line and exit code 2 (test_train)."""
    from reglab.errors import ConfigError
    from reglab.preflight import validate

    cfg = make_config(*overrides)
    drop_unselected(cfg.reg)
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_dropout_rates_are_set_from_the_command_line_as_the_readme_writes_them(tmp_path):
    cfg = compose_config(tmp_path, ["reg=dropout", "reg.dropout.rates={fc: 0.3}"])  # no '+' needed
    drop_unselected(cfg.reg)
    (dropout,) = build_regularizers(cfg.reg)
    assert dropout.rates == {"fc": 0.3} and dropout.p is None
