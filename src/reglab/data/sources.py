"""What every data source shares: split names in file names, a fast check for the hub, the fixed train-eval
subset, and the class-stratified training subset behind ``data.train_size``."""

from __future__ import annotations

import os
import re

from reglab.network import reachable

SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test", "training": "train", "testing": "test"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Decide quickly whether to try the hub at all (a blind hub call takes ~20 s to fail offline)."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    return reachable("huggingface.co", 443, timeout)


def split_of(name: str) -> str | None:
    """The split a file name names anywhere in it, between separators: 'train-00000-of-00001.parquet' -> 'train';
    'qc.train.all' and 'train.txt' -> 'train'; 'reviews-dev.jsonl' -> 'validation'; 'rt-polarity.all' -> None."""
    for token in re.split(r"[^a-z0-9]+", name.lower()):
        if token in SPLIT_ALIASES:
            return SPLIT_ALIASES[token]
    return None


def train_eval_index(n_train: int, size: int):
    """The fixed train subset evaluated in eval mode each epoch (train/acc, gen_gap): the same every run."""
    import torch

    return torch.randperm(n_train, generator=torch.Generator().manual_seed(0))[:min(int(size), n_train)]


def check_subset_seed(value) -> int:
    """``data.subset_seed`` as an int, or a one-line error naming the key."""
    from reglab.errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"data.subset_seed={value!r}: must be an integer >= 0")
    return value


def subset_count(train_size, n_train: int | None = None) -> int | None:
    """``data.train_size`` as a count of training examples: None (all), a count >= 1, or a fraction in (0, 1].
    Without ``n_train`` (before any data is read) only the form is checked."""
    from reglab.errors import ConfigError

    if train_size is None:
        return None
    allowed = "allowed: null (all), a count >= 1, or a fraction in (0, 1]"
    if isinstance(train_size, bool) or not isinstance(train_size, (int, float)):
        raise ConfigError(f"data.train_size={train_size!r}: {allowed}")
    if isinstance(train_size, float) and not (train_size > 1 and train_size.is_integer()):
        if not 0 < train_size <= 1:
            raise ConfigError(f"data.train_size={train_size!r}: {allowed}")
        return None if n_train is None else max(1, round(train_size * n_train))
    if train_size < 1 or (n_train is not None and train_size > n_train):
        raise ConfigError(f"data.train_size={train_size!r}: {allowed}"
                          + (f"; the train split has {n_train}" if n_train is not None else ""))
    return int(train_size)


def training_subset(labels, train_size, seed: int):
    """The indices ``data.train_size`` keeps of a train split with these labels, or None to keep them all."""
    count = subset_count(train_size, len(labels))
    return None if count is None or count >= len(labels) else stratified_subset(labels, count, seed)


def stratified_subset(labels, size: int, seed: int):
    """Indices of a class-stratified subset of ``size`` examples, fixed by ``seed`` and nested: the subset of a
    smaller size is part of every larger one (same seed), so a learning curve adds data, never swaps it.

    Each class is shuffled; its k-th example gets the key (k + 0.5) / class size, and the subset is the ``size``
    smallest keys: every class holds its share of the subset to within one example."""
    import torch

    labels = torch.as_tensor(labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(seed)))
    keys = torch.empty(len(labels), dtype=torch.float64)
    for label in labels.unique():
        members = order[labels[order] == label]
        keys[members] = (torch.arange(len(members), dtype=torch.float64) + 0.5) / len(members)
    ranked = order[torch.argsort(keys[order], stable=True)]  # ties: in the shuffled order
    return ranked[:size].sort().values


def stratified_folds(labels, k: int, seed: int):
    """Each example's fold in 0..k-1: every class spread evenly over the folds (sizes within one of each other),
    fixed by ``seed`` alone, so every condition and seed of a study sees the same folds."""
    import torch

    labels = torch.as_tensor(labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(seed)))
    grouped = order[torch.argsort(labels[order], stable=True)]  # class by class, shuffled within each
    folds = torch.empty(len(labels), dtype=torch.long)
    folds[grouped] = torch.arange(len(labels)) % k
    return folds
