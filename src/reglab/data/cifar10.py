"""CIFAR-10 from the hub or a local copy, decoded once into a cached uint8 tensor.

Local layouts (``data.path=DIR``), detected in this order:
  - cifar-10-batches-py: ``batches.meta``, ``data_batch_*``, ``test_batch`` (in DIR or DIR/cifar-10-batches-py)
  - hub parquet: ``*.parquet`` files named by split (train / validation|valid|val / test), any depth
  - image folder: one subfolder per class, optionally under train/ validation/ test/
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from reglab.atomic import atomic_write
from reglab.data.sources import SPLIT_ALIASES, hub_reachable, split_of
from reglab.data.image_tensors import ImageSplits, ImageTensorDataModule, carve_validation
from reglab.errors import ConfigError, DataUnavailableError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
CACHE_FORMAT = 1


def detect_layout(root: Path) -> tuple[str, Path]:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "batches.meta").is_file():
            return "python_batches", candidate
    if any(root.rglob("*.parquet")):
        return "parquet", root
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        return "imagefolder", root
    raise ConfigError(f"data.path={str(root)!r}: no CIFAR-10 found (expected *.parquet files, an image folder "
                      "with one subfolder per class, or cifar-10-batches-py)")


def source_fingerprint(layout: str, root: Path) -> str:
    """Cache key: layout plus every file's relative path, size and mtime."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps([CACHE_FORMAT, layout, str(root.resolve()), stats]).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def decode_images(encoded: list, where: str) -> torch.Tensor:
    """PNG/JPEG bytes or paths -> (N, 3, H, W) uint8. Runs once per source; the result is cached."""
    from PIL import Image

    arrays = []
    for i, item in enumerate(encoded):
        source = item.get("path") if item.get("bytes") is None else io.BytesIO(item["bytes"])
        try:
            with Image.open(source) as image:
                arrays.append(np.asarray(image.convert("RGB")))
        except Exception as err:
            name = item.get("path") or f"row {i}"
            raise DataUnavailableError(f"{where}: cannot decode image {name}: {err}") from None
    if not arrays:
        raise DataUnavailableError(f"{where}: split is empty")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def dataset_to_tensors(dataset, where: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A `datasets.Dataset` in the hub's schema (img/image + label) -> uint8 images, labels, class names."""
    from datasets import Image

    image_column = next((c for c in ("img", "image") if c in dataset.column_names), None)
    label_column = next((c for c in ("label", "labels") if c in dataset.column_names), None)
    if image_column is None or label_column is None:
        raise DataUnavailableError(f"{where}: expected columns img/image and label, found {dataset.column_names}")
    names = getattr(dataset.features[label_column], "names", None) or [str(i) for i in range(10)]
    encoded = dataset.cast_column(image_column, Image(decode=False))[image_column]
    labels = torch.tensor(dataset[label_column], dtype=torch.long)
    return decode_images(encoded, where), labels, list(names)


def splits_from_datasets(loaded, where) -> dict:
    """{split name: datasets.Dataset} -> decoded {"splits": {split: (images, labels)}, "class_names": [...]};
    ``where(split)`` names the source in errors."""
    splits, class_names = {}, None
    for name, dataset in loaded.items():
        images, labels, names = dataset_to_tensors(dataset, where(name))
        splits[SPLIT_ALIASES.get(name, name)], class_names = (images, labels), class_names or names
    return {"splits": splits, "class_names": class_names}


def load_python_batches(root: Path) -> dict:
    def unpickle(path: Path) -> dict:
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle, encoding="bytes")
        except Exception as err:
            raise DataUnavailableError(f"{path}: cannot read CIFAR python batch: {err}") from None

    def images(batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(b[b"labels"]) for b in batches])
        return torch.from_numpy(data.astype(np.uint8)), torch.from_numpy(labels).long()

    meta = unpickle(root / "batches.meta")
    train_files = sorted(root.glob("data_batch_*"))
    if not train_files:
        raise DataUnavailableError(f"{root}: no data_batch_* files")
    splits = {"train": images([unpickle(p) for p in train_files])}
    if (root / "test_batch").is_file():
        splits["test"] = images([unpickle(root / "test_batch")])
    return {"splits": splits, "class_names": [n.decode() for n in meta[b"label_names"]]}


