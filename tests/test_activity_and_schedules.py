"""Activity regularization (hooks), per-layer regularizer specs, and strength warmups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import compose_config
from reglab.errors import ConfigError
from reglab.module import ClassifierModule
from reglab.regularizers import build_regularizers
from reglab.regularizers.activity import Activity
from reglab.regularizers.l1 import L1
from reglab.regularizers.prox_l1 import ProxL1
from reglab.regularizers.weight_decay import WeightDecay


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_activity_penalty_matches_a_hand_computation_and_leaves_no_hooks():
    model = mlp()
    reg = Activity(modules=["1"], l1=0.1, l2=0.01)  # the ReLU's output
    reg.configure(model)
    x = torch.randn(5, 3)
    reg.before_forward(model)
    model(x)
    assert len(model[1]._forward_hooks) == 1
    penalty = reg.penalty(model)
    a = torch.relu(model[0](x))
    expected = (0.1 * a.abs().sum() + 0.01 * a.pow(2).sum()) / 5  # divided by the batch size, as Keras
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())  # removed once read
    penalty.backward()
    assert model[0].weight.grad.abs().sum() > 0 and model[2].weight.grad is None  # only what feeds the ReLU
    model.eval()
    model(x)  # an eval pass is not watched ...
    assert reg.penalty(model).item() == 0.0  # ... and nothing leaks into the next read


def test_activity_penalty_reaches_the_module_through_its_hooks():
    model = mlp()
    module = ClassifierModule(model, [Activity(modules=["0"], l2=1.0)], optim_cfg=None, num_classes=2)
    module.progress = 0.0
    module.watchers[0].before_forward(model)
    model(torch.ones(2, 3))
    penalty = module.penalty_terms()["activity"].item()
    assert penalty == pytest.approx(float(model[0](torch.ones(2, 3)).pow(2).sum() / 2), rel=1e-6)


def test_activity_unknown_module_pattern_is_an_error():
    with pytest.raises(ConfigError, match=r"reg.activity.modules=\['nope\*'\]: match no module"):
        Activity(modules=["nope*"]).configure(mlp())


def test_per_layer_config_puts_l1_on_the_head_and_l2_elsewhere(tmp_path):
    from reglab.models.cnn import CNN

    cfg = compose_config(tmp_path, ["reg=per_layer", "model.widths=[4,8]", "model.fc_hidden=6"])
    regs = {r.name: r for r in build_regularizers(cfg.reg)}
    assert set(regs) == {"l1_head", "l2_body"}
    model = CNN(3, 32, 10, widths=[4, 8], fc_hidden=6)
    for reg in regs.values():
        reg.configure(model)
    assert regs["l1_head"].param_names == ["head.0.weight", "head.3.weight"]
    weights = [n for n, p in model.named_parameters() if p.ndim > 1]
    assert regs["l2_body"].param_names == [n for n in weights if not n.startswith("head.")]
    named = dict(model.named_parameters())
    expected = (1e-4 * sum(named[n].abs().sum() for n in regs["l1_head"].param_names)
                + 1e-4 * sum(named[n].pow(2).sum() for n in regs["l2_body"].param_names))
    total = sum(r.penalty(model) for r in regs.values())
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_only_selects_biases_too_when_named():
    model = mlp()
    reg = L1(strength=1.0, only=["*.bias"])
    reg.configure(model)
    assert reg.param_names == ["0.bias", "2.bias"]


def test_linear_warmup_scales_the_penalty_and_the_prox_threshold():
    reg = L1(strength=1.0, warmup="linear", warmup_epochs=2)
    assert [reg.strength_scale(e) for e in (0, 0.5, 1, 2, 5)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    model = mlp()
    module = ClassifierModule(model, [reg], optim_cfg=None, num_classes=2)
    full = module.penalty_terms()["l1"]
    assert module.penalty_terms(progress=0.5)["l1"].item() == pytest.approx(0.25 * full.item(), rel=1e-6)

    prox = ProxL1(strength=1.0, warmup="linear", warmup_epochs=4)
    weight = nn.Parameter(torch.tensor([[0.5, -0.2, 0.05]]))
    prox.params = [weight]
    prox.after_step(None, lr=0.4 * prox.strength_scale(1.0))  # threshold 0.4 * 1/4 = 0.1
    assert weight.detach()[0].tolist() == pytest.approx([0.4, -0.1, 0.0])


def test_warmup_is_refused_where_it_would_do_nothing():
    with pytest.raises(ConfigError, match="reg.weight_decay.warmup='linear'"):
        WeightDecay(decay=0.1, warmup="linear", warmup_epochs=2)
    with pytest.raises(ConfigError, match=r"reg.l1.warmup='cosine': allowed \['constant', 'linear'\]"):
        L1(warmup="cosine")


def test_warmup_run_logs_a_growing_penalty(make_config):
    from conftest import ROOT
    from reglab.run import train

    cfg = make_config("data=digits", "reg=l1", "reg.l1.strength=1e-3", "reg.l1.warmup=linear",
                      "reg.l1.warmup_epochs=2", "trainer.max_epochs=3")
    results = train(cfg)
    assert (ROOT / cfg.paths.output_dir / "results.json").is_file()
    penalty = [row["train/reg/l1"] for row in results["history"]]
    weights_l1 = [row["weights/l1"] for row in results["history"]]
    # epoch 0 averages scale 0..1/2, epoch 1 scale 1/2..1: both below full strength times sum|w|
    assert penalty[0] < 0.5 * 1e-3 * weights_l1[0] and penalty[1] < 1e-3 * weights_l1[1]
    assert penalty[2] == pytest.approx(1e-3 * weights_l1[2], rel=0.1)
