"""CNN shapes and dropout sites, batched augmentation, and the weight statistics the module logs."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF
from reglab.data.augment import normalize, random_crop, random_hflip
from reglab.errors import ConfigError
from reglab.models.cnn import CNN
from reglab.module import weight_statistics
from reglab.regularizers import build_regularizers
from reglab.regularizers.dropout import Dropout
from reglab.regularizers.l2 import L2

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "decoupled_weight_decay": True}

SMALL = dict(widths=[4, 8], convs_per_stage=1, fc_hidden=8)


def all_rates(model: CNN) -> dict[str, list[float]]:
    return {site: [m.p for m in modules] for site, modules in model.dropout_sites().items()}


# ------------------------------------------------------------------------------------------------- CNN


@pytest.mark.parametrize("shape,kwargs", [
    ((3, 32, 32), {}),  # the default VGG-ish widths
    ((3, 32, 32), SMALL),
    ((1, 8, 8), {}),
    ((1, 8, 8), SMALL),
    ((1, 8, 8), dict(widths=[4], convs_per_stage=2, fc_hidden=0, batchnorm=False, activation="gelu")),
])
def test_cnn_output_shape(shape, kwargs):
    torch.manual_seed(0)
    model = CNN(in_channels=shape[0], image_size=shape[1], num_classes=7, **kwargs)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_cnn_default_sites_are_typed_and_off():
    model = CNN(in_channels=3, image_size=32, num_classes=10)
    sites = model.dropout_sites()
    assert set(sites) == {"conv", "fc"}
    assert len(sites["conv"]) == 3  # one per stage (default widths (32, 64, 128))
    assert len(sites["fc"]) == 1
    assert all(type(m) is nn.Dropout2d for m in sites["conv"])
    assert all(type(m) is nn.Dropout for m in sites["fc"])
    assert all(m.p == 0.0 for ms in sites.values() for m in ms)
    # the sites are real submodules of the model, so setting their p changes the model
    submodules = {id(m) for m in model.modules()}
    assert all(id(m) in submodules for ms in sites.values() for m in ms)


def test_cnn_flatten_head_reads_every_position_of_the_last_map():
    flat = CNN(in_channels=3, image_size=32, num_classes=10, widths=[8, 16], convs_per_stage=1, fc_hidden=32,
               global_pool="none")
    averaged = CNN(in_channels=3, image_size=32, num_classes=10, widths=[8, 16], convs_per_stage=1, fc_hidden=32)
    assert flat.head[0].in_features == 16 * 8 * 8 and averaged.head[0].in_features == 16
    x = torch.randn(2, 3, 32, 32)
    assert flat(x).shape == (2, 10)
    flat.eval()
    with torch.no_grad():  # unlike the average, the flattened head sees where a feature is
        moved = flat(torch.roll(x, shifts=8, dims=3))
        assert not torch.allclose(moved, flat(x))


def test_cnn_bad_config_raises():
    for kwargs, key in ((dict(activation="tanh"), "activation"), (dict(widths=[]), "widths"),
                        (dict(convs_per_stage=0), "convs_per_stage"), (dict(fc_hidden=-1), "fc_hidden"),
                        (dict(global_pool="max"), "global_pool")):
        with pytest.raises(ConfigError, match=key):
            CNN(in_channels=1, image_size=8, num_classes=2, **kwargs)


def test_dropout_regularizer_sets_p_and_per_type_rates():
    model = CNN(in_channels=3, image_size=32, num_classes=10, **SMALL)
    Dropout(p=0.3).configure(model)
    assert all_rates(model) == {"conv": [0.3, 0.3], "fc": [0.3]}
    model = CNN(in_channels=3, image_size=32, num_classes=10, **SMALL)
    Dropout(p=0.3, rates={"fc": 0.5}).configure(model)
    assert all_rates(model) == {"conv": [0.3, 0.3], "fc": [0.5]}
    model = CNN(in_channels=3, image_size=32, num_classes=10, **SMALL)
    Dropout(p=0.25, rates={"conv": 0.1, "fc": 0.0}).configure(model)
    assert all_rates(model) == {"conv": [0.1, 0.1], "fc": [0.0]}


def test_dropout_yaml_sets_every_site():
    model = CNN(in_channels=1, image_size=8, num_classes=3, **SMALL)
    (reg,) = build_regularizers(OmegaConf.load(CONF / "reg" / "dropout.yaml"))
    assert reg.p is None
    reg.configure(model)
    assert all_rates(model) == {"conv": [0.0, 0.0], "fc": [0.5]}  # the CNN's recommended rates


def test_dropout_defaults_come_from_the_model_and_p_or_rates_override_them():
    from reglab.models.transformer import TransformerClassifier

    transformer = TransformerClassifier(vocab_size=50, num_classes=2, max_length=12)
    Dropout().configure(transformer)  # declares no defaults: 0.1 at every site
    assert {site: set(rates) for site, rates in all_rates(transformer).items()} == {
        "embedding": {0.1}, "attention": {0.1}, "residual": {0.1}, "classifier": {0.1}}
    model = CNN(in_channels=1, image_size=8, num_classes=3, **SMALL)
    Dropout(rates={"fc": 0.3}).configure(model)
    assert all_rates(model) == {"conv": [0.0, 0.0], "fc": [0.3]}
    Dropout(p=0.2, rates={"fc": 0.3}).configure(model)
    assert all_rates(model) == {"conv": [0.2, 0.2], "fc": [0.3]}
    with pytest.raises(ConfigError, match="reg.dropout.p"):
        Dropout(p=1.0)


def test_reg_none_and_non_dropout_regularizers_leave_sites_off():
    from reglab.module import ClassifierModule

    model = CNN(in_channels=1, image_size=8, num_classes=3, **SMALL)
    regs = build_regularizers(OmegaConf.load(CONF / "reg" / "none.yaml"))
    assert regs == []
    ClassifierModule(model, regs, OmegaConf.create({**ADAM, "lr": 1e-3}), num_classes=3)
    assert all_rates(model) == {"conv": [0.0, 0.0], "fc": [0.0]}
    L2(strength=1e-3).configure(model)
    assert all_rates(model) == {"conv": [0.0, 0.0], "fc": [0.0]}


def test_dropout_site_is_inverted_dropout():
    torch.manual_seed(0)
    model = CNN(in_channels=3, image_size=32, num_classes=10, **SMALL)
    Dropout(p=0.25, rates={"fc": 0.5}).configure(model)
    model.train()
    fc = model.dropout_sites()["fc"][0]
    out = fc(torch.ones(200, 100))
    values = set(out.unique().tolist())
    assert values == {0.0, 2.0}  # survivors scaled by 1 / (1 - 0.5)
    assert 0.45 < float((out == 0).float().mean()) < 0.55

    conv = model.dropout_sites()["conv"][0]
    out = conv(torch.ones(64, 16, 5, 5))
    survivors = out[out != 0]
    torch.testing.assert_close(survivors, torch.full_like(survivors, 1 / 0.75))
    # Dropout2d drops whole channels: each (n, c) map is all zero or all survivors
    per_channel_zero = (out == 0).float().mean(dim=(2, 3))
    assert set(per_channel_zero.unique().tolist()) == {0.0, 1.0}
    assert 0.2 < float(per_channel_zero.mean()) < 0.3


def test_eval_is_deterministic_and_train_is_not_with_dropout():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    model = CNN(in_channels=3, image_size=32, num_classes=10, **SMALL)

    # control: with p = 0 even train mode is deterministic, so a difference below is dropout's doing
    model.train()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)

    Dropout(p=0.5).configure(model)
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)

    model.train()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------------------------------------- augment


def distinct_images(n: int, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    """uint8 images whose pixels within each image are distinct and non-zero (so unlike the padding)."""
    assert c * h * w <= 255
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(255, generator=g)[: c * h * w] + 1 for _ in range(n)])
    return perms.reshape(n, c, h, w).to(torch.uint8)


def crop_offsets(images: torch.Tensor, out: torch.Tensor, padding: int) -> torch.Tensor:
    """For each output, the (dy, dx) window of its own zero-padded input it equals; -1 if none."""
    n, c, h, w = images.shape
    padded = nn.functional.pad(images, (padding,) * 4)
    size = 2 * padding + 1
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, c, size, size, h, w)
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(n, size * size, c, h, w)
    match = (windows == out[:, None]).flatten(2).all(dim=2)  # (n, size*size)
    assert (match.sum(dim=1) <= 1).all()  # windows of distinct-valued images are distinct
    return torch.where(match.any(dim=1), match.float().argmax(dim=1), torch.full((n,), -1))


def test_crop_offsets_helper_finds_known_windows():
    # The checker itself: a hand-made crop at (dy, dx) = (1, 6) must be found as 1 * 9 + 6.
    images = distinct_images(2)
    padded = nn.functional.pad(images, (4,) * 4)
    out = torch.stack([padded[0, :, 1:9, 6:14], padded[1, :, 8:16, 0:8]])
    assert crop_offsets(images, out, 4).tolist() == [1 * 9 + 6, 8 * 9 + 0]
    # and a crop taken from the wrong image is not a match
    swapped = torch.stack([padded[1, :, 1:9, 6:14], padded[0, :, 8:16, 0:8]])
    assert crop_offsets(images, swapped, 4).tolist() == [-1, -1]


def test_random_crop_is_a_shifted_window_of_the_padded_input():
    torch.manual_seed(0)
    images = distinct_images(2000)
    out = random_crop(images, padding=4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    offsets = crop_offsets(images, out, 4)
    assert (offsets >= 0).all(), "some output is not a window of its own padded image"
    counts = torch.bincount(offsets, minlength=81)
    assert len(counts) == 81
    expected = 2000 / 81  # ~24.7 each
    assert counts.min() >= 5 and counts.max() <= 55, counts.tolist()
    # loose uniformity: chi-square with 80 dof has mean 80, sd ~12.6
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 160
    # rows and columns are drawn independently of each other
    dy, dx = offsets // 9, offsets % 9
    assert abs(float(torch.corrcoef(torch.stack([dy.float(), dx.float()]))[0, 1])) < 0.1


def test_random_crop_rectangular_and_single_channel():
    torch.manual_seed(1)
    images = distinct_images(50, c=1, h=6, w=10)
    out = random_crop(images, padding=2)
    assert out.shape == (50, 1, 6, 10)
    n, c, h, w = images.shape
    padded = nn.functional.pad(images, (2,) * 4)
    for i in range(n):
        assert any(torch.equal(out[i], padded[i, :, dy:dy + h, dx:dx + w]) for dy in range(5) for dx in range(5))


def test_random_crop_padding_zero_is_identity():
    images = distinct_images(10)
    assert torch.equal(random_crop(images, padding=0), images)


def test_random_hflip_flips_about_half_exactly():
    torch.manual_seed(0)
    images = distinct_images(1000)
    out = random_hflip(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    same = (out == images).flatten(1).all(dim=1)
    flipped = (out == images.flip(3)).flatten(1).all(dim=1)
    assert (same ^ flipped).all()  # each image is exactly one of the two (distinct pixels: not symmetric)
    assert 350 <= int(flipped.sum()) <= 650


def test_normalize_with_batch_statistics():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    images[:, 1] //= 4  # channels with different statistics
    images[:, 2] = images[:, 2] // 2 + 100
    scaled = images.float() / 255.0
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3), correction=0)
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), correction=0), torch.ones(3), rtol=0, atol=1e-5)
    # and it is exactly the per-channel affine map of x / 255
    torch.testing.assert_close(out[0, 2, 0, 0], (scaled[0, 2, 0, 0] - mean[2]) / std[2])


# ------------------------------------------------------------------------------------- weight statistics


def test_weight_statistics_exact():
    params = [torch.tensor([[1.0, -2.0], [0.0, 0.0005]]), torch.tensor([3.0, 0.0, -0.002]),
              torch.tensor([[[-4.0]]])]
    stats = weight_statistics(params, eps=1e-3)
    assert set(stats) == {"weights/l1", "weights/l2", "weights/zero_frac", "weights/small_frac", "weights/nonzero",
                          "weights/sparse_bytes", "weights/dense_bytes"}
    assert float(stats["weights/nonzero"]) == 6
    # COO: each non-zero float32 costs 4 bytes + 8 per index dimension: 3 of the 2-d, 2 of the 1-d, 1 of the 3-d
    assert float(stats["weights/sparse_bytes"]) == 3 * (4 + 16) + 2 * (4 + 8) + 1 * (4 + 24)
    assert float(stats["weights/dense_bytes"]) == 8 * 4
    assert float(stats["weights/l1"]) == pytest.approx(1 + 2 + 0 + 0.0005 + 3 + 0 + 0.002 + 4, rel=1e-6)
    assert float(stats["weights/l2"]) == pytest.approx(math.sqrt(1 + 4 + 0.0005 ** 2 + 9 + 0.002 ** 2 + 16),
                                                       rel=1e-6)
    assert float(stats["weights/zero_frac"]) == pytest.approx(2 / 8, abs=1e-7)
    # |w| < 1e-3: the two zeros and 0.0005 (0.002 is not small)
    assert float(stats["weights/small_frac"]) == pytest.approx(3 / 8, abs=1e-7)


def test_weight_statistics_eps_boundary_is_strict():
    stats = weight_statistics([torch.tensor([0.5, -0.5, 0.25, 1.0])], eps=0.5)
    assert float(stats["weights/small_frac"]) == pytest.approx(1 / 4)
    assert float(stats["weights/zero_frac"]) == 0.0
