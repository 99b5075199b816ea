"""Datamodules: every CIFAR-10 layout, the decoded cache, splits, offline failure, digits."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

from reglab.data.cifar10 import CIFAR10DataModule
from reglab.data.sources import split_of
from reglab.data.digits import DigitsDataModule
from reglab.errors import ConfigError, DataUnavailableError


def cifar(path, tmp_path, **kwargs):
    defaults = dict(path=str(path), cache_dir=str(tmp_path / "cache"), val_size=20, batch_size=16,
                    train_eval_size=25, crop_padding=4, hflip=True)
    return CIFAR10DataModule(**(defaults | kwargs))


@pytest.mark.parametrize("layout,n_train,n_val,n_test,test_split", [
    ("cifar_parquet", 80, 30, 30, "validation"),  # has validation, no test: tests on validation
    ("cifar_imagefolder", 60, 20, 30, "test"),     # train + test: validation carved from train
    ("cifar_python_batches", 80, 20, 30, "test"),
])
def test_layouts_load_as_uint8_with_the_right_splits(request, tmp_path, layout, n_train, n_val, n_test, test_split):
    dm = cifar(request.getfixturevalue(layout), tmp_path)
    dm.setup()
    images, labels = dm.splits.train
    assert images.dtype == torch.uint8 and images.shape == (n_train, 3, 32, 32)
    assert len(dm.splits.val[1]) == n_val and len(dm.splits.test[1]) == n_test
    assert dm.test_split == test_split
    assert dm.splits.class_names[:2] == ["airplane", "automobile"]
    assert dm.model_kwargs == {"in_channels": 3, "image_size": 32, "num_classes": 10}
    assert set(labels.tolist()) == set(range(10))


def test_layouts_agree_on_pixels(cifar_python_batches, cifar_imagefolder, tmp_path):
    """The same images through two layouts decode to the same tensors (test split: same seed)."""
    batches = cifar(cifar_python_batches, tmp_path).load_decoded()["splits"]["test"]
    folder = cifar(cifar_imagefolder, tmp_path).load_decoded()["splits"]["test"]
    order = lambda split: torch.argsort(split[0].flatten(1).float().sum(1) * 100 + split[1])  # noqa: E731
    assert torch.equal(batches[0][order(batches)], folder[0][order(folder)])
    assert torch.equal(batches[1][order(batches)], folder[1][order(folder)])


def test_decoded_cache_is_reused_and_never_half_written(cifar_parquet, tmp_path, monkeypatch):
    first = cifar(cifar_parquet, tmp_path)
    first.setup()
    caches = list((tmp_path / "cache" / "cifar10").glob("*.pt"))
    assert len(caches) == 1
    assert not list((tmp_path / "cache" / "cifar10").glob(".*.tmp"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(CIFAR10DataModule, "read_source", no_decoding)
    second = cifar(cifar_parquet, tmp_path)
    second.setup()
    assert torch.equal(first.splits.train[0], second.splits.train[0])


def test_carve_val_holds_the_sources_validation_split_out_as_the_test(cifar_parquet, tmp_path):
    plain, carved = cifar(cifar_parquet, tmp_path), cifar(cifar_parquet, tmp_path, carve_val=True)
    plain.setup()
    carved.setup()
    assert len(carved.splits.train[1]) == 60 and len(carved.splits.val[1]) == 20
    assert torch.equal(carved.splits.test[0], plain.splits.val[0])  # the source's validation, never tuned on
    train_and_val = torch.cat([carved.splits.train[0], carved.splits.val[0]])
    assert torch.equal(train_and_val.flatten(1).sum(1).sort().values,
                       plain.splits.train[0].flatten(1).sum(1).sort().values)  # validation came out of train
    assert carved.test_split == "validation (held out)" and plain.test_split == "validation"
    with pytest.raises(ConfigError, match="data.carve_val"):
        cifar(cifar_parquet, tmp_path, carve_val="yes")


def test_val_split_is_seeded(cifar_imagefolder, tmp_path):
    a, b, c = (cifar(cifar_imagefolder, tmp_path, val_seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.splits.val[0], b.splits.val[0])
    assert not torch.equal(a.splits.val[0], c.splits.val[0])


def test_offline_without_a_copy_fails_fast_with_the_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    dm = CIFAR10DataModule(path=None, cache_dir=str(tmp_path / "empty"))
    started = time.time()
    with pytest.raises(DataUnavailableError, match="data.path=DIR"):
        dm.setup()
    assert time.time() - started < 5


def test_missing_path_and_bad_sizes_are_config_errors(tmp_path, cifar_imagefolder):
    with pytest.raises(ConfigError, match="data.path"):
        CIFAR10DataModule(path=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="data.batch_size"):
        CIFAR10DataModule(path=None, batch_size=0)
    with pytest.raises(ConfigError, match="data.val_size"):
        cifar(cifar_imagefolder, tmp_path, val_size=10_000).setup()


def test_unreadable_image_names_the_file_and_leaves_no_cache(tmp_path, cifar_imagefolder):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(cifar_imagefolder, broken)
    bad = next((broken / "train" / "cat").glob("*.png"))
    bad.write_bytes(b"not a png")
    with pytest.raises(DataUnavailableError, match=bad.name):
        cifar(broken, tmp_path).setup()
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_split_names():
    assert split_of("train-00000-of-00001.parquet") == "train"
    assert split_of("validation.parquet") == "validation"
    assert split_of("val.parquet") == "validation"
    assert split_of("test.parquet") == "test"
    assert split_of("readme.parquet") is None


def test_train_batches_are_augmented_and_eval_batches_are_not(cifar_python_batches, tmp_path):
    dm = cifar(cifar_python_batches, tmp_path)
    dm.setup()

    class Phase:
        training = True

    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape[0] == 16
    dm.trainer = Phase()
    augmented, _ = dm.on_after_batch_transfer((images, labels), 0)
    Phase.training = False
    plain, _ = dm.on_after_batch_transfer((images, labels), 0)
    assert augmented.dtype == torch.float32 and not torch.equal(augmented, plain)
    again, _ = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(plain, again)


def test_digits_is_seeded_real_and_disjoint():
    a, b = DigitsDataModule(split_seed=0), DigitsDataModule(split_seed=0)
    a.setup(), b.setup()
    assert a.model_kwargs == {"in_channels": 1, "image_size": 8, "num_classes": 10}
    sizes = [len(split[1]) for split in (a.splits.train, a.splits.val, a.splits.test)]
    assert sum(sizes) == 1797 and min(sizes) > 300
    assert torch.equal(a.splits.test[0], b.splits.test[0])
    rows = lambda split: {tuple(x.flatten().tolist()) for x in split[0]}  # noqa: E731
    assert not rows(a.splits.train) & rows(a.splits.test)  # no test image is also a training image


def test_grayscale_decodes_one_channel_the_same_way_in_every_layout(cifar_python_batches, cifar_imagefolder,
                                                                     cifar_parquet, tmp_path):
    from PIL import Image

    from reglab.data.images import ImageDataModule

    gray = ImageDataModule(path=str(cifar_parquet), cache_dir=str(tmp_path / "cache"), image_mode="L", val_size=20)
    gray.setup()
    assert gray.splits.train[0].shape == (80, 1, 32, 32) and gray.model_kwargs["in_channels"] == 1
    rgb = ImageDataModule(path=str(cifar_parquet), cache_dir=str(tmp_path / "cache"), val_size=20)
    rgb.setup()
    first = rgb.splits.train[0][0].permute(1, 2, 0).numpy()
    assert torch.equal(gray.splits.train[0][0, 0], torch.tensor(np.asarray(Image.fromarray(first).convert("L"))))
    assert len(list((tmp_path / "cache" / "images").glob("*.pt"))) == 2  # one cache per mode
    batches = cifar(cifar_python_batches, tmp_path, image_mode="L").load_decoded()["splits"]["test"]
    folder = cifar(cifar_imagefolder, tmp_path, image_mode="L").load_decoded()["splits"]["test"]
    order = lambda split: torch.argsort(split[0].flatten(1).float().sum(1) * 100 + split[1])  # noqa: E731
    assert batches[0].shape == (30, 1, 32, 32) and torch.equal(batches[0][order(batches)], folder[0][order(folder)])
    with pytest.raises(ConfigError, match=r"data.image_mode='CMYK': allowed \['RGB', 'L'\]"):
        ImageDataModule(path=str(cifar_parquet), image_mode="CMYK")
    with pytest.raises(ConfigError, match="data.path=None: give a local copy"):
        ImageDataModule()


@pytest.mark.parametrize("resident", [False, True])
def test_train_batches_per_epoch_is_the_loaders_length_without_a_loader(cifar_python_batches, tmp_path, resident):
    from reglab.data.batching import TrainBatches

    class Trainer:
        global_rank, world_size, training, datamodule = 0, 1, True, None

        class strategy:
            root_device = torch.device("cpu")

    dm = cifar(cifar_python_batches, tmp_path, train_size=67, device_resident=resident)  # 67 = 4 batches of 16 + 3
    counts = {world: dm.train_batches_per_epoch(world) for world in (1, 2)}
    assert counts == {1: 5, 2: 5}
    dm.trainer = Trainer()
    loader = dm.train_dataloader()
    assert counts[1] == len(loader) == sum(1 for _ in loader)
    for rank in (0, 1):
        sampler = TrainBatches(67, 16, dm.seed, rank, 2)
        assert counts[2] == len(sampler) == sum(1 for _ in sampler)
    with pytest.raises(ConfigError, match="data.batch_size=16 is the global batch size"):
        dm.train_batches_per_epoch(3)


def test_decoding_says_what_it_does_and_library_bars_stay_off_the_console(cifar_parquet, tmp_path, monkeypatch,
                                                                          caplog, capfd):
    import logging

    from reglab.data import images

    monkeypatch.setattr(images, "HEARTBEAT_S", 0.0)  # a progress line before every image
    monkeypatch.setattr(images, "ANNOUNCE_FROM", 1)
    monkeypatch.setattr(images, "CHUNK", 1)  # progress is counted per chunk handed to a decoding process
    with caplog.at_level(logging.INFO, logger="reglab.data.images"):
        source = images.read_parquet(cifar_parquet, tmp_path / "hf")
        decoded = images.decode_rows(source.splits["train"], torch.arange(80), "RGB")
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.endswith("images on 1 core (once: later runs read the decoded cache)") for line in lines)
    assert any(re.search(r"decoding .*: 1/80 images, [\d,]+/s, about \d+ s left", line) for line in lines), lines
    assert decoded.shape == (80, 3, 32, 32)
    err = capfd.readouterr().err
    assert "Generating train split" not in err and "Downloading data" not in err


def test_train_size_decodes_only_the_rows_a_run_keeps_and_the_cache_grows_by_what_is_missing(cifar_imagefolder,
                                                                                              tmp_path, monkeypatch):
    """60,000 images and data.train_size=2000 must not decode 60,000: only the kept training rows, validation and
    test are decoded; a later run with more rows decodes only those, and both see the same pixels for a row."""
    from reglab.data import images

    decoded_counts = []
    real_decode = images.decode_images

    def counting(encoded, *args, **kwargs):
        decoded_counts.append(len(encoded))
        return real_decode(encoded, *args, **kwargs)

    monkeypatch.setattr(images, "decode_images", counting)
    small = cifar(cifar_imagefolder, tmp_path, train_size=10, train_eval_size=5)
    small.setup()
    assert len(small.splits.train[1]) == 10 and sum(decoded_counts) == 10 + 20 + 30  # train kept + val + test
    larger = cifar(cifar_imagefolder, tmp_path, train_size=30, train_eval_size=5)
    decoded_counts.clear()
    larger.setup()
    assert sum(decoded_counts) == 20  # the nested subset: 10 of its 30 rows were cached by the first run
    full = cifar(cifar_imagefolder, tmp_path)
    full.setup()
    assert len(list((tmp_path / "cache" / "cifar10").glob("*.pt"))) == 1  # one cache per source, grown in place
    decoded_counts.clear()
    again = cifar(cifar_imagefolder, tmp_path, train_size=30, train_eval_size=5)
    again.setup()
    assert decoded_counts == []  # everything is cached now: nothing decoded, the source's files not even read
    for dm in (small, larger, again):
        assert torch.equal(dm.splits.val[0], full.splits.val[0]) and torch.equal(dm.splits.test[0],
                                                                                 full.splits.test[0])
    assert torch.equal(larger.splits.train[0], again.splits.train[0])
    train_rows = {tuple(x.flatten().tolist()) for x in full.splits.train[0]}
    assert {tuple(x.flatten().tolist()) for x in small.splits.train[0]} <= train_rows


def test_decoding_on_several_processes_gives_the_same_pixels_and_names_a_bad_file(cifar_imagefolder, tmp_path,
                                                                                   monkeypatch):
    import shutil

    from reglab.data import images

    monkeypatch.setattr(images, "CHUNK", 7)  # rows cross chunk boundaries
    source = images.scan_imagefolder(cifar_imagefolder)
    items = source.splits["train"].items
    locate = source.splits["train"].locate
    one = images.decode_images(items, "train", "RGB", locate, processes=1)
    two = images.decode_images(items, "train", "RGB", locate, processes=2)
    assert one.shape == (80, 3, 32, 32) and torch.equal(one, two)
    broken = tmp_path / "broken"
    shutil.copytree(cifar_imagefolder, broken)
    bad = sorted((broken / "train" / "horse").glob("*.png"))[-1]
    bad.write_bytes(b"not a png")
    source = images.scan_imagefolder(broken)
    with pytest.raises(DataUnavailableError, match=rf"cannot decode image {re.escape(str(bad))}: "):
        images.decode_images(source.splits["train"].items, "train", "RGB", source.splits["train"].locate,
                             processes=2)


def test_image_folder_layouts_name_splits_and_classes_as_the_datasets_library_does(tmp_path):
    """Class = the image's folder; split = a split-named folder above it at any depth (else train); classes
    sorted. An image outside any class folder is one line naming it."""
    from PIL import Image

    from reglab.data.images import scan_imagefolder

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(path)

    for path in ("copy/train_images/dog/a.png", "copy/train_images/cat/b.png", "copy/train_images/cat/c.jpg",
                 "copy/valid/dog/d.png", "copy/test/cat/e.png", "copy/test/cat/.hidden.png"):
        image(tmp_path / "nested" / path)
    source = scan_imagefolder(tmp_path / "nested")
    assert source.class_names == ["cat", "dog"]
    assert {split: s.labels.tolist() for split, s in source.splits.items()} == {
        "train": [0, 0, 1], "validation": [1], "test": [0]}
    image(tmp_path / "flat" / "bird" / "a.png")
    image(tmp_path / "flat" / "fish" / "b.png")
    assert list(scan_imagefolder(tmp_path / "flat").splits) == ["train"]
    image(tmp_path / "loose" / "train" / "a.png")
    with pytest.raises(DataUnavailableError, match=r"train/a.png: is not in a class folder"):
        scan_imagefolder(tmp_path / "loose")
