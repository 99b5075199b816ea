"""Any labelled image classification data from the hub or a local copy, decoded into cached uint8 tensors.

Sources: ``data.hub_name`` (and ``hub_config``) on the Hugging Face hub, or ``data.path=DIR`` in one of these
local layouts, detected in this order:
  - hub parquet: ``*.parquet`` files named by split (train / validation|valid|val / test), any depth
  - image folder: one subfolder per class, optionally under train/ validation/ test/
Columns: the image in ``img`` or ``image``, the class in ``label`` or ``labels`` (integer ids or a ClassLabel).

A source is read as labels plus encoded images; the labels are checked before anything is decoded or cached,
with one error naming the file and row: every label in [0, num_classes), and the class count equal to
``data.num_classes`` when the data set declares one (CIFAR-10: 10). Only the rows a run keeps are decoded (after
validation is carved and ``data.train_size`` applied; reglab.data.image_cache), on every core, and each decoded
image must have the data set's one size. Local parquet files are read through a temporary Hugging Face cache, so
a bad source leaves nothing behind; only hub downloads are kept under ``cache_dir/hf``.

``data.image_mode`` is what every image is converted to while decoding: ``RGB`` (3 channels) or ``L`` (grayscale,
1 channel). Decoded pixels are cached under ``cache_dir/<cache_folder>`` (written atomically), keyed by the
source's files or hub name and the mode, so a changed source is decoded again.

Validation is the source's validation split when it has one, otherwise ``val_size`` images carved from train;
test is the source's test split, or (without one) the held-out validation split, which results.json records.
A data set with a layout of its own subclasses ``ImageDataModule`` (see reglab.data.cifar10)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from reglab.atomic import check_writable_dir
from reglab.data.base import check_classes_present, check_data_path, check_int, or_list
from reglab.data.image_cache import DecodedImages, EncodedSource, EncodedSplit, Locate, SourceRows, shape_text
from reglab.data.image_tensors import ImageSplits, ImageTensorDataModule, carve_validation
from reglab.data.sources import SPLIT_ALIASES, hub_reachable, split_of
from reglab.errors import ConfigError, DataUnavailableError

log = logging.getLogger(__name__)
HEARTBEAT_S = 20.0     # while decoding, a progress line at least this often: the console never goes quiet for long
ANNOUNCE_FROM = 5000   # images: decoding this many says so before it starts


@contextlib.contextmanager
def quiet_datasets():
    """The datasets library's own bars ("Generating train split", "Downloading data: 0/50000 files" for local
    files) stay off the console: reglab prints its own progress lines (decode_images). verbose=true keeps them."""
    from datasets.utils import logging as datasets_logging

    from reglab import console

    was_on = datasets_logging.is_progress_bar_enabled()
    if was_on and not console.VERBOSE:
        datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            datasets_logging.enable_progress_bar()


def progress_text(done: int, total: int, elapsed: float) -> str:
    from reglab.console import time_left

    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    return f"{done:,}/{total:,} images, {rate:,.0f}/s, {time_left(left)}"

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
IMAGE_MODES = ("RGB", "L")
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # PIL modes of more than 8 bits a channel
CACHE_FORMAT = 2
PARALLEL_FROM = 2000  # images: fewer decode faster in this process than a pool of processes starts
CHUNK = 500           # images a decoding process is handed at a time


def pixels(image, mode: str) -> np.ndarray:
    """A PIL image as (H, W, C) uint8 in ``mode`` (grayscale keeps its one channel axis)."""
    array = np.asarray(image.convert(mode))
    return array[:, :, None] if array.ndim == 2 else array


def source_fingerprint(layout: str, root: Path, variant: str = "") -> str:
    """Cache key: layout plus every file's relative path, size and mtime (and the decoding variant, if any)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps([CACHE_FORMAT, layout, str(root.resolve()), stats] + ([variant] if variant else [])).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def rows_of_files(files: list[tuple[str, int]]) -> Locate:
    """A split read from several files in order, [(file, its row count)]: split row -> "file row r"."""
    def locate(row: int) -> str:
        for path, count in files:
            if row < count:
                return f"{path} row {row}"
            row -= count
        return f"{files[-1][0]} row {row}"
    return locate


