"""model=resnet18: the pre-activation ResNet-18's size, shapes and names, its dropout sites under reg=dropout and
MC dropout, and a CLI run that finds it by the yaml's file name alone."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF, run_cli
from reglab.contracts import check_model
from reglab.errors import ConfigError
from reglab.evaluation import mc_probabilities, standard_probabilities
from reglab.models.resnet import PreActResNet18
from reglab.regularizers import build_regularizers
from reglab.regularizers.dropout import Dropout


def rates(model: PreActResNet18) -> dict[str, set[float]]:
    return {site: {m.p for m in modules} for site, modules in model.dropout_sites().items()}


def with_running_stats(width: int = 4, block: float = 0.0, fc: float = 0.0) -> PreActResNet18:
    """A small model whose BatchNorm running statistics are not the initial (0, 1), so a BN left in train mode at
    inference would change the output."""
    torch.manual_seed(0)
    model = PreActResNet18(in_channels=3, image_size=8, num_classes=5, width=width)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8) * 2 + 1)
    Dropout(p=0.0, rates={"block": block, "fc": fc}).configure(model)
    return model


# ------------------------------------------------------------------------------------------------ architecture


def preact_resnet18_parameters(in_channels: int, num_classes: int, width: int) -> int:
    """By hand from the architecture: convs have no bias (BN follows), a BN has 2 parameters per channel."""
    conv = lambda c_in, c_out, k: c_in * c_out * k * k  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total, channels = conv(in_channels, width, 3), width  # stem
    for multiplier in (1, 2, 4, 8):
        out = width * multiplier
        for i in range(2):
            c_in = channels if i == 0 else out
            total += bn(c_in) + conv(c_in, out, 3) + bn(out) + conv(out, out, 3)
            if c_in != out:  # stages 2-4 open with a 1x1 projection shortcut (stride 2)
                total += conv(c_in, out, 1)
        channels = out
    return total + bn(channels) + channels * num_classes + num_classes  # final BN, Linear


def test_parameter_count_is_preact_resnet18():
    model = PreActResNet18(in_channels=3, image_size=32, num_classes=10)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == preact_resnet18_parameters(3, 10, 64) == 11_172_170
    # The widely quoted 11,171,146 (e.g. kuangliu/pytorch-cifar's PreActResNet18) omits the final BN(512).
    assert counted - 2 * 512 == 11_171_146
    small = PreActResNet18(in_channels=1, image_size=8, num_classes=3, width=4)
    assert sum(p.numel() for p in small.parameters()) == preact_resnet18_parameters(1, 3, 4)


@pytest.mark.parametrize("shape,width", [((3, 32, 32), 8), ((1, 8, 8), 4), ((3, 7, 7), 4), ((1, 1, 1), 4)])
def test_output_shape_for_any_image_size(shape, width):
    torch.manual_seed(0)
    model = PreActResNet18(in_channels=shape[0], image_size=shape[1], num_classes=7, width=width)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_names_stride_and_contract():
    model = PreActResNet18(in_channels=3, image_size=32, num_classes=10, width=4)
    names = [name for name, _ in model.named_parameters()]
    assert all(name.startswith(("features.", "head.")) for name in names)
    assert any(name.startswith("head.") for name in names)
    check_model(model)
    assert model.input_kind == "image" and model.no_weight_decay() == set()
    # CIFAR layout: a stride-1 stem and no max-pool, then three halvings: 32 -> 32 -> 16 -> 8 -> 4
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    sizes = []
    for stage in model.features[1:5]:
        stage.register_forward_hook(lambda module, args, output: sizes.append(tuple(output.shape[1:])))
    model(torch.randn(1, 3, 32, 32))
    assert sizes == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4)]


@pytest.mark.parametrize("width", [0, -1, 2.5, "wide"])
def test_bad_width_is_a_config_error_naming_the_key(width):
    with pytest.raises(ConfigError, match=r"^model\.width="):
        PreActResNet18(in_channels=3, image_size=32, num_classes=10, width=width)


# ------------------------------------------------------------------------------------------------------ dropout


def test_sites_are_typed_real_and_off():
    model = PreActResNet18(in_channels=3, image_size=32, num_classes=10, width=4)
    sites = model.dropout_sites()
    assert set(sites) == {"block", "fc"}
    assert len(sites["block"]) == 8 and len(sites["fc"]) == 1  # one per block (4 stages x 2), one before Linear
    assert all(type(m) is nn.Dropout for ms in sites.values() for m in ms)
    assert len({id(m) for ms in sites.values() for m in ms}) == 9
    submodules = {id(m) for m in model.modules()}
    assert all(id(m) in submodules for ms in sites.values() for m in ms)
    assert rates(model) == {"block": {0.0}, "fc": {0.0}}  # reg=none is none


def test_dropout_regularizer_sets_every_site_and_defaults_come_from_the_model():
    model = PreActResNet18(in_channels=3, image_size=32, num_classes=10, width=4)
    Dropout(p=0.5).configure(model)
    assert rates(model) == {"block": {0.5}, "fc": {0.5}}
    model = PreActResNet18(in_channels=3, image_size=32, num_classes=10, width=4)
    (reg,) = build_regularizers(OmegaConf.load(CONF / "reg" / "dropout.yaml"))  # plain reg=dropout
    reg.configure(model)
    assert PreActResNet18.dropout_defaults == {"block": 0.3, "fc": 0.0}
    assert rates(model) == {"block": {0.3}, "fc": {0.0}}
    Dropout(rates={"fc": 0.2}).configure(model)
    assert rates(model) == {"block": {0.3}, "fc": {0.2}}
    with pytest.raises(ConfigError, match="unknown site type"):
        Dropout(rates={"conv": 0.2}).configure(model)  # the CNN's site name means nothing here


def test_train_mode_is_random_only_with_dropout_and_eval_is_deterministic():
    x = torch.randn(4, 3, 16, 16)
    model = with_running_stats()
    model.train()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)  # control: p = 0 is deterministic
    for site_rates in ({"block": 0.3, "fc": 0.0}, {"block": 0.0, "fc": 0.5}):  # each site on its own
        model = with_running_stats(**site_rates)
        model.train()
        assert not torch.allclose(model(x), model(x))
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_mc_dropout_is_random_with_block_dropout_and_standard_without():
    x = torch.randn(6, 3, 8, 8)
    model = with_running_stats(block=0.3)
    torch.manual_seed(1)
    first = mc_probabilities(model, x, samples=4)
    torch.manual_seed(2)
    second = mc_probabilities(model, x, samples=4)
    torch.manual_seed(1)
    again = mc_probabilities(model, x, samples=4)
    assert not torch.allclose(first, second)
    assert torch.equal(first, again)
    assert not model.training and all(not m.training for m in model.modules())  # left in eval mode

    # All rates 0: MC dropout is standard inference, BatchNorm on its running statistics included
    off = with_running_stats()
    torch.testing.assert_close(mc_probabilities(off, x, samples=4), standard_probabilities(off, x), rtol=0, atol=0)
    off.train()
    with torch.no_grad():
        train_mode = off(x).softmax(-1)  # batch statistics: what a BN wrongly left in train mode would give
    assert not torch.allclose(train_mode, standard_probabilities(off, x))


# ------------------------------------------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_cli_trains_resnet18_found_by_its_yaml_alone(tmp_path):
    done = run_cli("data=digits", "model=resnet18", "model.width=4", "reg=dropout", "trainer.max_epochs=1",
                   "trainer.accelerator=cpu", "logger=csv", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["choices"]["model"] == "resnet18"
    assert results["config"]["model"] == {"_target_": "reglab.models.resnet.PreActResNet18", "width": 4}
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0


def test_cli_bad_width_is_one_line_error(tmp_path):
    done = run_cli("data=digits", "model=resnet18", "model.width=0", "trainer.accelerator=cpu", "logger=csv",
                   f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.width=0: must be an integer >= 1"], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
