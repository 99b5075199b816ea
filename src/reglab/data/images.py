"""Any labelled image classification data from the hub or a local copy, decoded once into a cached uint8 tensor.

Sources: ``data.hub_name`` (and ``hub_config``) on the Hugging Face hub, or ``data.path=DIR`` in one of these
local layouts, detected in this order:
  - hub parquet: ``*.parquet`` files named by split (train / validation|valid|val / test), any depth
  - image folder: one subfolder per class, optionally under train/ validation/ test/
Columns: the image in ``img`` or ``image``, the class in ``label`` or ``labels`` (integer ids or a ClassLabel).

What is decoded is checked before anything is cached, with one error naming the file and row: every label in
[0, num_classes), every image of the data set one size (within a split and across splits), and the class count
equal to ``data.num_classes`` when the data set declares one (CIFAR-10: 10). Local files are read through a
temporary Hugging Face cache, so a bad source leaves nothing behind; only hub downloads are kept under
``cache_dir/hf``.

``data.image_mode`` is what every image is converted to while decoding: ``RGB`` (3 channels) or ``L`` (grayscale,
1 channel). The decoded splits are cached under ``cache_dir/<cache_folder>`` (written atomically), keyed by the
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

from reglab.atomic import atomic_torch_save, check_writable_dir
from reglab.data.base import check_classes_present, check_data_path, check_int, or_list
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
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else float("nan")
    eta = f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"
    return f"{done:,}/{total:,} images, {rate:,.0f}/s, {eta}"

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
IMAGE_MODES = ("RGB", "L")
WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # PIL modes of more than 8 bits a channel
CACHE_FORMAT = 1


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


Locate = Callable[[int], str]  # row of a split -> where it is, for messages: "DIR/train.parquet row 12"


def rows_of_files(files: list[tuple[str, int]]) -> Locate:
    """A split read from several files in order, [(file, its row count)]: split row -> "file row r"."""
    def locate(row: int) -> str:
        for path, count in files:
            if row < count:
                return f"{path} row {row}"
            row -= count
        return f"{files[-1][0]} row {row}"
    return locate


def shape_text(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def decode_images(encoded: list, where: str, mode: str, locate: Locate) -> torch.Tensor:
    """PNG/JPEG bytes or paths -> (N, C, H, W) uint8 in ``mode``. Runs once per source; the result is cached.
    Every image must have the first one's size: the first that does not is named (its file, or its row)."""
    from PIL import Image

    arrays = []
    total, started = len(encoded), time.monotonic()
    last = started
    if total >= ANNOUNCE_FROM:
        log.info("decoding %s: %s images (once: later runs read the decoded cache)", where, f"{total:,}")
    for i, item in enumerate(encoded):
        now = time.monotonic()
        if i and now - last >= HEARTBEAT_S:
            last = now
            log.info("decoding %s: %s", where, progress_text(i, total, now - started))
        source = item.get("path") if item.get("bytes") is None else io.BytesIO(item["bytes"])
        name = item.get("path") or locate(i)
        try:
            with Image.open(source) as image:
                if image.mode in WIDE_MODES or image.mode.startswith("I;16"):
                    raise DataUnavailableError(
                        f"{name}: is a {image.mode} image (16-bit or float pixels); reglab reads 8-bit images, "
                        "and converting would clip it: convert the files to 8-bit first")
                arrays.append(pixels(image, mode))
        except DataUnavailableError:
            raise
        except Exception as err:
            raise DataUnavailableError(f"{where}: cannot decode image {name}: {err}") from None
        if arrays[-1].shape != arrays[0].shape:
            first = encoded[0].get("path") or locate(0)
            raise DataUnavailableError(
                f"{name}: image is {shape_text(arrays[-1].shape)} (height x width x channels) but {first} is "
                f"{shape_text(arrays[0].shape)}; every image of a data set must have one size (resize them first)")
    if not arrays:
        raise DataUnavailableError(f"{where}: split is empty")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


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


def check_decoded(decoded: dict, num_classes: int | None, source: str) -> None:
    """What every layout's decoded data must satisfy before it is cached or used: the declared class count,
    labels in range, and one image size across splits (a model is built for one input size)."""
    splits, names = decoded["splits"], decoded["class_names"]
    if num_classes is not None and len(names) != num_classes:
        shown = ", ".join(map(str, names[:12])) + (", ..." if len(names) > 12 else "")
        raise DataUnavailableError(f"{source}: has {len(names)} classes ({shown}) but data.num_classes="
                                   f"{num_classes}; point data.path at the right data, or set data.num_classes")
    reason = class_count_reason(num_classes, names)
    for split, (images, labels) in splits.items():
        where = f"{source} ({split} split)"
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            kind = f"{images.dtype} of shape {shape_text(images.shape)}" if isinstance(images, torch.Tensor) else \
                type(images).__name__
            raise DataUnavailableError(f"{where}: images are {kind}; expected uint8 pixels, N x channels x height x "
                                       "width")
        if len(images) != len(labels):
            raise DataUnavailableError(f"{where}: {len(images)} images but {len(labels)} labels")
        if len(labels) == 0:
            raise DataUnavailableError(f"{where}: split is empty")
        check_labels(labels, len(names), lambda row, where=where: f"{where} row {row}", reason)
    if "train" in splits:
        check_classes_present(splits["train"][1], names, source)
    shapes = {split: tuple(images.shape[1:]) for split, (images, _) in splits.items() if len(images)}
    reference = "train" if "train" in shapes else next(iter(shapes), None)
    for split, shape in shapes.items():
        if shape != shapes[reference]:
            raise DataUnavailableError(
                f"{source}: the {split} split's images are {shape_text(shape)} (channels x height x width) but the "
                f"{reference} split's are {shape_text(shapes[reference])}; every split must have one image size")


