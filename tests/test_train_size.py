"""data.train_size: a class-stratified, nested training subset fixed by data.subset_seed; data.augment=false."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT
from reglab.data.sources import stratified_subset, subset_count
from reglab.errors import ConfigError
from reglab.run import train


def test_subset_is_stratified_nested_and_fixed_by_its_seed():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    small, large = stratified_subset(labels, 10, seed=3), stratified_subset(labels, 40, seed=3)
    assert set(small.tolist()) <= set(large.tolist())  # a learning curve adds data, never swaps it
    for subset, size in ((small, 10), (large, 40)):
        counts = torch.bincount(labels[subset], minlength=3)
        assert counts.sum() == size and len(set(subset.tolist())) == size
        assert (counts.float() - size * torch.tensor([0.5, 0.3, 0.2])).abs().max() <= 1  # each class its share
    assert torch.equal(stratified_subset(labels, 40, seed=3), large)
    assert not torch.equal(stratified_subset(labels, 40, seed=4), large)
    assert torch.equal(stratified_subset(labels, 100, seed=3), torch.arange(100))


@pytest.mark.parametrize("value,n,expected", [(None, 100, None), (10, 100, 10), (0.25, 100, 25), (1.0, 100, 100),
                                              (40.0, 100, 40), (1, 100, 1)])
def test_train_size_is_a_count_or_a_fraction(value, n, expected):
    assert subset_count(value, n) == expected


@pytest.mark.parametrize("value", [0, -3, 1.5, 0.0, "half", True, 101])
def test_bad_train_size_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"data.train_size=.*allowed: null \(all\), a count >= 1, or a fraction"):
        subset_count(value, 100)


def test_bad_train_size_fails_before_any_data_is_read(make_config):
    with pytest.raises(ConfigError, match="data.train_size=-1"):
        train(make_config("data=digits", "data.train_size=-1"))
    with pytest.raises(ConfigError, match="data.subset_seed='x': must be an integer >= 0"):
        train(make_config("data=digits", "data.subset_seed=x"))
    with pytest.raises(ConfigError, match="data.train_size=5000: allowed.*the train split has 1077"):
        train(make_config("data=digits", "data.train_size=5000"))


@pytest.mark.slow
def test_train_size_trains_on_the_subset_and_records_it(make_config):
    from reglab.data.digits import DigitsDataModule

    full = DigitsDataModule(augment=False)
    full.setup()
    sub = DigitsDataModule(train_size=100, subset_seed=0)
    sub.setup()
    assert sub.split_sizes == {"train": 100, "val": full.split_sizes["val"], "test": full.split_sizes["test"]}
    assert torch.equal(sub.splits.val[1], full.splits.val[1]) and torch.equal(sub.splits.test[0], full.splits.test[0])
    assert torch.bincount(sub.splits.train[1], minlength=10).min() >= 9  # 10 classes, ~10 each
    cfg = make_config("data=digits", "data.train_size=0.1", "data.augment=false", "trainer.max_epochs=1")
    train(cfg)
    results = json.loads((ROOT / cfg.paths.output_dir / "results.json").read_text())
    assert results["split_sizes"]["train"] == round(0.1 * full.split_sizes["train"])
    assert results["config"]["data"]["train_size"] == 0.1 and results["config"]["data"]["subset_seed"] == 0


def test_augment_false_switches_off_crop_and_flip():
    from reglab.data.cifar10 import CIFAR10DataModule

    class Training:
        training = True

    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    for augment, changed in ((False, False), (True, True)):
        module = CIFAR10DataModule(crop_padding=4, hflip=True, augment=augment)
        module.mean, module.std, module.trainer = torch.zeros(3), torch.ones(3), Training()
        torch.manual_seed(0)
        out, _ = module.on_after_batch_transfer((images, torch.zeros(8)), 0)
        assert torch.equal(out, images.float() / 255.0) != changed
