"""CIFAR-10: the generic image source (reglab.data.images) with the hub's ``uoft-cs/cifar10`` by default, plus
the original python pickles as one more local layout: ``batches.meta``, ``data_batch_*``, ``test_batch`` (in
``data.path`` or ``data.path``/cifar-10-batches-py), detected before the generic ones."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from reglab.data.images import ImageDataModule, pixels
from reglab.errors import DataUnavailableError


def load_python_batches(root: Path, mode: str = "RGB") -> dict:
    def unpickle(path: Path) -> dict:
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle, encoding="bytes")
        except Exception as err:
            raise DataUnavailableError(f"{path}: cannot read CIFAR python batch: {err}") from None

    def images(batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).astype(np.uint8)
        if mode != "RGB":  # through PIL, so every layout converts a pixel the same way
            from PIL import Image

            data = np.stack([pixels(Image.fromarray(image.transpose(1, 2, 0)), mode) for image in data])
            data = data.transpose(0, 3, 1, 2)
        labels = np.concatenate([np.asarray(b[b"labels"]) for b in batches])
        return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels).long()

    meta = unpickle(root / "batches.meta")
    train_files = sorted(root.glob("data_batch_*"))
    if not train_files:
        raise DataUnavailableError(f"{root}: no data_batch_* files")
    splits = {"train": images([unpickle(p) for p in train_files])}
    if (root / "test_batch").is_file():
        splits["test"] = images([unpickle(root / "test_batch")])
    return {"splits": splits, "class_names": [n.decode() for n in meta[b"label_names"]]}


class CIFAR10DataModule(ImageDataModule):
    title = "CIFAR-10"
    cache_folder = "cifar10"
    layouts = (*ImageDataModule.layouts, "cifar-10-batches-py")

    def __init__(self, hub_name: str = "uoft-cs/cifar10", num_classes: int | None = 10, **kwargs):
        super().__init__(hub_name=hub_name, num_classes=num_classes, **kwargs)

    def detect_layout(self, root: Path) -> tuple[str, Path]:
        for candidate in (root, root / "cifar-10-batches-py"):
            if (candidate / "batches.meta").is_file():
                return "python_batches", candidate
        return super().detect_layout(root)

    def decode_source(self, layout: str, root: Path | None) -> dict:
        if layout == "python_batches":
            return load_python_batches(root, self.image_mode)
        return super().decode_source(layout, root)