def decode_chunk(job: tuple[list, str]) -> tuple[list[np.ndarray], tuple[str, str] | None]:
    """Decode encoded images in order until one fails: (the arrays, None) or (the arrays before it, (what went
    wrong, detail)). Runs in a decoding process, so it returns the failure instead of a message that would need
    the row's name."""
    from PIL import Image

    items, mode = job
    arrays = []
    for item in items:
        source = item.get("path") if item.get("bytes") is None else io.BytesIO(item["bytes"])
        try:
            with Image.open(source) as image:
                if image.mode in WIDE_MODES or image.mode.startswith("I;16"):
                    return arrays, ("wide", image.mode)
                arrays.append(pixels(image, mode))
        except Exception as err:
            return arrays, ("unreadable", str(err))
    return arrays, None


def decoding_processes(total: int) -> int:
    """How many processes decode ``total`` images: every core this process may use, on Linux (fork: the pool
    starts in milliseconds); one where a pool would cost more than it saves, or cannot start (a daemon process)."""
    import multiprocessing
    import os
    import sys

    if total < PARALLEL_FROM or not sys.platform.startswith("linux") or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def decode_images(encoded: list, where: str, mode: str, locate: Locate, processes: int | None = None
                  ) -> torch.Tensor:
    """PNG/JPEG bytes or paths -> (N, C, H, W) uint8 in ``mode``, decoded by ``processes`` processes (default:
    decoding_processes). Every image must have the first one's size: the first that does not is named (its file,
    or its row), as is the first that cannot be decoded."""
    import multiprocessing

    total, started = len(encoded), time.monotonic()
    if not total:
        raise DataUnavailableError(f"{where}: split is empty")
    processes = decoding_processes(total) if processes is None else processes
    if total >= ANNOUNCE_FROM:
        log.info("decoding %s: %s images on %d core%s (once: later runs read the decoded cache)", where,
                 f"{total:,}", processes, "s" if processes > 1 else "")
    jobs = ((encoded[i:i + CHUNK], mode) for i in range(0, total, CHUNK))
    pool = multiprocessing.get_context("fork").Pool(processes) if processes > 1 else None
    arrays: list[np.ndarray] = []
    last = started
    try:
        for decoded, failure in (pool.imap(decode_chunk, jobs) if pool else map(decode_chunk, jobs)):
            for array in decoded:
                if array.shape != (arrays[0].shape if arrays else array.shape):
                    name, first = encoded[len(arrays)].get("path") or locate(len(arrays)), \
                        encoded[0].get("path") or locate(0)
                    raise DataUnavailableError(
                        f"{name}: image is {shape_text(array.shape)} (height x width x channels) but {first} is "
                        f"{shape_text(arrays[0].shape)}; every image of a data set must have one size (resize them "
                        "first)")
                arrays.append(array)
            if failure is not None:
                name = encoded[len(arrays)].get("path") or locate(len(arrays))
                kind, detail = failure
                if kind == "wide":
                    raise DataUnavailableError(
                        f"{name}: is a {detail} image (16-bit or float pixels); reglab reads 8-bit images, and "
                        "converting would clip it: convert the files to 8-bit first")
                raise DataUnavailableError(f"{where}: cannot decode image {name}: {detail}")
            now = time.monotonic()
            if now - last >= HEARTBEAT_S and len(arrays) < total:
                last = now
                log.info("decoding %s: %s", where, progress_text(len(arrays), total, now - started))
    finally:
        if pool is not None:
            pool.terminate()
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def decode_rows(split: EncodedSplit, rows: torch.Tensor, mode: str) -> torch.Tensor:
    """Rows of an encoded split -> their (N, C, H, W) uint8 images in ``mode``; errors name each row's file."""
    if isinstance(split.items, torch.Tensor):  # stored as pixels already
        return split.items[rows]
    picked = rows.tolist()
    return decode_images([split.items[r] for r in picked], split.where, mode, lambda i: split.locate(picked[i]))


def check_labels(labels: torch.Tensor, num_classes: int, locate: Locate, why: str) -> None:
    """Every label a class id in [0, num_classes); the first that is not is named by ``locate``. ``why``: where
    the class count comes from, for the message."""
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(bad):
        row = int(bad[0])
        raise DataUnavailableError(f"{locate(row)}: label {int(labels[row])} is not a class id in [0, {num_classes}) "
                                   f"({why}; {len(bad)} of the {len(labels)} labels in this split are out of range)")


def class_count_reason(num_classes: int | None, class_names) -> str:
    if num_classes is not None:
        return f"data.num_classes={num_classes}"
    return f"the label column names {len(class_names)} classes"


