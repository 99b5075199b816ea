"""Per-example test predictions of a run, saved beside its results.json.

A report needs them for two things a run's accuracy cannot give: an interval that treats the test set as the sample
it is (a two-level bootstrap, reglab.report.stats), and a paired per-example test of two runs on the same test set
(McNemar). Stored compactly as ``test_predictions.npz``: the label and the predicted class (int16) and the
predicted class's probability (float16) of every test example, in the test split's order. About 10 KB per 2,000
examples. Read with ``allow_pickle=False``: the file is data and can never run anything."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

PREDICTIONS_FILE = "test_predictions.npz"
ARRAYS = {"label": np.int16, "pred": np.int16, "confidence": np.float16}


class PredictionsError(ValueError):
    """A test_predictions.npz that is not what a run writes."""


def save(run_dir: Path, predictions: dict) -> dict:
    """Write ``predictions`` (label, pred, confidence; tensors or arrays) atomically; returns results.json's entry."""
    from reglab.atomic import atomic_write

    arrays = {key: np.asarray(predictions[key].cpu() if hasattr(predictions[key], "cpu") else predictions[key])
              .astype(dtype) for key, dtype in ARRAYS.items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # serialised first: a full disk cannot leave half an archive
    atomic_write(Path(run_dir) / PREDICTIONS_FILE, lambda handle: handle.write(buffer.getvalue()))
    n = len(arrays["label"])
    return {"file": PREDICTIONS_FILE, "n": n, "accuracy": float((arrays["pred"] == arrays["label"]).mean()) if n else None}


def load(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``<run_dir>/test_predictions.npz``; PredictionsError names what is wrong with a bad file."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.exists():
        raise PredictionsError(f"{path}: no such file (runs made before reglab saved test predictions have none)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as err:  # a torn zip, flipped bytes, a bare .npy, a folder: all mean the same to a reader
        reason = "it holds Python objects, which are never loaded" if "allow_pickle" in str(err) else \
            f"{type(err).__name__}: {err}"
        raise PredictionsError(f"{path}: not a predictions archive ({reason})") from None
    missing = [key for key in ARRAYS if key not in arrays]
    if missing:
        raise PredictionsError(f"{path}: has no {', '.join(missing)} array (expected {', '.join(ARRAYS)})")
    lengths = {key: arrays[key].shape for key in ARRAYS}
    if any(len(shape) != 1 for shape in lengths.values()) or len({shape[0] for shape in lengths.values()}) != 1:
        raise PredictionsError(f"{path}: arrays of shapes {lengths}; expected one value per test example in each")
    if next(iter(lengths.values()))[0] == 0:
        raise PredictionsError(f"{path}: holds no test examples")
    for key in ("label", "pred"):
        if arrays[key].dtype.kind not in "iu":
            raise PredictionsError(f"{path}: {key} is {arrays[key].dtype}, not integer classes")
    return {key: arrays[key] for key in ARRAYS}


def correct(run_dir: str | Path) -> np.ndarray:
    """1 where the run's prediction was right, 0 where wrong, per test example (float64)."""
    arrays = load(run_dir)
    return (arrays["pred"] == arrays["label"]).astype(np.float64)
