"""CIFAR-10: the generic image source (reglab.data.images) with the hub's ``uoft-cs/cifar10`` by default, plus
the original python pickles as one more local layout: ``batches.meta``, ``data_batch_*``, ``test_batch`` (in
``data.path`` or ``data.path``/cifar-10-batches-py), detected before the generic ones. The pickles are read by an
unpickler that may build only arrays (a crafted file cannot run code) and checked file by file: uint8 pixels,
N x 3072 rows, one label per row."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from reglab.data.image_cache import EncodedSource, EncodedSplit
from reglab.data.images import ImageDataModule, pixels
from reglab.errors import DataUnavailableError


PIXELS = 3 * 32 * 32  # a CIFAR row: 1024 red, then green, then blue values of a 32 x 32 image


class BatchUnpickler(pickle.Unpickler):
    """The python batches are pickles, and a pickle can name any function to call. This one may name only what
    a CIFAR batch holds (NumPy arrays, dtypes, bytes), so a crafted file is refused instead of run."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


def unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = BatchUnpickler(handle, encoding="bytes").load()
    except Exception as err:
        raise DataUnavailableError(f"{path}: cannot read CIFAR python batch: {err}") from None
    if not isinstance(batch, dict):
        raise DataUnavailableError(f"{path}: not a CIFAR python batch (a {type(batch).__name__}, not a dict)")
    return batch


def batch_arrays(path: Path, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """A data batch's (N, 3072) uint8 pixels and N labels, checked: one line naming the file for anything else."""
    if b"data" not in batch or b"labels" not in batch:
        raise DataUnavailableError(f"{path}: not a CIFAR-10 data batch (needs 'data' and 'labels', has "
                                   f"{sorted(k.decode(errors='replace') if isinstance(k, bytes) else str(k) for k in batch)})")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataUnavailableError(f"{path}: 'data' holds {kind}; a CIFAR batch holds uint8 pixel values "
                                   "(0-255)")
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise DataUnavailableError(f"{path}: 'data' is {'x'.join(map(str, data.shape))}; a CIFAR-10 batch is N x "
                                   f"{PIXELS} (32 x 32 RGB images, one per row)")
    try:
        labels = np.asarray(labels)
    except Exception:
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataUnavailableError(f"{path}: 'labels' must be a list of integer class ids (holds {labels.dtype}, "
                                   f"shape {'x'.join(map(str, labels.shape))})")
    if len(labels) != len(data):
        raise DataUnavailableError(f"{path}: {len(data)} images but {len(labels)} labels; each row of 'data' "
                                   "needs one label")
    return data, labels


def load_python_batches(root: Path, mode: str = "RGB") -> EncodedSource:
    """The batches as an EncodedSource whose images are already pixels (a CIFAR batch stores them raw)."""
    def images(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = [batch_arrays(path, unpickle(path)) for path in paths]
        data = np.concatenate([a[0] for a in arrays]).reshape(-1, 3, 32, 32)
        if mode != "RGB":  # through PIL, so every layout converts a pixel the same way
            from PIL import Image

            data = np.stack([pixels(Image.fromarray(image.transpose(1, 2, 0)), mode) for image in data])
            data = data.transpose(0, 3, 1, 2)
        labels = np.concatenate([a[1] for a in arrays]).astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels)

    meta = unpickle(root / "batches.meta")
    names = meta.get(b"label_names")
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataUnavailableError(f"{root / 'batches.meta'}: needs 'label_names', a list of class names")
    train_files = sorted(root.glob("data_batch_*"))
    if not train_files:
        raise DataUnavailableError(f"{root}: no data_batch_* files")
    files = {"train": train_files} | ({"test": [root / "test_batch"]} if (root / "test_batch").is_file() else {})
    splits = {}
    for split, paths in files.items():
        pixels_of_split, labels = images(paths)
        where = ", ".join(str(p) for p in paths)
        splits[split] = EncodedSplit(labels, pixels_of_split, where, lambda row, where=where: f"{where} row {row}")
    return EncodedSource(splits, [n.decode() if isinstance(n, bytes) else n for n in names])


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

    def read_source(self, layout: str, root: Path | None) -> EncodedSource:
        if layout == "python_batches":
            return load_python_batches(root, self.image_mode)
        return super().read_source(layout, root)