def check_labelled(labels: dict[str, torch.Tensor], names: list, num_classes: int | None, source: str) -> None:
    """What every source's labels must satisfy before anything is decoded or cached: the declared class count,
    labels in range, no empty split, and more than one class to train on."""
    if num_classes is not None and len(names) != num_classes:
        shown = ", ".join(map(str, names[:12])) + (", ..." if len(names) > 12 else "")
        raise DataUnavailableError(f"{source}: has {len(names)} classes ({shown}) but data.num_classes="
                                   f"{num_classes}; point data.path at the right data, or set data.num_classes")
    reason = class_count_reason(num_classes, names)
    for split, split_labels in labels.items():
        where = f"{source} ({split} split)"
        if len(split_labels) == 0:
            raise DataUnavailableError(f"{where}: split is empty")
        check_labels(split_labels, len(names), lambda row, where=where: f"{where} row {row}", reason)
    if "train" in labels:
        check_classes_present(labels["train"], names, source)


def encoded_split(dataset, where: str, locate: Locate) -> tuple[EncodedSplit, list[str] | None]:
    """A `datasets.Dataset` in the hub's schema (img/image + label) -> its labels and encoded images (nothing is
    decoded), and its class names (None when the labels are plain integers)."""
    from datasets import Image

    image_column = next((c for c in ("img", "image") if c in dataset.column_names), None)
    label_column = next((c for c in ("label", "labels") if c in dataset.column_names), None)
    if image_column is None or label_column is None:
        raise DataUnavailableError(f"{where}: expected columns img/image and label, found {dataset.column_names}")
    feature = dataset.features[label_column]
    if not hasattr(feature, "names") and not str(getattr(feature, "dtype", "")).startswith(("int", "uint")):
        raise DataUnavailableError(f"{where}: column {label_column!r} holds {getattr(feature, 'dtype', feature)}; "
                                   "expected integer class ids or a ClassLabel")
    # The raw Arrow columns: casting or decoding through `datasets` would validate a ClassLabel on its own and
    # fail without naming the file or row; check_labels does that.
    table = dataset.with_format("arrow")[:]
    encoded = Image().cast_storage(table.column(image_column).combine_chunks()).to_pylist()
    label_array = table.column(label_column).combine_chunks()
    if label_array.null_count:
        row = label_array.is_null().to_pylist().index(True)
        raise DataUnavailableError(f"{locate(row)}: label is missing")
    labels = torch.from_numpy(label_array.to_numpy(zero_copy_only=False).astype(np.int64))
    return EncodedSplit(labels, encoded, where, locate), getattr(feature, "names", None)


def source_from_datasets(loaded, where, num_classes: int | None = None,
                         locate: Callable[[str], Locate] | None = None) -> EncodedSource:
    """{split name: datasets.Dataset} -> EncodedSource, its labels checked; ``where(split)`` names the source in
    errors, ``locate(split)`` a row of it. Without ClassLabel names, class k is named "k" (k < num_classes, when
    the data set declares a count). Labels are checked here, where a bad one can still be traced to its file and
    row."""
    locate = locate or (lambda split: lambda row: f"{where(split)} row {row}")
    splits, class_names = {}, None
    for name, dataset in loaded.items():
        splits[name], names = encoded_split(dataset, where(name), locate(name))
        class_names = class_names or names
    if class_names is None:
        count = num_classes or 1 + max((int(split.labels.max()) for split in splits.values() if len(split.labels)),
                                       default=-1)
        class_names = [str(i) for i in range(count)]
    reason = class_count_reason(num_classes, class_names)
    for name, split in splits.items():
        check_labels(split.labels, len(class_names), locate(name), reason)
    return EncodedSource({SPLIT_ALIASES.get(name, name): split for name, split in splits.items()},
                         list(class_names))


def read_failure(what: str, err: BaseException, hf_cache: Path) -> Exception:
    """The datasets library's error while reading local files, as one line. It writes Arrow files into its
    cache as it reads, and reports a full disk there as "An error occurred while generating the dataset": that
    is a failed write (named, with its cause), not a bad source file."""
    from reglab.atomic import NO_SPACE, write_error

    cause = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            return write_error(hf_cache, cause)
        cause = cause.__cause__ or cause.__context__
    return DataUnavailableError(f"{what}: {err}")


