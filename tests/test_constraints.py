"""Post-step regularizers: proximal L1 (exact zeros) and max-norm."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import ROOT
from reglab.errors import ConfigError
from reglab.regularizers.maxnorm import MaxNorm
from reglab.regularizers.prox_l1 import ProxL1
from reglab.run import train

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "decoupled_weight_decay": True}
SGDW = {"_target_": "reglab.optim.SGDW", "_partial_": True}  # conf/optim/sgd.yaml's optimizer


def tiny_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.05, 0.1], [-0.3, 0.2, -0.09]]))
        model[0].bias.fill_(0.01)
        model[1].weight.copy_(torch.tensor([[0.1, -0.1], [2.0, 0.0]]))
    return model


def test_prox_l1_zeroes_exactly_the_weights_below_threshold():
    model = tiny_model()
    before = [p.detach().clone() for p in (model[0].weight, model[1].weight)]
    regularizer = ProxL1(strength=1.0)
    regularizer.configure(model)
    regularizer.after_step(model, lr=0.1)  # threshold 0.1
    for old, new in zip(before, (model[0].weight, model[1].weight)):
        expected = torch.sign(old) * torch.clamp(old.abs() - 0.1, min=0)
        assert torch.equal(new, expected)
    assert torch.allclose(model[0].weight, torch.tensor([[0.4, 0.0, 0.0], [-0.2, 0.1, 0.0]]))
    assert torch.equal(model[0].weight == 0, torch.tensor([[False, True, True], [False, False, True]]))  # |w| <= 0.1
    assert (model[0].weight == 0).sum() == 3 and (model[1].weight == 0).sum() == 3
    assert torch.equal(model[0].bias, torch.full((2,), 0.01))  # biases follow the shared rule: untouched


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_prox_l1_under_adam_thresholds_in_adams_metric(name):
    """t = lr * strength / (sqrt(v_hat) + eps) per weight (Yun et al. 2021), by hand from Adam's definition."""
    from omegaconf import OmegaConf

    from reglab.optim import build_optimizer

    model = tiny_model()
    grads = [torch.tensor([[0.2, -0.001, 0.05], [1.0, 0.0, -0.3]]), torch.tensor([[0.01, 0.02], [-0.5, 0.0]])]
    weights = [model[0].weight, model[1].weight]
    target = {"adam": {**ADAM}, "adamw": {"_target_": "torch.optim.AdamW", "_partial_": True}}[name]
    optimizer = build_optimizer(OmegaConf.create({**target, "lr": 0.01}), [{"params": weights}])
    lr, strength, beta2, eps = 0.01, 2e-3, 0.999, 1e-8
    v = [torch.zeros_like(w) for w in weights]
    for step in (1, 2):  # two Adam steps with the same gradients, so v_hat is not just g^2
        for w, g in zip(weights, grads):
            w.grad = g.clone()
        optimizer.step()
        v = [beta2 * vi + (1 - beta2) * g ** 2 for vi, g in zip(v, grads)]
    before = [w.detach().clone() for w in weights]
    regularizer = ProxL1(strength=strength)
    regularizer.configure(model)
    regularizer.after_step(model, lr=lr, optimizer=optimizer)
    for old, new, vi in zip(before, weights, v):
        threshold = lr * strength / ((vi / (1 - beta2 ** 2)).sqrt() + eps)
        expected = torch.sign(old) * torch.clamp(old.abs() - threshold, min=0)
        assert torch.allclose(new, expected, atol=1e-7)
        assert torch.equal(new == 0, old.abs() <= threshold)  # exact zeros exactly where |w| <= t
    assert (weights[0] == 0).any() and (weights[0] != 0).any()  # a weight-dependent threshold, not a flat one
    sgd = build_optimizer(OmegaConf.create({**SGDW, "lr": 0.1}), [{"params": weights}])
    plain = tiny_model()
    ProxL1(strength=1.0).configure(plain) or None
    flat = ProxL1(strength=1.0)
    flat.configure(plain)
    flat.after_step(plain, lr=0.1, optimizer=sgd)  # SGD: the flat ISTA threshold lr * strength
    assert torch.allclose(plain[0].weight, torch.tensor([[0.4, 0.0, 0.0], [-0.2, 0.1, 0.0]]))


def test_maxnorm_bounds_every_unit():
    torch.manual_seed(0)
    linear, conv = nn.Linear(8, 5), nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        linear.weight.mul_(50)
        conv.weight.mul_(50)
        linear.weight[0] = 0.01  # a unit already inside the ball is left as it is
    model = nn.Sequential(linear, nn.Flatten(), conv)
    small_row = linear.weight[0].clone()
    regularizer = MaxNorm(max_norm=2.0)
    regularizer.configure(model)
    regularizer.after_step(model, lr=0.1)
    assert linear.weight.norm(dim=1).max() <= 2.0 + 1e-5
    assert conv.weight.flatten(1).norm(dim=1).max() <= 2.0 + 1e-5
    assert torch.allclose(linear.weight.norm(dim=1)[1:], torch.full((4,), 2.0), atol=1e-4)  # scaled onto the ball
    assert torch.equal(linear.weight[0], small_row)
    with pytest.raises(ConfigError, match="reg.maxnorm.max_norm"):
        MaxNorm(max_norm=0)


@pytest.mark.slow
def test_prox_l1_with_adam_and_maxnorm_with_dropout_in_a_run(make_config):
    cfg = make_config("data=digits", "reg=prox_l1")  # the default strength, under the default AdamW
    train(cfg)
    sparse = json.loads((ROOT / cfg.paths.output_dir / "results.json").read_text())["metrics"]
    assert sparse["weights/zero_frac"] > 0.05  # exact zeros after 2 short epochs; subgradient l1 gives none
    assert 0 < sparse["weights/sparse_bytes"]
    assert sparse["weights/nonzero"] == pytest.approx((1 - sparse["weights/zero_frac"]) * sparse["weights/dense_bytes"] / 4)

    cfg = make_config("data=digits", "reg=[dropout,maxnorm]", "reg.maxnorm.max_norm=0.5")
    results = train(cfg)
    assert results["status"] == "completed" and results["choices"]["reg"] == "dropout+maxnorm"