def dataset_to_tensors(dataset, where: str, mode: str, locate: Locate
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """A `datasets.Dataset` in the hub's schema (img/image + label) -> uint8 images, labels, class names (None
    when the labels are plain integers)."""
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
    # fail without naming the file or row; check_labels does that below.
    table = dataset.with_format("arrow")[:]
    encoded = Image().cast_storage(table.column(image_column).combine_chunks()).to_pylist()
    label_array = table.column(label_column).combine_chunks()
    if label_array.null_count:
        row = label_array.is_null().to_pylist().index(True)
        raise DataUnavailableError(f"{locate(row)}: label is missing")
    labels = torch.from_numpy(label_array.to_numpy(zero_copy_only=False).astype(np.int64))
    return decode_images(encoded, where, mode, locate), labels, getattr(feature, "names", None)


def splits_from_datasets(loaded, where, mode: str, num_classes: int | None = None,
                         locate: Callable[[str], Locate] | None = None) -> dict:
    """{split name: datasets.Dataset} -> decoded {"splits": {split: (images, labels)}, "class_names": [...]};
    ``where(split)`` names the source in errors, ``locate(split)`` a row of it. Without ClassLabel names, class k
    is named "k" (k < num_classes, when the data set declares a count). Labels are checked here, where a bad one
    can still be traced to its file and row."""
    locate = locate or (lambda split: lambda row: f"{where(split)} row {row}")
    decoded, class_names = {}, None
    for name, dataset in loaded.items():
        images, labels, names = dataset_to_tensors(dataset, where(name), mode, locate(name))
        decoded[name], class_names = (images, labels), class_names or names
    if class_names is None:
        count = num_classes or 1 + max((int(labels.max()) for _, labels in decoded.values() if len(labels)),
                                       default=-1)
        class_names = [str(i) for i in range(count)]
    reason = class_count_reason(num_classes, class_names)
    for name, (_, labels) in decoded.items():
        check_labels(labels, len(class_names), locate(name), reason)
    splits = {SPLIT_ALIASES.get(name, name): tensors for name, tensors in decoded.items()}
    return {"splits": splits, "class_names": list(class_names)}


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


def load_parquet(root: Path, hf_cache: Path, mode: str, num_classes: int | None = None) -> dict:
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
    return splits_from_datasets(loaded, lambda split: ", ".join(files[split]), mode, num_classes, rows.get)


def load_imagefolder(root: Path, hf_cache: Path, mode: str, num_classes: int | None = None) -> dict:
    from datasets import load_dataset

    try:
        with quiet_datasets():
            loaded = load_dataset("imagefolder", data_dir=str(root), cache_dir=str(hf_cache))
    except Exception as err:
        raise read_failure(f"{root}: cannot read image folder", err, hf_cache) from None
    return splits_from_datasets(loaded, lambda split: f"{root} ({split})", mode, num_classes)


def load_hub(name: str, config: str | None, cache_dir: Path, mode: str, num_classes: int | None = None) -> dict:
    from datasets import load_dataset

    loaded = load_dataset(name, config, cache_dir=str(cache_dir / "hf"))
    source = name if config is None else f"{name}/{config}"
    return splits_from_datasets(loaded, lambda split: f"{source} ({split})", mode, num_classes)


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

    def decode_source(self, layout: str, root: Path | None) -> dict:
        """The source decoded: {"splits": {split: (uint8 images, labels)}, "class_names": [...]}."""
        if layout in ("parquet", "imagefolder"):
            # Through a throwaway Hugging Face cache: the decoded tensors are what is kept (and only once checked).
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="hf-", dir=self.cache_dir) as hf_cache:
                read = load_parquet if layout == "parquet" else load_imagefolder
                return read(root, Path(hf_cache), self.image_mode, self.num_classes)
        if not hub_reachable():
            raise DataUnavailableError(
                f"{self.hub_name} is not cached under {self.cache_dir} and the Hugging Face hub is unreachable. "
                f"Give a local copy with data.path=DIR ({or_list(self.layouts)}), or run once online. To try reglab "
                "without a download: data=digits (scikit-learn's bundled digits).")
        return load_hub(self.hub_name, self.hub_config, self.cache_dir, self.image_mode, self.num_classes)

    def load_decoded(self) -> dict:
        cache, layout, root = self.cache_file()
        decoded = None
        if cache.is_file():
            try:
                decoded = torch.load(cache, weights_only=True)
            except Exception:
                cache.unlink(missing_ok=True)  # unreadable (foreign or old format): decode again
        if decoded is not None:  # checked again: data.num_classes is not part of the cache key
            check_decoded(decoded, self.num_classes, self.source_name())
            return decoded
        check_writable_dir(self.cache_dir, "paths.cache_dir", "decoded data is cached there")
        decoded = self.decode_source(layout, root)
        check_decoded(decoded, self.num_classes, self.source_name())
        atomic_torch_save(cache, decoded)
        return decoded

    def load_splits(self) -> ImageSplits:
        decoded = self.load_decoded()
        splits, names = decoded["splits"], decoded["class_names"]
        for split, (_, labels) in splits.items():
            if len(labels) == 0:
                raise DataUnavailableError(f"{self.title} {split} split is empty")
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
