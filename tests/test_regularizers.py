"""Regularizers: penalties and gradients against hand computations, the parameter rule, config errors."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF
from reglab.errors import ConfigError
from reglab.models.cnn import CNN
from reglab.regularizers import build_regularizers
from reglab.regularizers.base import Regularizer, is_selected, select_parameters
from reglab.regularizers.dropout import Dropout
from reglab.regularizers.elasticnet import ElasticNet
from reglab.regularizers.l1 import L1
from reglab.regularizers.l2 import L2
from reglab.regularizers.weight_decay import WeightDecay

# Hand-set values. Weight matrices: 0.weight (2x3) and 2.weight (2x2). Everything else is 1-D.
W0 = [[1.0, -2.0, 0.5], [-0.25, 3.0, -1.5]]
B0 = [10.0, -20.0]
LN_W = [7.0, -8.0]
LN_B = [30.0, -40.0]
W2 = [[-0.5, 4.0], [2.0, -1.0]]
B2 = [50.0, 60.0]

# sum|w| and sum w^2 over the two weight matrices only, by hand.
SUM_ABS = (1 + 2 + 0.5 + 0.25 + 3 + 1.5) + (0.5 + 4 + 2 + 1)  # 8.25 + 7.5 = 15.75
SUM_SQ = (1 + 4 + 0.25 + 0.0625 + 9 + 2.25) + (0.25 + 16 + 4 + 1)  # 16.5625 + 21.25 = 37.8125
WEIGHT_NAMES = ["0.weight", "2.weight"]
ONE_D_NAMES = ["0.bias", "1.weight", "1.bias", "2.bias"]


def tiny_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2), nn.Linear(2, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W0))
        model[0].bias.copy_(torch.tensor(B0))
        model[1].weight.copy_(torch.tensor(LN_W))
        model[1].bias.copy_(torch.tensor(LN_B))
        model[2].weight.copy_(torch.tensor(W2))
        model[2].bias.copy_(torch.tensor(B2))
    return model


class SkipsSecondLinear(nn.Sequential):
    def no_weight_decay(self):
        return {"2.weight"}


def skipping_model() -> SkipsSecondLinear:
    return SkipsSecondLinear(nn.Linear(3, 2), nn.LayerNorm(2), nn.Linear(2, 2))


def params(model) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


def assert_no_penalty_grad(model, names):
    for name in names:
        grad = params(model)[name].grad
        assert grad is None or torch.all(grad == 0), f"{name} got a penalty gradient: {grad}"


# ----------------------------------------------------------------------------------------------- penalties


def test_hand_sums_are_what_the_constants_say():
    # Guard on the constants themselves, so a typo there cannot make the penalty tests vacuous.
    m = tiny_model()
    assert SUM_ABS == pytest.approx(float(m[0].weight.detach().abs().sum() + m[2].weight.detach().abs().sum()))
    assert SUM_SQ == pytest.approx(float(m[0].weight.detach().pow(2).sum() + m[2].weight.detach().pow(2).sum()))


def test_l1_penalty_and_gradient():
    model, reg = tiny_model(), L1(strength=0.3)
    reg.configure(model)
    assert reg.param_names == WEIGHT_NAMES
    penalty = reg.penalty(model)
    assert penalty.ndim == 0
    assert float(penalty.detach()) == pytest.approx(0.3 * SUM_ABS, rel=1e-12)
    penalty.backward()
    for name in WEIGHT_NAMES:
        p = params(model)[name]
        torch.testing.assert_close(p.grad, 0.3 * torch.sign(p.detach()), rtol=1e-12, atol=0)
    assert_no_penalty_grad(model, ONE_D_NAMES)


def test_l1_subgradient_at_zero_is_zero():
    model, reg = tiny_model(), L1(strength=0.5)
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0
    reg.configure(model)
    reg.penalty(model).backward()
    grad = model[0].weight.grad
    assert grad[0, 0] == 0
    torch.testing.assert_close(grad, 0.5 * torch.sign(model[0].weight.detach()), rtol=0, atol=0)


def test_l2_penalty_has_no_half_and_gradient_is_two_strength_w():
    model, reg = tiny_model(), L2(strength=0.2)
    reg.configure(model)
    penalty = reg.penalty(model)
    assert float(penalty.detach()) == pytest.approx(0.2 * SUM_SQ, rel=1e-12)  # not 0.1 * SUM_SQ
    penalty.backward()
    for name in WEIGHT_NAMES:
        p = params(model)[name]
        torch.testing.assert_close(p.grad, 2 * 0.2 * p.detach(), rtol=1e-12, atol=1e-15)
    assert_no_penalty_grad(model, ONE_D_NAMES)


def test_elasticnet_strength_alpha_form():
    model, reg = tiny_model(), ElasticNet(strength=0.4, alpha=0.25)
    reg.configure(model)
    assert reg.l1_strength == pytest.approx(0.1)
    assert reg.l2_strength == pytest.approx(0.3)
    penalty = reg.penalty(model)
    assert float(penalty.detach()) == pytest.approx(0.4 * (0.25 * SUM_ABS + 0.75 * SUM_SQ), rel=1e-12)
    penalty.backward()
    for name in WEIGHT_NAMES:
        p = params(model)[name]
        expected = 0.4 * (0.25 * torch.sign(p.detach()) + 0.75 * 2 * p.detach())
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)
    assert_no_penalty_grad(model, ONE_D_NAMES)


@pytest.mark.parametrize("alpha,expected", [(1.0, 0.4 * SUM_ABS), (0.0, 0.4 * SUM_SQ)])
def test_elasticnet_alpha_endpoints_are_l1_and_l2(alpha, expected):
    model, reg = tiny_model(), ElasticNet(strength=0.4, alpha=alpha)
    reg.configure(model)
    assert float(reg.penalty(model).detach()) == pytest.approx(expected, rel=1e-12)


def test_elasticnet_direct_form():
    model, reg = tiny_model(), ElasticNet(strength=None, alpha=None, l1_strength=0.07, l2_strength=0.011)
    reg.configure(model)
    penalty = reg.penalty(model)
    assert float(penalty.detach()) == pytest.approx(0.07 * SUM_ABS + 0.011 * SUM_SQ, rel=1e-12)
    penalty.backward()
    for name in WEIGHT_NAMES:
        p = params(model)[name]
        expected = 0.07 * torch.sign(p.detach()) + 2 * 0.011 * p.detach()
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-15)
    assert_no_penalty_grad(model, ONE_D_NAMES)


def test_direct_form_overrides_default_strength_alpha():
    # The yaml leaves strength/alpha at their defaults when l1_strength/l2_strength are given.
    reg = ElasticNet(l1_strength=0.07, l2_strength=0.011)
    model = tiny_model()
    reg.configure(model)
    assert float(reg.penalty(model).detach()) == pytest.approx(0.07 * SUM_ABS + 0.011 * SUM_SQ, rel=1e-12)


def test_include_pattern_adds_biases_to_penalty():
    model, reg = tiny_model(), L1(strength=1.0, include=["*.bias"])
    reg.configure(model)
    assert sorted(reg.param_names) == sorted(WEIGHT_NAMES + ["0.bias", "1.bias", "2.bias"])
    bias_abs = sum(abs(v) for v in B0 + LN_B + B2)
    assert float(reg.penalty(model).detach()) == pytest.approx(SUM_ABS + bias_abs, rel=1e-12)


def test_exclude_pattern_removes_from_penalty():
    model, reg = tiny_model(), L2(strength=1.0, exclude=["2.*"])
    reg.configure(model)
    assert reg.param_names == ["0.weight"]
    assert float(reg.penalty(model).detach()) == pytest.approx(16.5625, rel=1e-12)


def test_penalty_tracks_current_weights_after_configure():
    # configure caches the Parameter objects, not their values: an in-place update must show up.
    model, reg = tiny_model(), L2(strength=1.0)
    reg.configure(model)
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    assert float(reg.penalty(model).detach()) == pytest.approx(4 * 16.5625 + 21.25, rel=1e-12)


def test_no_regularizer_does_nothing():
    model = tiny_model()
    reg = Regularizer()  # the base: every hook a no-op (reg=none is an empty list)
    reg.configure(model)
    assert reg.penalty(model) is None
    assert not Regularizer.overrides("penalty")
    assert L1.overrides("penalty") and L2.overrides("penalty") and ElasticNet.overrides("penalty")
    assert WeightDecay.overrides("param_groups") and not WeightDecay.overrides("penalty")


# ----------------------------------------------------------------------------------------- parameter rule


def test_is_selected_default_rule():
    matrix, vector = torch.zeros(2, 3), torch.zeros(3)
    conv = torch.zeros(4, 3, 3, 3)
    assert is_selected("a.weight", matrix)
    assert is_selected("conv.weight", conv)
    assert not is_selected("a.bias", vector)
    assert not is_selected("norm.weight", vector)
    assert not is_selected("scalar", torch.zeros(()))


def test_is_selected_include_exclude_and_skip_names():
    matrix, vector = torch.zeros(2, 3), torch.zeros(3)
    assert is_selected("0.bias", vector, include=["0.bias"])
    assert is_selected("0.bias", vector, include=["*.bias"])
    assert not is_selected("1.bias", vector, include=["0.bias"])
    assert not is_selected("2.weight", matrix, exclude=["2.*"])
    # exclude wins over include
    assert not is_selected("2.bias", vector, include=["*.bias"], exclude=["2.*"])
    assert not is_selected("2.weight", matrix, include=["2.weight"], exclude=["2.*"])
    # skip names drop a matrix by default, include brings it back, exclude still wins
    assert not is_selected("emb", matrix, skip_names={"emb"})
    assert is_selected("emb", matrix, include=["emb"], skip_names={"emb"})
    assert not is_selected("emb", matrix, include=["emb"], exclude=["e*"], skip_names={"emb"})
    # fnmatch, case-sensitive, whole-name
    assert is_selected("0.weight", matrix, exclude=["0.W*"])
    assert is_selected("10.weight", matrix, exclude=["0.*"])


def test_select_parameters_on_model():
    model = tiny_model()
    assert [n for n, _ in select_parameters(model)] == WEIGHT_NAMES
    assert [n for n, _ in select_parameters(model, include=["0.bias"])] == ["0.weight", "0.bias", "2.weight"]
    assert [n for n, _ in select_parameters(model, exclude=["2.*"])] == ["0.weight"]
    assert [n for n, _ in select_parameters(model, include=["*.bias"], exclude=["2.*"])] == [
        "0.weight", "0.bias", "1.bias"]
    # returns the model's own Parameter objects
    assert select_parameters(model)[0][1] is model[0].weight


def test_select_parameters_skips_frozen_params():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    assert [n for n, _ in select_parameters(model)] == ["2.weight"]


def test_no_weight_decay_names_skipped_but_can_be_reincluded():
    model = skipping_model()
    assert [n for n, _ in select_parameters(model)] == ["0.weight"]
    assert [n for n, _ in select_parameters(model, include=["2.weight"])] == ["0.weight", "2.weight"]
    reg = L2(strength=1.0)
    reg.configure(model)
    assert reg.param_names == ["0.weight"]
    reg = L2(strength=1.0, include=["2.*"])
    reg.configure(model)
    assert reg.param_names == ["0.weight", "2.weight", "2.bias"]


@pytest.mark.parametrize("make", [
    lambda: L1(exclude=["*"]),
    lambda: L2(exclude=["0.*", "2.*"]),
    lambda: ElasticNet(exclude=["*.weight"]),
    lambda: WeightDecay(exclude=["*weight"]),
])
def test_patterns_selecting_nothing_raise_on_configure(make):
    reg = make()
    with pytest.raises(ConfigError, match="select no parameters"):
        reg.configure(tiny_model())


def test_model_with_only_vectors_raises_on_configure():
    with pytest.raises(ConfigError):
        L1().configure(nn.LayerNorm(4))


# ------------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("make,key", [
    (lambda: L1(strength=-1e-5), "strength"),
    (lambda: L2(strength=-0.1), "strength"),
    (lambda: L1(strength=math.nan), "strength"),
    (lambda: ElasticNet(strength=-1.0, alpha=0.5), "strength"),
    (lambda: ElasticNet(strength=1.0, alpha=1.5), "alpha"),
    (lambda: ElasticNet(strength=1.0, alpha=-0.1), "alpha"),
    (lambda: ElasticNet(strength=1.0, alpha=math.nan), "alpha"),
    (lambda: ElasticNet(l1_strength=-0.1, l2_strength=0.1), "l1_strength"),
    (lambda: ElasticNet(l1_strength=0.1, l2_strength=-0.1), "l2_strength"),
    (lambda: ElasticNet(l1_strength=0.1), "l2_strength"),
    (lambda: ElasticNet(strength=None, alpha=0.5), "strength"),
    (lambda: WeightDecay(decay=-0.01), "decay"),
    (lambda: Dropout(p=1.0), "p"),
    (lambda: Dropout(p=-0.1), "p"),
    (lambda: Dropout(p=math.nan), "p"),
    (lambda: Dropout(p=0.1, rates={"fc": 1.0}), "rates.fc"),
    (lambda: Dropout(p=0.1, rates={"conv": -0.5}), "rates.conv"),
])
def test_bad_values_raise_config_error_naming_key(make, key):
    with pytest.raises(ConfigError) as info:
        make()
    assert key in str(info.value)


def test_boundary_values_are_accepted():
    L1(strength=0.0)
    L2(strength=0.0)
    ElasticNet(strength=0.0, alpha=0.0)
    ElasticNet(strength=1.0, alpha=1.0)
    Dropout(p=0.0)
    Dropout(p=0.999, rates={"conv": 0.0})


def test_dropout_unknown_site_type_raises_on_configure():
    reg = Dropout(p=0.1, rates={"attn": 0.2})  # construction cannot know the model
    model = CNN(in_channels=1, image_size=8, num_classes=3, widths=[4], convs_per_stage=1, fc_hidden=4)
    with pytest.raises(ConfigError) as info:
        reg.configure(model)
    assert "attn" in str(info.value) and "rates" in str(info.value)


# ----------------------------------------------------------------------------------------- weight decay


def test_weight_decay_param_groups_split():
    model = tiny_model()
    reg = WeightDecay(decay=0.05)
    reg.configure(model)
    named = list(model.named_parameters())
    groups = [{"names": [n for n, _ in named], "params": [p for _, p in named], "lr": 0.3}]
    split = reg.param_groups(groups)
    assert len(split) == 2
    decayed, kept = split
    assert decayed["names"] == WEIGHT_NAMES and decayed["weight_decay"] == 0.05
    assert kept["names"] == ONE_D_NAMES and kept["weight_decay"] == 0.0
    for group in split:
        assert group["lr"] == 0.3  # other group keys are carried over
        assert [params(model)[n] for n in group["names"]] == group["params"]
    all_params = [p for g in split for p in g["params"]]
    assert len(all_params) == len(named)
    assert {id(p) for p in all_params} == {id(p) for _, p in named}


def test_weight_decay_param_groups_multiple_groups_and_patterns():
    model = skipping_model()
    reg = WeightDecay(decay=0.1, include=["1.weight"], exclude=["0.*"])
    reg.configure(model)
    named = list(model.named_parameters())
    groups = [
        {"names": [n for n, _ in named[:3]], "params": [p for _, p in named[:3]], "lr": 1.0},
        {"names": [n for n, _ in named[3:]], "params": [p for _, p in named[3:]], "lr": 2.0},
    ]
    split = reg.param_groups(groups)
    by_names = {tuple(g["names"]): (g["weight_decay"], g["lr"]) for g in split}
    # group 1: 0.weight, 0.bias excluded; 1.weight included. group 2: 2.weight is a no_weight_decay name.
    assert by_names == {
        ("1.weight",): (0.1, 1.0),
        ("0.weight", "0.bias"): (0.0, 1.0),
        ("1.bias", "2.weight", "2.bias"): (0.0, 2.0),
    }
    all_ids = [id(p) for g in split for p in g["params"]]
    assert sorted(all_ids) == sorted(id(p) for _, p in named)


def test_weight_decay_no_penalty():
    model = tiny_model()
    reg = WeightDecay(decay=0.05)
    reg.configure(model)
    assert reg.penalty(model) is None


# ----------------------------------------------------------------------------------------- yaml configs


@pytest.mark.parametrize("choice,cls,attrs", [
    ("l1", L1, {"strength": 1e-5}),
    ("l2", L2, {"strength": 5e-4}),
    ("elasticnet", ElasticNet, {"l1_strength": 0.5e-4, "l2_strength": 0.5e-4}),
    ("weight_decay", WeightDecay, {"decay": 5e-2}),
    ("dropout", Dropout, {"rates": {}}),
])
def test_reg_yaml_builds_the_documented_regularizer(choice, cls, attrs):
    (reg,) = build_regularizers(OmegaConf.load(CONF / "reg" / f"{choice}.yaml"))
    assert type(reg) is cls and reg.name == choice
    for key, value in attrs.items():
        assert getattr(reg, key) == pytest.approx(value)


def test_reg_none_yaml_builds_nothing():
    assert build_regularizers(OmegaConf.load(CONF / "reg" / "none.yaml")) == []


def test_build_regularizers_reports_bad_value_as_config_error():
    cfg = OmegaConf.load(CONF / "reg" / "l2.yaml")
    cfg.l2.strength = -1.0
    with pytest.raises(ConfigError, match="strength"):
        build_regularizers(cfg)


def every_regularizer_entry() -> list[tuple[str, dict]]:
    """Every regularizer entry of every conf/reg/*.yaml: (its class path, its settings)."""
    entries = {}
    for path in sorted((CONF / "reg").glob("*.yaml")):
        for entry in (OmegaConf.to_container(OmegaConf.load(path)) or {}).values():
            if isinstance(entry, dict) and "_target_" in entry:
                entries.setdefault(entry["_target_"], entry)
    return sorted(entries.items())


def a_bad_value(rule):
    """A value the rule refuses: a string for a number or a choice; a mapping with one for a mapping rule."""
    from reglab.values import EachValue

    return {"site": "not-a-number"} if isinstance(rule, EachValue) else "not-a-number"


@pytest.mark.parametrize("target,entry", every_regularizer_entry(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_regularizers_errors_name_the_key_it_is_configured_under(target, entry):
    """Built under any config key (reg=per_layer's l1_head), a bad value of each field the class declares a rule
    for names reg.<that key>.<field>, and a field the class does not take is one line listing the ones it does."""
    from hydra.utils import get_class

    from reglab.regularizers import accepted_fields

    cls = get_class(target)
    rules = cls.declared_rules()
    fields = accepted_fields(cls)
    checked = [field for field in rules if fields is None or field in fields]
    assert set(entry) - {"_target_"} - set(rules) <= {"include", "exclude", "only", "modules", "rates"} | set(
        fields or ()), "a numeric field without a declared rule"
    for field in checked:
        with pytest.raises(ConfigError) as raised:
            build_regularizers(OmegaConf.create({"my_head": {**entry, field: a_bad_value(rules[field])}}))
        assert str(raised.value).startswith(f"reg.my_head.{field}"), str(raised.value)
    with pytest.raises(ConfigError, match=r"^reg\.my_head\.bogus: \w+ has no such field; allowed: ") as raised:
        build_regularizers(OmegaConf.create({"my_head": {**entry, "bogus": 1}}))
    allowed = str(raised.value).split("allowed: ")[1].split(", ")
    assert set(entry) - {"_target_"} <= set(allowed) and "\n" not in str(raised.value)


def test_every_regularizer_refuses_a_bad_value_before_torch_is_imported():
    """A typo in any reg.* value is refused about half a second after the command, not after torch's second of
    imports: in a fresh interpreter, each shipped class builds, refuses a bad value of every field it declares a
    rule for and a field it does not take, and torch is still not imported."""
    import json
    import subprocess
    import sys

    from hydra.utils import get_class

    cases = []  # (class path, its settings, a settings dict the class must refuse)
    for target, entry in every_regularizer_entry():
        rules = get_class(target).declared_rules()
        cases += [(target, entry, {**entry, field: a_bad_value(rule)}) for field, rule in rules.items()
                  if field in entry]
        cases.append((target, entry, {**entry, "bogus": 1}))
    script = ("import json, sys\n"
              "from omegaconf import OmegaConf\n"
              "from reglab.errors import ConfigError\n"
              "from reglab.regularizers import build_regularizers\n"
              "for target, entry, bad in json.loads(sys.argv[1]):\n"
              "    build_regularizers(OmegaConf.create({'my_head': entry}))\n"
              "    try:\n"
              "        build_regularizers(OmegaConf.create({'my_head': bad}))\n"
              "    except ConfigError:\n"
              "        pass\n"
              "    else:\n"
              "        sys.exit(f'{target} accepted {bad}')\n"
              "    if 'torch' in sys.modules:\n"
              "        sys.exit(f'{target} imported torch')\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(cases) > 2 * len(every_regularizer_entry())  # the bad values were tried, not only unknown fields


def test_a_rule_is_declared_only_for_a_field_the_class_takes():
    from hydra.utils import get_class

    from reglab.regularizers import accepted_fields

    for target, _ in every_regularizer_entry():
        cls = get_class(target)
        own = vars(cls).get("rules") or {}
        assert set(own) <= set(accepted_fields(cls)), (target, set(own) - set(accepted_fields(cls)))


def test_the_docs_table_of_regularizer_fields_matches_the_classes():
    """docs/configuration.md's table: each regularizer's fields column names only fields its class takes, and
    every field its own constructor adds (the selection and warmup fields every penalty shares are described
    below the table)."""
    import inspect
    import re

    from hydra.utils import get_class

    from reglab.regularizers import Regularizer, accepted_fields

    shared = set(inspect.signature(Regularizer.__init__).parameters) - {"self"}
    text = (CONF.parent / "docs" / "configuration.md").read_text()
    table = text[text.index("| reg | what it does | fields |"):].split("\n\n")[0].splitlines()[2:]
    seen = 0
    for row in table:
        name_cell, _, fields_cell = [c.strip() for c in row.strip("|").rsplit("|", 2)]
        names = re.findall(r"`(\w+)`", name_cell.split("|")[0])
        path = CONF / "reg" / f"{names[0]}.yaml" if names else None
        entries = [e for e in (OmegaConf.to_container(OmegaConf.load(path)) or {}).values()
                   if isinstance(e, dict) and "_target_" in e] if path and path.is_file() else []
        if len(entries) != 1 or fields_cell.startswith("as "):
            continue
        cls = get_class(entries[0]["_target_"])
        documented = {f for f in re.findall(r"`([a-z_0-9]+)`", fields_cell)}
        own = {p.name for p in inspect.signature(cls.__init__).parameters.values()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"} - shared
        assert documented <= set(accepted_fields(cls)), (names[0], documented - set(accepted_fields(cls)))
        assert own <= documented, (names[0], own - documented)
        seen += 1
    assert seen >= 10