def load_parquet(root: Path, cache_dir: Path) -> dict:
    from datasets import load_dataset

    files: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.parquet")):
        split = split_of(path.name)
        if split is not None:
            files.setdefault(split, []).append(str(path))
    if "train" not in files:
        raise DataUnavailableError(f"{root}: no train*.parquet file (files must be named by split: "
                                   "train, validation, test)")
    loaded = {}
    for split, paths in files.items():
        try:
            loaded[split] = load_dataset("parquet", data_files={split: paths}, split=split,
                                         cache_dir=str(cache_dir / "hf"))
        except Exception as err:
            raise DataUnavailableError(f"{', '.join(paths)}: cannot read parquet: {err}") from None
    return splits_from_datasets(loaded, lambda split: ", ".join(files[split]))


def load_imagefolder(root: Path, cache_dir: Path) -> dict:
    from datasets import load_dataset

    try:
        loaded = load_dataset("imagefolder", data_dir=str(root), cache_dir=str(cache_dir / "hf"))
    except Exception as err:
        raise DataUnavailableError(f"{root}: cannot read image folder: {err}") from None
    return splits_from_datasets(loaded, lambda split: f"{root} ({split})")


def load_hub(name: str, cache_dir: Path) -> dict:
    from datasets import load_dataset

    loaded = load_dataset(name, cache_dir=str(cache_dir / "hf"))
    return splits_from_datasets(loaded, lambda split: f"{name} ({split})")


class CIFAR10DataModule(ImageTensorDataModule):
    def __init__(self, path: str | None = None, hub_name: str = "uoft-cs/cifar10", cache_dir: str = ".cache",
                 val_size: int = 5000, val_seed: int = 0, carve_val: bool = False, **kwargs):
        super().__init__(**kwargs)
        if path is not None and not Path(path).is_dir():
            raise ConfigError(f"data.path={path!r}: directory does not exist")
        self.path = Path(path) if path is not None else None
        self.hub_name, self.cache_dir = hub_name, Path(cache_dir)
        self.val_size, self.val_seed = int(val_size), int(val_seed)
        if not isinstance(carve_val, bool):
            raise ConfigError(f"data.carve_val={carve_val!r}: must be true or false")
        self.carve_val = carve_val

    def cache_file(self) -> tuple[Path, str, Path | None]:
        if self.path is None:
            key = hashlib.sha1(f"{CACHE_FORMAT}:hub:{self.hub_name}".encode()).hexdigest()[:16]
            return self.cache_dir / "cifar10" / f"hub-{key}.pt", "hub", None
        layout, root = detect_layout(self.path)
        return self.cache_dir / "cifar10" / f"{layout}-{source_fingerprint(layout, root)}.pt", layout, root

    def decode_source(self, layout: str, root: Path | None) -> dict:
        if layout == "python_batches":
            return load_python_batches(root)
        if layout == "parquet":
            return load_parquet(root, self.cache_dir)
        if layout == "imagefolder":
            return load_imagefolder(root, self.cache_dir)
        if not hub_reachable():
            raise DataUnavailableError(
                f"CIFAR-10 is not cached under {self.cache_dir} and the Hugging Face hub is unreachable. "
                "Give a local copy with data.path=DIR (hub parquet files named train/validation/test, "
                "an image folder with one subfolder per class, or cifar-10-batches-py), or run once online.")
        return load_hub(self.hub_name, self.cache_dir)

    def load_decoded(self) -> dict:
        cache, layout, root = self.cache_file()
        if cache.is_file():
            try:
                return torch.load(cache, weights_only=True)
            except Exception:
                cache.unlink(missing_ok=True)  # unreadable (foreign or old format): decode again
        decoded = self.decode_source(layout, root)
        atomic_write(cache, lambda handle: torch.save(decoded, handle))
        return decoded

    def load_splits(self) -> ImageSplits:
        decoded = self.load_decoded()
        splits, names = decoded["splits"], decoded["class_names"]
        for split, (_, labels) in splits.items():
            if len(labels) == 0:
                raise DataUnavailableError(f"CIFAR-10 {split} split is empty")
        if "validation" in splits and not self.carve_val:
            train, val = splits["train"], splits["validation"]
        else:
            train, val = carve_validation(*splits["train"], self.val_size, self.val_seed, "data.val_size")
        if "test" in splits:
            return ImageSplits(train, val, splits["test"], names, test_split="test")
        if "validation" in splits and self.carve_val:
            # The source's own validation split is never tuned on here, so it can honestly serve as the test.
            return ImageSplits(train, val, splits["validation"], names, test_split="validation (held out)")
        return ImageSplits(train, val, val, names, test_split="validation")
