"""Bad data files: each gives one clear error naming the file, and leaves no half-written cache behind, so the
run after the file is fixed goes through."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from reglab.data.cifar10 import CIFAR10DataModule
from reglab.errors import DataUnavailableError

CLASSES_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


def cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "cifar10").glob("*")) if (cache / "cifar10").is_dir() else []


def setup(path: Path, cache: Path) -> CIFAR10DataModule:
    datamodule = CIFAR10DataModule(path=str(path), cache_dir=str(cache), val_size=10, train_eval_size=10)
    datamodule.setup()
    return datamodule


def test_truncated_parquet_names_the_file_and_caches_nothing(cifar_parquet, tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(cifar_parquet, data)
    train = data / "train.parquet"
    original = train.read_bytes()
    train.write_bytes(original[: len(original) // 2])
    with pytest.raises(DataUnavailableError, match=r"train\.parquet: cannot read parquet"):
        setup(data, cache)
    assert cache_files(cache) == []
    train.write_bytes(original)  # fixed: the next run decodes and caches
    assert len(setup(data, cache).splits.train[1]) == 80 and len(cache_files(cache)) == 1


def test_unreadable_image_names_the_file(cifar_imagefolder, tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(cifar_imagefolder, data)
    broken = sorted((data / "train" / "cat").glob("*.png"))[0]
    broken.write_bytes(b"not a png")
    with pytest.raises(DataUnavailableError) as raised:
        setup(data, cache)
    assert broken.name in str(raised.value)
    assert cache_files(cache) == []


def test_empty_split_names_the_file(tmp_path):
    from conftest import write_parquet_split

    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    write_parquet_split(data / "train.parquet", 40, seed=0)
    write_parquet_split(data / "validation.parquet", 0, seed=1)
    with pytest.raises(DataUnavailableError, match=r"validation\.parquet.*(empty|cannot read)"):
        setup(data, cache)
    assert cache_files(cache) == []


def test_wandb_without_network_falls_back_to_offline_fast(monkeypatch, caplog):
    """A configured (here: bad) API key and no network: offline with one warning, within seconds."""
    import time

    from reglab.loggers import resolve_wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: as good as no network
    started = time.time()
    with caplog.at_level("WARNING"):
        assert resolve_wandb_mode("auto") == "offline"
        assert resolve_wandb_mode("online") == "offline"
    assert time.time() - started < 10
    assert sum("W&B is unreachable" in r.message for r in caplog.records) == 2


def test_wandb_refusing_the_run_falls_back_to_offline(monkeypatch, tmp_path, caplog):
    from pytorch_lightning.loggers import WandbLogger

    from reglab.loggers import online_or_offline

    class Refused(WandbLogger):
        @property
        def experiment(self):
            raise RuntimeError("401: invalid API key")

    monkeypatch.setenv("WANDB_MODE", "offline")
    with caplog.at_level("WARNING"):
        logger = online_or_offline(Refused(save_dir=str(tmp_path)), lambda: WandbLogger(save_dir=str(tmp_path),
                                                                                        offline=True))
    assert not isinstance(logger, Refused) and "invalid API key" in caplog.text


# -- data that does not fit the task: checked once, at load, before anything is cached --------------------------

def write_images_parquet(path: Path, images, labels, class_names: list[str] | None = CLASSES_NAMES) -> None:
    """A hub-schema parquet written through pyarrow, so labels a ClassLabel would refuse still get in (as in a
    file made by other tools)."""
    import io
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    encoded = []
    for array in images:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    label = {"names": class_names, "_type": "ClassLabel"} if class_names else {"dtype": "int64", "_type": "Value"}
    features = {"img": {"_type": "Image"}, "label": label}
    table = pa.table({"img": encoded, "label": pa.array(labels, pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, str(path))


def arrays(n: int, seed: int, size: int = 32):
    from conftest import tiny_cifar_arrays

    images, labels = tiny_cifar_arrays(n, seed)
    if size != 32:
        images = np.ascontiguousarray(images[:, :size, :size])
    return list(images), labels.tolist()


def leftovers(cache: Path) -> list[Path]:
    """Everything under the cache: a refused source must leave nothing (no decoded tensors, no HF arrow files)."""
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


@pytest.mark.parametrize("class_names", [CLASSES_NAMES, None], ids=["classlabel", "integers"])
@pytest.mark.parametrize("bad_label", [10, -1])
def test_label_outside_the_classes_names_file_and_row(tmp_path, class_names, bad_label):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    images, labels = arrays(40, 0)
    labels[17] = bad_label
    write_images_parquet(data / "train.parquet", images, labels, class_names)
    write_images_parquet(data / "validation.parquet", *arrays(20, 1), class_names)
    with pytest.raises(DataUnavailableError) as raised:
        setup(data, cache)
    message = str(raised.value)
    assert f"train.parquet row 17: label {bad_label} is not a class id in [0, 10)" in message
    assert "(data.num_classes=10; 1 of the 40 labels in this split are out of range)" in message
    assert "\n" not in message and leftovers(cache) == []


def test_label_row_is_counted_within_its_file_when_a_split_has_several(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    (data / "train").mkdir(parents=True)
    write_images_parquet(data / "train" / "train-00000-of-00002.parquet", *arrays(30, 0))
    images, labels = arrays(30, 1)
    labels[4] = 12
    write_images_parquet(data / "train" / "train-00001-of-00002.parquet", images, labels)
    with pytest.raises(DataUnavailableError, match=r"train-00001-of-00002\.parquet row 4: label 12 "):
        setup(data, cache)


def test_images_of_different_sizes_in_one_split_name_the_row(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    images, labels = arrays(30, 0)
    images[9] = np.zeros((40, 40, 3), dtype=np.uint8)
    write_images_parquet(data / "train.parquet", images, labels)
    with pytest.raises(DataUnavailableError) as raised:
        setup(data, cache)
    assert "train.parquet row 9: image is 40x40x3" in str(raised.value)
    assert "row 0 is 32x32x3" in str(raised.value) and leftovers(cache) == []


def test_image_of_another_size_in_an_image_folder_names_the_file(cifar_imagefolder, tmp_path):
    from PIL import Image

    data, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(cifar_imagefolder, data)
    odd = sorted((data / "train" / "dog").glob("*.png"))[-1]
    Image.new("RGB", (24, 24)).save(odd)
    with pytest.raises(DataUnavailableError, match=rf"{odd.name}: image is 24x24x3 .* must have one size"):
        setup(data, cache)
    assert leftovers(cache) == []


def test_splits_of_different_image_sizes_are_refused(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    write_images_parquet(data / "train.parquet", *arrays(30, 0))
    write_images_parquet(data / "validation.parquet", *arrays(20, 1, size=16))
    with pytest.raises(DataUnavailableError, match=r"validation split's images are 3x16x16 .* train split's are "
                                                   r"3x32x32"):
        setup(data, cache)
    assert leftovers(cache) == []


def test_image_folder_with_another_class_count_is_refused(cifar_imagefolder, tmp_path):
    from reglab.data.images import ImageDataModule

    data, cache = tmp_path / "data", tmp_path / "cache"
    shutil.copytree(cifar_imagefolder, data)
    for split in ("train", "test"):
        shutil.rmtree(data / split / "truck")
    with pytest.raises(DataUnavailableError, match=r"has 9 classes \(airplane, .*\) but data.num_classes=10"):
        setup(data, cache)
    assert leftovers(cache) == []
    # The generic image data declares no count: 9 classes are what the data has, and the model gets 9 outputs.
    generic = ImageDataModule(path=str(data), cache_dir=str(cache), val_size=10, train_eval_size=10)
    assert generic.model_kwargs["num_classes"] == 9
    # The decoded cache is re-checked on every load: num_classes is not part of its key.
    with pytest.raises(DataUnavailableError, match=r"has 9 classes"):
        ImageDataModule(path=str(data), cache_dir=str(cache), val_size=10, num_classes=10).setup()


def test_good_data_still_loads_and_caches_once(cifar_parquet, tmp_path):
    cache = tmp_path / "cache"
    setup(cifar_parquet, cache)
    assert [p.parent.name for p in leftovers(cache)] == ["cifar10"]  # the decoded tensors only, no HF arrow files


def test_unwritable_cache_is_named_as_the_cache(cifar_parquet, tmp_path, monkeypatch):
    import os

    from reglab.errors import ConfigError

    cache = tmp_path / "cache"
    cache.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == cache else real_access(path, mode))
    with pytest.raises(ConfigError, match=r"paths.cache_dir=.*: is not writable by this user \(decoded data is "
                                          r"cached there\); point paths.cache_dir at a writable folder"):
        setup(cifar_parquet, cache)
    monkeypatch.undo()
    setup(cifar_parquet, cache)  # a cache already written is only read: a read-only cache then works
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == cache else real_access(path, mode))
    assert len(setup(cifar_parquet, cache).splits.train[1]) == 80
