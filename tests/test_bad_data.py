"""Bad data files: each gives one clear error naming the file, and leaves no half-written cache behind, so the
run after the file is fixed goes through."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reglab.data.cifar10 import CIFAR10DataModule
from reglab.errors import DataUnavailableError


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
