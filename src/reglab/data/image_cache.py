"""The decoded pixels of one image source, decoded on demand and kept under ``cache_dir``.

A source is first read as labels plus encoded images (``EncodedSource``: cheap, no pixel is decoded). Splits are
then carved and subset on row numbers (``SourceRows``), and only the rows a run keeps are decoded:
``data.train_size=2000`` on CIFAR-10's 50,000 training images decodes its 2,000, the validation images and the
test split, not all 60,000. ``DecodedImages`` keeps every split's labels in full and the pixels of the rows
decoded so far; a later run that needs more rows decodes only those, and the cache grows by them. Every write
replaces the file atomically (a crash leaves the old cache or the new one), and merges what another run wrote
in the meantime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from reglab.atomic import atomic_torch_save
from reglab.errors import DataUnavailableError


Locate = Callable[[int], str]  # row of a split -> where it is, for messages: "DIR/train.parquet row 12"
CACHE_LAYOUT = 2  # what a cache file holds; a file of another layout is decoded again


@dataclass
class EncodedSplit:
    """One split as read from its source: every label, and each image still encoded ({"bytes"} or {"path"}), or
    (for a source stored as raw pixels, such as CIFAR's python batches) the uint8 pixels themselves."""
    labels: torch.Tensor
    items: list | torch.Tensor
    where: str       # the split's files, for messages
    locate: Locate   # row -> its file and row, for messages


DecodeRows = Callable[[EncodedSplit, torch.Tensor], torch.Tensor]  # (split, rows) -> their uint8 images


@dataclass
class EncodedSource:
    splits: dict[str, EncodedSplit]
    class_names: list[str]


class SourceRows:
    """Some rows of one source split, not decoded yet. Indexed like a tensor of images (``rows[index]``) without
    decoding anything, so carving validation and taking the training subset only pick row numbers."""

    def __init__(self, split: str, rows: torch.Tensor):
        self.split, self.rows = split, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> SourceRows:
        return SourceRows(self.split, self.rows[torch.as_tensor(index)])


def shape_text(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def stored_splits(stored) -> dict | None:
    """A cache file's splits when it holds what this layout writes, else None (decode again)."""
    if not isinstance(stored, dict) or stored.get("layout") != CACHE_LAYOUT:
        return None
    splits, names = stored.get("splits"), stored.get("class_names")
    if not isinstance(splits, dict) or not isinstance(names, list):
        return None
    for split in splits.values():
        labels, rows, images = (split.get(k) if isinstance(split, dict) else None for k in ("labels", "rows", "images"))
        if not all(isinstance(t, torch.Tensor) for t in (labels, rows, images)):
            return None
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(rows) or labels.ndim != 1:
            return None
        if len(rows) and (rows.min() < 0 or rows.max() >= len(labels) or (rows[1:] <= rows[:-1]).any()):
            return None
    return splits


class DecodedImages:
    """One source's labels and the pixels decoded so far; ``images({split: rows})`` decodes what is missing."""

    def __init__(self, cache: Path, read_source: Callable[[], EncodedSource], decode_rows: DecodeRows,
                 source_name: str):
        self.cache, self.read_source, self.decode_rows, self.source_name = cache, read_source, decode_rows, source_name
        self.source: EncodedSource | None = None
        stored = self.load(cache)
        if stored is None:
            self.source = read_source()
            self.labels = {name: split.labels for name, split in self.source.splits.items()}
            self.class_names = list(self.source.class_names)
            self.rows = {name: torch.empty(0, dtype=torch.long) for name in self.labels}
            self.pixels: dict[str, torch.Tensor] = {}
        else:
            self.class_names = list(stored["class_names"])
            splits = stored["splits"]
            self.labels = {name: split["labels"] for name, split in splits.items()}
            self.rows = {name: split["rows"] for name, split in splits.items()}
            self.pixels = {name: split["images"] for name, split in splits.items() if len(split["rows"])}

    @staticmethod
    def load(cache: Path) -> dict | None:
        if not cache.is_file():
            return None
        try:
            stored = torch.load(cache, weights_only=True)
        except Exception:
            stored = None
        if stored is None or stored_splits(stored) is None:
            cache.unlink(missing_ok=True)  # unreadable (foreign, torn by another tool, or an old layout): decode again
            return None
        return stored

    def image_shape(self) -> tuple[str, tuple] | None:
        """(split, C x H x W) of the images decoded so far: every split must match it."""
        reference = "train" if "train" in self.pixels else next(iter(self.pixels), None)
        return None if reference is None else (reference, tuple(self.pixels[reference].shape[1:]))

    def missing(self, split: str, rows: torch.Tensor) -> torch.Tensor:
        return rows[~torch.isin(rows, self.rows[split])].unique()

    def decode_missing(self, wanted: dict[str, torch.Tensor]) -> bool:
        """Decode the rows of ``wanted`` ({split: rows}) not cached yet; True when anything was decoded."""
        missing = {split: self.missing(split, rows) for split, rows in wanted.items()}
        missing = {split: rows for split, rows in missing.items() if len(rows)}
        if not missing:
            return False
        if self.source is None:
            self.source = self.read_source()
        for split, rows in missing.items():
            new = self.decode_rows(self.source.splits[split], rows)
            reference = self.image_shape()
            if reference is not None and tuple(new.shape[1:]) != reference[1]:
                raise DataUnavailableError(
                    f"{self.source_name}: the {split} split's images are {shape_text(new.shape[1:])} (channels x "
                    f"height x width) but the {reference[0]} split's are {shape_text(reference[1])}; every split "
                    "must have one image size")
            self.add(split, rows, new)
        return True

    def add(self, split: str, rows: torch.Tensor, images: torch.Tensor) -> None:
        if split not in self.pixels:
            self.pixels[split], self.rows[split] = images[:0], self.rows[split][:0]
        all_rows = torch.cat([self.rows[split], rows])
        all_images = torch.cat([self.pixels[split], images])
        order = torch.argsort(all_rows)
        self.rows[split], self.pixels[split] = all_rows[order], all_images[order]

    def merge_from_disk(self) -> None:
        """Rows another run cached since this one read the file (parallel sweep jobs share a cache)."""
        stored = self.load(self.cache)
        if stored is None or list(stored["class_names"]) != self.class_names:
            return
        for split, entry in stored["splits"].items():
            if split not in self.rows or not len(entry["rows"]):
                continue
            if split in self.pixels and tuple(entry["images"].shape[1:]) != tuple(self.pixels[split].shape[1:]):
                continue
            new = ~torch.isin(entry["rows"], self.rows[split])
            if new.any():
                self.add(split, entry["rows"][new], entry["images"][new])

    def save(self) -> None:
        self.merge_from_disk()
        splits = {split: {"labels": labels, "rows": self.rows[split],
                          "images": self.pixels.get(split, torch.empty(0, 0, 0, 0, dtype=torch.uint8))}
                  for split, labels in self.labels.items()}
        atomic_torch_save(self.cache, {"layout": CACHE_LAYOUT, "class_names": self.class_names, "splits": splits})

    def images(self, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{split: rows} -> {split: uint8 images of those rows, in that order}; rows not cached are decoded (and
        cached) first."""
        if self.decode_missing(wanted):
            self.save()
        return {split: self.pixels[split][torch.searchsorted(self.rows[split], rows)]
                for split, rows in wanted.items()}
