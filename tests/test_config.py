"""Every config group choice composes, and composition means what the README says."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import CONF, compose_config
from reglab.regularizers import Regularizer, build_regularizers, drop_unselected
from reglab.run import check_config, run_choices


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
    assert run_choices(cfg) == {"data": "cifar10", "model": "cnn", "reg": "none", "optim": "adamw"}
    assert not cfg.reg
    check_config(cfg)


def test_combos_and_lists_compose_the_same(tmp_path):
    named = compose_config(tmp_path, ["reg=elasticnet_dropout"])
    listed = compose_config(tmp_path, ["reg=[elasticnet,dropout]"])
    assert OmegaConf.to_container(named.reg) == OmegaConf.to_container(listed.reg)
    assert run_choices(named)["reg"] == "elasticnet+dropout"
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
