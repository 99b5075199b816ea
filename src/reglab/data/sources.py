"""What every data source shares: split names in file names, and a fast check for the hub."""

from __future__ import annotations

import os

from reglab.network import reachable

SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Decide quickly whether to try the hub at all (a blind hub call takes ~20 s to fail offline)."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    return reachable("huggingface.co", 443, timeout)


def split_of(name: str) -> str | None:
    """'train-00000-of-00001.parquet' -> 'train'; 'val.parquet' -> 'validation'; 'dev.tsv' -> 'validation'."""
    stem = name.split(".")[0].lower()
    for token in (stem, stem.split("-")[0], stem.split("_")[0]):
        if token in SPLIT_ALIASES:
            return SPLIT_ALIASES[token]
    return None


def train_eval_index(n_train: int, size: int):
    """The fixed train subset evaluated in eval mode each epoch (train/acc, gen_gap): the same every run."""
    import torch

    return torch.randperm(n_train, generator=torch.Generator().manual_seed(0))[:min(int(size), n_train)]

