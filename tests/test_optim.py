"""Optimizers and schedules: decoupled vs coupled decay, SGDW keeps decay out of momentum, LR schedule shape."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from reglab.errors import ConfigError
from reglab.optim import SGDW, build_optimizer, build_scheduler, check_optim_config
from reglab.regularizers.l2 import L2
from reglab.regularizers.weight_decay import WeightDecay

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "decoupled_weight_decay": True, "lr": 0.1,
        "betas": [0.9, 0.999], "eps": 1e-8}
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8}
SGD = {"_target_": "reglab.optim.SGDW", "_partial_": True, "lr": 0.1, "momentum": 0.0, "nesterov": False}


def make_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (8,), generator=g)


def one_group(model) -> list[dict]:
    named = list(model.named_parameters())
    return [{"names": [n for n, _ in named], "params": [p for _, p in named], "weight_decay": 0.0}]


def data_loss(model):
    x, y = batch()
    return nn.functional.cross_entropy(model(x), y)


def step_decoupled(optim_cfg: dict, decay: float, steps: int = 1) -> dict[str, torch.Tensor]:
    model = make_model()
    reg = WeightDecay(decay=decay)
    reg.configure(model)
    opt = build_optimizer(OmegaConf.create(optim_cfg), reg.param_groups(one_group(model)))
    for _ in range(steps):
        opt.zero_grad()
        data_loss(model).backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def step_coupled(optim_cfg: dict, strength: float, steps: int = 1) -> dict[str, torch.Tensor]:
    model = make_model()
    reg = L2(strength=strength)
    reg.configure(model)
    opt = build_optimizer(OmegaConf.create(optim_cfg), one_group(model))
    for _ in range(steps):
        opt.zero_grad()
        (data_loss(model) + reg.penalty(model)).backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def step_plain(optim_cfg: dict, steps: int = 1) -> dict[str, torch.Tensor]:
    model = make_model()
    opt = build_optimizer(OmegaConf.create(optim_cfg), one_group(model))
    for _ in range(steps):
        opt.zero_grad()
        data_loss(model).backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


WEIGHTS = ("0.weight", "2.weight")
VECTORS = ("0.bias", "1.weight", "1.bias", "2.bias")


# ------------------------------------------------------------------------------ decoupled vs coupled


def test_build_optimizer_types_and_groups():
    model = make_model()
    reg = WeightDecay(decay=0.05)
    reg.configure(model)
    groups = reg.param_groups(one_group(model))
    sgd = build_optimizer(OmegaConf.create(SGD), groups)
    adam = build_optimizer(OmegaConf.create(ADAM), groups)
    adamw = build_optimizer(OmegaConf.create(ADAMW), groups)
    assert isinstance(sgd, SGDW)
    assert type(adam) is torch.optim.Adam and adam.defaults["decoupled_weight_decay"] is True
    assert type(adamw) is torch.optim.AdamW
    for opt in (sgd, adam, adamw):
        assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
        assert all("names" not in g for g in opt.param_groups)
        assert opt.param_groups[0]["lr"] == 0.1
    # groups without weight_decay default to 0 (no decay hidden in the optimizer)
    bare = build_optimizer(OmegaConf.create(ADAM), [{"params": list(model.parameters())}])
    assert bare.param_groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_decoupled_decay_matches_formula_under_adam(name):
    lr, decay = 0.1, 0.5
    cfg = {"adam": ADAM, "adamw": ADAMW}[name]
    plain, decoupled = step_plain(cfg), step_decoupled(cfg, decay)
    w0 = {n: p.detach() for n, p in make_model().named_parameters()}
    for n in WEIGHTS:  # decoupled: w1 = w0 - lr*decay*w0 + (plain Adam update)
        torch.testing.assert_close(decoupled[n], plain[n] - lr * decay * w0[n], rtol=1e-10, atol=1e-12)
    for n in VECTORS:  # undecayed group is exactly plain Adam
        torch.testing.assert_close(decoupled[n], plain[n], rtol=0, atol=0)


def test_decoupled_and_coupled_differ_under_adam():
    strength = 0.25
    decoupled = step_decoupled(ADAM, 2 * strength)
    coupled = step_coupled(ADAM, strength)
    plain = step_plain(ADAM)
    for n in WEIGHTS:
        assert not torch.allclose(decoupled[n], coupled[n], rtol=1e-6, atol=1e-8), n
        # both do decay something relative to plain Adam
        assert not torch.allclose(decoupled[n], plain[n]) and not torch.allclose(coupled[n], plain[n])
    for n in VECTORS:  # neither touches biases/norms
        torch.testing.assert_close(decoupled[n], plain[n], rtol=0, atol=0)
        torch.testing.assert_close(coupled[n], plain[n], rtol=0, atol=0)


def test_coupled_l2_under_adam_is_normalised_away_for_pure_penalty():
    # With no data gradient, coupled L2 under Adam moves each weight by ~lr regardless of decay size,
    # whereas decoupled decay moves it by lr*decay*w: the textbook reason they differ.
    lr, strength = 0.1, 1e-3
    model = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 4.0], [0.5, -0.5, 3.0]]))
    w0 = model.weight.detach().clone()
    reg = L2(strength=strength)
    reg.configure(model)
    opt = build_optimizer(OmegaConf.create(ADAM), [{"names": ["weight"], "params": [model.weight]}])
    opt.zero_grad()
    reg.penalty(model).backward()
    opt.step()
    torch.testing.assert_close(model.weight.detach(), w0 - lr * torch.sign(w0), rtol=1e-6, atol=1e-6)

    model2 = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model2.weight.copy_(w0)
    opt2 = build_optimizer(OmegaConf.create(ADAM), [{"names": ["weight"], "params": [model2.weight],
                                                     "weight_decay": 2 * strength}])
    model2.weight.grad = torch.zeros_like(w0)
    opt2.step()
    torch.testing.assert_close(model2.weight.detach(), w0 * (1 - lr * 2 * strength), rtol=1e-12, atol=0)


@pytest.mark.parametrize("steps", [1, 3])
def test_decoupled_and_coupled_match_under_plain_sgd(steps):
    strength = 0.25
    decoupled = step_decoupled(SGD, decay=2 * strength, steps=steps)
    coupled = step_coupled(SGD, strength=strength, steps=steps)
    plain = step_plain(SGD, steps=steps)
    for n in decoupled:
        torch.testing.assert_close(decoupled[n], coupled[n], rtol=1e-12, atol=1e-14)
    for n in WEIGHTS:  # and the decay actually did something
        assert not torch.allclose(decoupled[n], plain[n])


def test_sgd_decoupled_one_step_formula():
    lr, decay = 0.1, 0.3
    w0 = {n: p.detach().clone() for n, p in make_model().named_parameters()}
    model = make_model()
    data_loss(model).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    decoupled = step_decoupled(SGD, decay)
    for n in WEIGHTS:
        torch.testing.assert_close(decoupled[n], w0[n] * (1 - lr * decay) - lr * grads[n], rtol=1e-12, atol=1e-14)
    for n in VECTORS:
        torch.testing.assert_close(decoupled[n], w0[n] - lr * grads[n], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------ SGDW


def sgdw_with_momentum(decay: float, nesterov: bool = False):
    w = nn.Parameter(torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64))
    cfg = OmegaConf.create({**SGD, "momentum": 0.9, "nesterov": nesterov})
    return w, build_optimizer(cfg, [{"names": ["w"], "params": [w], "weight_decay": decay}])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgdw_zero_grad_step_multiplies_by_one_minus_lr_decay(nesterov):
    w, opt = sgdw_with_momentum(decay=0.2, nesterov=nesterov)
    w0 = w.detach().clone()
    w.grad = torch.zeros_like(w)
    opt.step()
    torch.testing.assert_close(w.detach(), w0 * (1 - 0.1 * 0.2), rtol=0, atol=0)
    # the decay never went into the momentum buffer: it is still all zero
    assert torch.all(opt.state[w]["momentum_buffer"] == 0)
    assert opt.param_groups[0]["weight_decay"] == 0.2  # restored after the step


def test_sgdw_momentum_buffer_unaffected_by_decay():
    grads = [torch.tensor([[0.3, -0.1], [0.2, 0.4]], dtype=torch.float64),
             torch.tensor([[-0.5, 0.1], [0.0, 0.2]], dtype=torch.float64)]
    buffers = {}
    for decay in (0.0, 0.2):
        w, opt = sgdw_with_momentum(decay)
        for g in grads:
            w.grad = g.clone()
            opt.step()
        buffers[decay] = opt.state[w]["momentum_buffer"].clone()
    torch.testing.assert_close(buffers[0.2], buffers[0.0], rtol=0, atol=0)
    # momentum buffer is the plain grad average: 0.9 * g1 + g2 (dampening 0)
    torch.testing.assert_close(buffers[0.0], 0.9 * grads[0] + grads[1], rtol=1e-15, atol=0)


def test_sgdw_second_step_uses_buffer_plus_decay():
    lr, decay, mom = 0.1, 0.2, 0.9
    w, opt = sgdw_with_momentum(decay)
    g1 = torch.tensor([[0.3, -0.1], [0.2, 0.4]], dtype=torch.float64)
    w0 = w.detach().clone()
    w.grad = g1.clone()
    opt.step()
    w1 = w0 * (1 - lr * decay) - lr * g1
    torch.testing.assert_close(w.detach(), w1, rtol=1e-14, atol=1e-15)
    w.grad = torch.zeros_like(w)
    opt.step()
    w2 = w1 * (1 - lr * decay) - lr * (mom * g1)
    torch.testing.assert_close(w.detach(), w2, rtol=1e-14, atol=1e-15)


def test_sgdw_skips_params_without_grad():
    w, opt = sgdw_with_momentum(decay=0.5)
    w0 = w.detach().clone()
    opt.step()  # w.grad is None
    torch.testing.assert_close(w.detach(), w0, rtol=0, atol=0)


def test_torch_sgd_would_be_coupled():
    # Contrast: torch's own SGD(weight_decay) puts decay into the momentum buffer; SGDW must not.
    w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64).reshape(1, 2))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.2)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert not torch.all(opt.state[w]["momentum_buffer"] == 0)


# ---------------------------------------------------------------------------------------------- schedule


def lrs_over(cfg: dict, total_steps: int, steps_per_epoch: int) -> list[float]:
    w = nn.Parameter(torch.zeros(2, 2))
    conf = OmegaConf.create(cfg)
    opt = build_optimizer(conf, [{"names": ["w"], "params": [w]}])
    sched = build_scheduler(opt, conf, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])  # after the last step
    return lrs


def test_cosine_with_warmup():
    base, spe, warm_epochs, total = 0.1, 5, 2, 50
    lrs = lrs_over({**SGD, "lr": base, "scheduler": "cosine", "warmup_epochs": warm_epochs}, total, spe)
    warmup = warm_epochs * spe
    # linear ramp: (k+1)/warmup * base
    for k in range(warmup):
        assert lrs[k] == pytest.approx(base * (k + 1) / warmup, rel=1e-12)
    assert lrs[warmup] == pytest.approx(base)  # peak right after warmup
    # then cosine: monotone non-increasing, matching the formula, ~0 at the end
    decay_part = lrs[warmup:total]
    assert all(a >= b for a, b in zip(decay_part, decay_part[1:]))
    for k in range(warmup, total):
        progress = (k - warmup) / (total - warmup)
        assert lrs[k] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * progress)), rel=1e-9, abs=1e-15)
    assert lrs[(warmup + total) // 2] == pytest.approx(base / 2, rel=1e-9)
    assert lrs[total - 1] < 0.01 * base
    assert lrs[total] == pytest.approx(0.0, abs=1e-12)


def test_cosine_without_warmup_starts_at_peak():
    lrs = lrs_over({**ADAM, "scheduler": "cosine", "warmup_epochs": 0}, 20, 4)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_constant_with_warmup():
    lrs = lrs_over({**SGD, "scheduler": "constant", "warmup_epochs": 1}, 12, 4)
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4:] == pytest.approx([0.1] * 9)


def test_onecycle_peaks_at_lr():
    lrs = lrs_over({**SGD, "scheduler": "onecycle"}, 40, 4)
    assert max(lrs[:40]) == pytest.approx(0.1, rel=1e-6)
    assert lrs[0] < 0.1 / 2 and lrs[39] < 0.1 / 100


# ---------------------------------------------------------------------------------------------- checks


def test_check_optim_config_accepts_shipped_shapes():
    for cfg in (ADAM, SGD, {**ADAMW, "scheduler": "onecycle", "warmup_epochs": 1}):
        check_optim_config(OmegaConf.create(cfg))


@pytest.mark.parametrize("cfg,key", [
    ({**ADAM, "weight_decay": 0.01}, "weight_decay"),
    ({**ADAM, "weight_decay": 0.0}, "weight_decay"),
    ({**ADAM, "_target_": "torch.optim.NoSuchOptimizer"}, "optim._target_"),
    ({**ADAM, "lr": 0.0}, "optim.lr"),
    ({**ADAM, "lr": -1.0}, "optim.lr"),
    ({**ADAM, "scheduler": "step"}, "optim.scheduler"),
    ({**ADAM, "warmup_epochs": -1}, "optim.warmup_epochs"),
])
def test_check_optim_config_rejects(cfg, key):
    with pytest.raises(ConfigError) as info:
        check_optim_config(OmegaConf.create(cfg))
    assert key in str(info.value)