def read_parquet(root: Path, hf_cache: Path, num_classes: int | None = None) -> EncodedSource:
    import pyarrow.parquet as pq
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
        for path in paths:  # the datasets library would say only "An error occurred while generating the dataset"
            try:
                rows = pq.read_metadata(path).num_rows
            except Exception as err:
                raise DataUnavailableError(f"{path}: cannot read parquet: {err}") from None
            if rows == 0:
                raise DataUnavailableError(f"{path}: holds no rows (an empty {split} split)")
        try:
            with quiet_datasets():
                loaded[split] = load_dataset("parquet", data_files={split: paths}, split=split,
                                             cache_dir=str(hf_cache))
        except Exception as err:
            raise read_failure(f"{', '.join(paths)}: cannot read parquet", err, hf_cache) from None
    rows = {split: rows_of_files([(path, pq.read_metadata(path).num_rows) for path in paths])
            for split, paths in files.items()}
    return source_from_datasets(loaded, lambda split: ", ".join(files[split]), num_classes, rows.get)


def scan_imagefolder(root: Path) -> EncodedSource:
    """An image folder: one subfolder per class (its name is the class), under a split folder (train/, val/,
    test/, or any name ``split_of`` reads a split from) at any depth, or under none (train). Classes are the
    sorted folder names, as the datasets library's imagefolder builder names them. Read with one walk of the
    tree: that builder resolves dozens of glob patterns over it, 41.5 s against the walk's 0.7 s for CIFAR-10's
    50,000 files here (scripts/bench_decode.py --datasets-builder, docs/benchmarks.md)."""
    import os

    files: dict[str, list[tuple[str, str]]] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        parts = Path(folder).relative_to(root).parts
        images = sorted(n for n in names if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            continue
        split = next((split_of(part) for part in parts[:-1] if split_of(part)), "train")
        if not parts or parts[-1].lower() in SPLIT_ALIASES:
            raise DataUnavailableError(
                f"{Path(folder) / images[0]}: is not in a class folder; an image folder holds one subfolder per "
                "class (its name is the class), optionally under train/, validation/, test/")
        files.setdefault(split, []).extend((str(Path(folder) / name), parts[-1]) for name in images)
    if "train" not in files:
        raise DataUnavailableError(f"{root}: no training images (a train/ folder, or class folders at the top)")
    class_names = sorted({label for split in files.values() for _, label in split})
    index = {name: i for i, name in enumerate(class_names)}
    splits = {split: EncodedSplit(torch.tensor([index[label] for _, label in entries], dtype=torch.long),
                                  [{"path": path, "bytes": None} for path, _ in entries], f"{root} ({split})",
                                  lambda row, entries=entries: entries[row][0])
              for split, entries in files.items()}
    return EncodedSource(splits, class_names)


def read_hub(name: str, config: str | None, cache_dir: Path, num_classes: int | None = None) -> EncodedSource:
    from datasets import load_dataset

    loaded = load_dataset(name, config, cache_dir=str(cache_dir / "hf"))
    source = name if config is None else f"{name}/{config}"
    return source_from_datasets(loaded, lambda split: f"{source} ({split})", num_classes)


class ImageDataModule(ImageTensorDataModule):
    """Image classification from ``data.hub_name`` or ``data.path``; see the module docstring."""

    title = "image data"  # what the data is called in messages
    cache_folder = "images"  # under cache_dir: where the decoded splits are kept
    layouts = ("hub parquet files named train/validation/test", "an image folder with one subfolder per class")

    def __init__(self, path: str | None = None, hub_name: str | None = None, hub_config: str | None = None,
                 image_mode: str = "RGB", cache_dir: str = ".cache", val_size: int = 5000, val_seed: int = 0,
                 carve_val: bool = False, num_classes: int | None = None, **kwargs):
        super().__init__(**kwargs)
        check_data_path(path)
        if path is None and not hub_name:
            raise ConfigError(f"data.path=None: give a local copy ({or_list(self.layouts)}) or data.hub_name")
        if image_mode not in IMAGE_MODES:
            raise ConfigError(f"data.image_mode={image_mode!r}: allowed {list(IMAGE_MODES)} (L: grayscale, "
                              "one channel)")
        self.path = Path(path) if path is not None else None
        self.hub_name, self.hub_config, self.cache_dir = hub_name, hub_config, Path(cache_dir)
        self.image_mode = image_mode
        self.val_size, self.val_seed = int(val_size), int(val_seed)
        if not isinstance(carve_val, bool):
            raise ConfigError(f"data.carve_val={carve_val!r}: must be true or false")
        self.carve_val = carve_val
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, minimum=2)
        self._decoded: DecodedImages | None = None

    # -- where the data is ------------------------------------------------------------------------------------
    def detect_layout(self, root: Path) -> tuple[str, Path]:
        """(layout, the folder it is in) of a local copy."""
        if any(root.rglob("*.parquet")):
            return "parquet", root
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
            return "imagefolder", root
        raise ConfigError(f"data.path={str(root)!r}: no {self.title} found (expected {or_list(self.layouts)})")

    def cache_file(self) -> tuple[Path, str, Path | None]:
        # RGB adds nothing to the key: the caches written before image_mode existed stay valid.
        variant = "" if self.image_mode == "RGB" else f"mode={self.image_mode}"
        if self.path is None:
            source = self.hub_name if self.hub_config is None else f"{self.hub_name}/{self.hub_config}"
            key = hashlib.sha1(f"{CACHE_FORMAT}:hub:{source}{':' + variant if variant else ''}".encode())
            return self.cache_dir / self.cache_folder / f"hub-{key.hexdigest()[:16]}.pt", "hub", None
        layout, root = self.detect_layout(self.path)
        fingerprint = source_fingerprint(layout, root, variant)
        return self.cache_dir / self.cache_folder / f"{layout}-{fingerprint}.pt", layout, root

    # -- decoding ------------------------------------------------------------------------------------------------
    def source_name(self) -> str:
        return str(self.path) if self.path is not None else (
            self.hub_name if self.hub_config is None else f"{self.hub_name}/{self.hub_config}")

    def read_source(self, layout: str, root: Path | None) -> EncodedSource:
        """The source's labels and encoded images (nothing decoded yet), its labels checked."""
        if layout == "parquet":
            # Through a throwaway Hugging Face cache: the decoded pixels are what is kept.
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="hf-", dir=self.cache_dir) as hf_cache:
                return read_parquet(root, Path(hf_cache), self.num_classes)
        if layout == "imagefolder":
            return scan_imagefolder(root)
        if not hub_reachable():
            raise DataUnavailableError(
                f"{self.hub_name} is not cached under {self.cache_dir} and the Hugging Face hub is unreachable. "
                f"Give a local copy with data.path=DIR ({or_list(self.layouts)}), or run once online. To try reglab "
                "without a download: data=digits (scikit-learn's bundled digits).")
        return read_hub(self.hub_name, self.hub_config, self.cache_dir, self.num_classes)

    def decoded_images(self) -> DecodedImages:
        """This source's cache: every row's label, and the pixels of the rows decoded so far. Its labels are
        checked on every load: data.num_classes is not part of the cache key."""
        if self._decoded is None:
            cache, layout, root = self.cache_file()
            decoded = DecodedImages(cache, lambda: self.read_source(layout, root),
                                    lambda split, rows: decode_rows(split, rows, self.image_mode), self.source_name())
            check_labelled(decoded.labels, decoded.class_names, self.num_classes, self.source_name())
            self._decoded = decoded
        return self._decoded

    def decode(self, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{split: rows} -> {split: their uint8 images}, decoding (and caching) only the rows not cached yet."""
        decoded = self.decoded_images()
        if any(len(decoded.missing(split, rows)) for split, rows in wanted.items()):
            check_writable_dir(self.cache_dir, "paths.cache_dir", "decoded data is cached there")
        return decoded.images(wanted)

    def load_decoded(self) -> dict:
        """Every split decoded: {"splits": {split: (uint8 images, labels)}, "class_names": [...]}."""
        decoded = self.decoded_images()
        images = self.decode({split: torch.arange(len(labels)) for split, labels in decoded.labels.items()})
        return {"splits": {split: (images[split], labels) for split, labels in decoded.labels.items()},
                "class_names": decoded.class_names}

    def load_splits(self) -> ImageSplits:
        """The splits as row numbers of the source (SourceRows): ``decoded`` turns the rows a run keeps into
        pixels, so validation carving and data.train_size decide what is decoded."""
        decoded = self.decoded_images()
        names = decoded.class_names
        splits = {split: (SourceRows(split, torch.arange(len(labels))), labels)
                  for split, labels in decoded.labels.items()}
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

    def decoded(self, splits: ImageSplits) -> ImageSplits:
        kept = [pair for pair in (splits.train, splits.val, splits.test) if isinstance(pair[0], SourceRows)]
        wanted: dict[str, torch.Tensor] = {}
        for images, _ in kept:
            wanted[images.split] = torch.cat([wanted.get(images.split, images.rows[:0]), images.rows])
        wanted = {split: rows.unique() for split, rows in wanted.items()}
        pixels = self.decode(wanted)

        def as_pixels(pair):
            images, labels = pair
            if not isinstance(images, SourceRows):
                return pair
            return pixels[images.split][torch.searchsorted(wanted[images.split], images.rows)], labels

        splits.train, splits.val, splits.test = as_pixels(splits.train), as_pixels(splits.val), as_pixels(splits.test)
        return splits
