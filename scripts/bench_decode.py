"""Decoding an image folder: reglab against a plain PIL loop, measured in the same process run.

  (a) images/s: a plain loop (PIL open, convert, np.asarray, one process) against reglab.data.images.decode_images
      on one process and on every core;  decode_speedup = reglab on every core / plain loop
  (b) what data.train_size saves: the first `setup()` of an image-folder datamodule (nothing cached) with
      train_size=N against one with the whole train split; images decoded, seconds, cache MB
  (c) --datasets-builder: reading the folder with the datasets library's imagefolder builder (what reglab did
      before it walked the folder itself), seconds, against reglab's walk

The folder is written once from a hub-schema parquet (``img`` bytes + ``label``), under --work: its first
--test images become test/, the rest train/, each image in its class's subfolder, as the JPEGs shipped.

    python scripts/bench_decode.py --parquet ../shared/data/cifar10-train-jpeg/train.parquet
    python scripts/bench_decode.py --parquet P --limit 10000 --train-size 2000 --datasets-builder

Prints a table; writes bench_decode.json (--out)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.update({k: os.environ.get(k, "1") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")})


def write_folder(parquet: Path, folder: Path, limit: int | None, n_test: int) -> int:
    """The parquet's images as files, one subfolder per class; returns how many."""
    import pyarrow.parquet as pq

    table = pq.read_table(parquet)
    if limit:
        table = table.slice(0, limit)
    metadata = json.loads((table.schema.metadata or {}).get(b"huggingface", b"{}"))
    names = metadata.get("info", {}).get("features", {}).get("label", {}).get("names")
    images, labels = table.column("img").to_pylist(), table.column("label").to_pylist()
    for i, (image, label) in enumerate(zip(images, labels)):
        split = "test" if i < n_test else "train"
        target = folder / split / (names[label] if names else str(label))
        target.mkdir(parents=True, exist_ok=True)
        suffix = ".png" if image["bytes"][:4] == b"\x89PNG" else ".jpg"
        (target / f"{i:06d}{suffix}").write_bytes(image["bytes"])
    return len(images)


def plain_loop(paths: list[str]) -> float:
    """What a researcher would write first: seconds to decode every file, one process."""
    import numpy as np
    from PIL import Image

    started = time.perf_counter()
    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
    np.stack(arrays)
    return time.perf_counter() - started


def reglab_decode(paths: list[str], processes: int) -> float:
    from reglab.data.images import decode_images

    items = [{"path": path, "bytes": None} for path in paths]
    started = time.perf_counter()
    decode_images(items, "bench", "RGB", lambda row: paths[row], processes=processes)
    return time.perf_counter() - started


def first_setup(folder: Path, cache: Path, train_size: int | None, val_size: int) -> dict:
    from reglab.data import images as images_module
    from reglab.data.images import ImageDataModule

    decoded = []
    real = images_module.decode_images

    def counting(encoded, *args, **kwargs):
        decoded.append(len(encoded))
        return real(encoded, *args, **kwargs)

    images_module.decode_images = counting
    try:
        shutil.rmtree(cache, ignore_errors=True)
        datamodule = ImageDataModule(path=str(folder), cache_dir=str(cache), train_size=train_size,
                                     val_size=val_size)
        started = time.perf_counter()
        datamodule.setup()
        seconds = time.perf_counter() - started
    finally:
        images_module.decode_images = real
    size = sum(p.stat().st_size for p in cache.rglob("*.pt"))
    return {"train_size": train_size, "images_decoded": sum(decoded), "seconds": round(seconds, 2),
            "cache_mb": round(size / 2**20, 1)}


def datasets_builder(folder: Path, work: Path) -> float:
    from datasets import load_dataset
    from datasets.utils import logging as datasets_logging

    datasets_logging.disable_progress_bar()
    started = time.perf_counter()
    load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(work / "hf"))
    return time.perf_counter() - started


def walk(folder: Path) -> float:
    from reglab.data.images import scan_imagefolder

    started = time.perf_counter()
    scan_imagefolder(folder)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parquet", type=Path, required=True, help="hub-schema parquet: img (bytes) + label")
    parser.add_argument("--limit", type=int, help="only the first N images of it")
    parser.add_argument("--test", type=int, default=10000, help="images that go to test/ (default 10000)")
    parser.add_argument("--train-size", type=int, default=2000, help="(b): data.train_size of the subset run")
    parser.add_argument("--val-size", type=int, default=5000, help="(b): data.val_size (carved from train)")
    parser.add_argument("--datasets-builder", action="store_true", help="(c): also time the datasets builder")
    parser.add_argument("--work", type=Path, help="where the folder and caches go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("bench_decode.json"))
    args = parser.parse_args()
    if not args.parquet.is_file():
        parser.error(f"--parquet {args.parquet}: no such file")

    from reglab.atomic import atomic_write
    from reglab.data.images import decoding_processes

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-decode-"))
    folder = work / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    count = write_folder(args.parquet, folder, args.limit, min(args.test, (args.limit or 10**9) // 5))
    paths = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    cores = decoding_processes(len(paths))
    plain = plain_loop(paths)
    one = reglab_decode(paths, 1)
    every = reglab_decode(paths, cores)
    rate = lambda seconds: round(len(paths) / seconds)  # noqa: E731
    result = {"images": count, "cores": cores,
              "images_per_s": {"plain_pil_loop": rate(plain), "reglab_1_process": rate(one),
                               f"reglab_{cores}_processes": rate(every)},
              "decode_speedup": round(plain / every, 2),
              "first_setup": [first_setup(folder, work / "cache", args.train_size, args.val_size),
                              first_setup(folder, work / "cache", None, args.val_size)],
              "walk_s": round(walk(folder), 2)}
    if args.datasets_builder:
        result["datasets_builder_s"] = round(datasets_builder(folder, work), 2)

    print(f"{count:,} images ({args.parquet.name}), {cores} cores")
    print(f"{'decoding':<28}{'images/s':>10}{'x plain':>9}")
    for name, value in result["images_per_s"].items():
        print(f"{name:<28}{value:>10,}{value / result['images_per_s']['plain_pil_loop']:>9.2f}")
    print(f"\n{'first setup (nothing cached)':<30}{'decoded':>9}{'seconds':>9}{'cache MB':>10}")
    for row in result["first_setup"]:
        label = f"train_size={row['train_size']}" if row["train_size"] else "whole train split"
        print(f"{label:<30}{row['images_decoded']:>9,}{row['seconds']:>9.1f}{row['cache_mb']:>10.1f}")
    print(f"\nreading the folder: reglab's walk {result['walk_s']:.1f} s"
          + (f", the datasets imagefolder builder {result['datasets_builder_s']:.1f} s"
             if args.datasets_builder else ""))
    atomic_write(args.out, lambda handle: handle.write((json.dumps(result, indent=2) + "\n").encode()))
    print(f"wrote {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
