"""The written contracts (reglab.contracts): a model or datamodule missing a member fails at build with a
ConfigError naming the class and the member; MC dropout switches on exactly the sites dropout_sites() declares."""

from __future__ import annotations

import pytest
from torch import nn

from reglab.contracts import check_data_class, check_model, check_model_class
from reglab.errors import ConfigError


class NoSites(nn.Module):
    input_kind = "image"

    def no_weight_decay(self):
        return set()


class BadKind(nn.Module):
    input_kind = "audio"

    def dropout_sites(self):
        return {}

    def no_weight_decay(self):
        return set()


class WrongSites(BadKind):
    input_kind = "image"

    def dropout_sites(self):
        return {"fc": [0.5]}


class NotADataModule:
    input_kind = "image"
    model_kwargs = {}


def test_a_model_without_dropout_sites_names_the_class_and_the_member():
    with pytest.raises(ConfigError) as raised:
        check_model_class(NoSites)
    message = str(raised.value)
    assert "test_contracts.NoSites lacks dropout_sites" in message and "\n" not in message


def test_input_kind_and_dropout_sites_shape_are_checked():
    with pytest.raises(ConfigError, match=r"BadKind.input_kind='audio': allowed \['image', 'tokens', 'features'\]"):
        check_model_class(BadKind)
    with pytest.raises(ConfigError, match=r"WrongSites.dropout_sites\(\) must return"):
        check_model(WrongSites())


def test_a_datamodule_missing_members_names_them():
    with pytest.raises(ConfigError) as raised:
        check_data_class(NotADataModule)
    assert "NotADataModule lacks test_split, split_sizes, setup" in str(raised.value)


def test_every_shipped_model_and_datamodule_meets_its_contract(tmp_path):
    from hydra.utils import get_class

    from conftest import CONF, compose_config

    for group, check in (("model", check_model_class), ("data", check_data_class)):
        for path in sorted((CONF / group).glob("*.yaml")):
            check(get_class(compose_config(tmp_path, [f"{group}={path.stem}"])[group]._target_))


def test_the_cli_reports_a_broken_model_in_one_line(make_config):
    from reglab.preflight import validate

    cfg = make_config("data=digits", "model._target_=test_contracts.NoSites")
    with pytest.raises(ConfigError, match="NoSites lacks dropout_sites"):
        validate(cfg)
