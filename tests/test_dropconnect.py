"""reg=dropconnect (Wan et al. 2013): masked weights in training equal the hand computation, inference uses the
expectation, gradients flow only through kept weights, and the mask stream survives a checkpoint."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF
from reglab.errors import ConfigError
from reglab.module import ClassifierModule
from reglab.regularizers import build_regularizers
from reglab.regularizers.dropconnect import DropConnect


class TwoLayer(nn.Module):
    input_kind = "image"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(5, 3))

    def forward(self, x):
        return self.head(self.features(x))

    def dropout_sites(self):
        return {}

    def no_weight_decay(self):
        return set()


def expected_mask(seed: int, shape, p: float, draws: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        keep = torch.empty(shape).bernoulli_(1.0 - p, generator=generator)
    return keep


def test_training_output_is_the_masked_layer_by_hand_and_inference_the_plain_layer():
    torch.manual_seed(7)  # the mask generator is seeded from torch's initial seed (the run's seed)
    model, p = TwoLayer(), 0.4
    DropConnect(p=p, modules=["head.*"]).configure(model)
    layer = model.head[0]
    x = torch.randn(4, 6)
    hidden = model.features(x)
    keep = expected_mask(torch.initial_seed(), layer.weight.shape, p)
    assert 0 < keep.sum() < keep.numel()
    by_hand = hidden @ (layer.weight * keep / (1 - p)).T + layer.bias
    model.train()
    torch.testing.assert_close(model(x), by_hand)
    model.eval()  # the expectation of the masked layer: the weights as they are
    torch.testing.assert_close(model(x), hidden @ layer.weight.T + layer.bias)


def test_gradients_flow_only_through_kept_weights_scaled_by_one_over_keep():
    torch.manual_seed(3)
    model, p = TwoLayer(), 0.5
    DropConnect(p=p).configure(model)
    layer = model.head[0]
    x = torch.randn(8, 6)
    keep = expected_mask(torch.initial_seed(), layer.weight.shape, p)
    model.train()
    model(x).sum().backward()
    hidden = model.features(x).detach()
    # d/dW sum(h (W*m/(1-p))^T) = m/(1-p) * (sum over the batch of h), the same row for every output unit
    expected = keep / (1 - p) * hidden.sum(0)[None, :]
    torch.testing.assert_close(layer.weight.grad, expected)
    assert (layer.weight.grad[keep == 0] == 0).all()


def test_masks_average_to_the_expectation():
    torch.manual_seed(1)
    model = TwoLayer()
    DropConnect(p=0.3).configure(model)
    x = torch.randn(2, 6)
    model.train()
    with torch.no_grad():
        mean = torch.stack([model(x) for _ in range(4000)]).mean(0)
    model.eval()
    torch.testing.assert_close(mean, model(x), atol=0.03, rtol=0)


def test_the_mask_stream_continues_exactly_after_a_checkpoint():
    """What exact resume needs: the module saves the regularizer's generator and puts it back."""
    optim = OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})
    torch.manual_seed(5)
    model = TwoLayer()
    module = ClassifierModule(model, [DropConnect(p=0.5)], optim, num_classes=3)
    x = torch.randn(3, 6)
    model.train()
    for _ in range(3):
        model(x)
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    state = checkpoint[ClassifierModule.REGULARIZER_STATE_KEY]["dropconnect"]
    assert isinstance(state["generator"], torch.Tensor)  # loads under weights_only=True
    continued = model(x)

    torch.manual_seed(99)  # a fresh process would seed differently: only the checkpoint can bring the stream back
    fresh_model = TwoLayer()
    fresh_model.load_state_dict(model.state_dict())
    fresh = ClassifierModule(fresh_model, [DropConnect(p=0.5)], optim, num_classes=3)
    fresh.on_load_checkpoint(checkpoint)
    fresh_model.train()
    torch.testing.assert_close(fresh_model(x), continued)


def test_a_checkpoint_without_the_state_is_a_clear_error():
    optim = OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3})
    module = ClassifierModule(TwoLayer(), [DropConnect(p=0.5)], optim, num_classes=3)
    with pytest.raises(ConfigError, match="reg.dropconnect: the checkpoint carries no state for it"):
        module.on_load_checkpoint({})


def test_config_and_bad_values():
    (reg,) = build_regularizers(OmegaConf.load(CONF / "reg" / "dropconnect.yaml"))
    assert reg.name == "dropconnect" and reg.p == 0.5 and reg.module_patterns == ["head.*"]
    with pytest.raises(ConfigError, match=r"reg.dropconnect.p=1.0: a dropout rate must be in \[0, 1\)"):
        DropConnect(p=1.0)
    with pytest.raises(ConfigError, match=r"reg.dropconnect.p=None: a dropout rate must be in \[0, 1\)"):
        DropConnect(p=None)
    with pytest.raises(ConfigError, match=r"reg.dropconnect.modules=\['nothing.\*'\]: match no Linear layer"):
        DropConnect(modules=["nothing.*"]).configure(TwoLayer())
