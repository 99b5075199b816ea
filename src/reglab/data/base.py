"""What every reglab datamodule shares, whatever its input: the checked batch and subset settings, the test split
and split sizes in one form, the number of training batches per epoch, and the DataLoader plumbing (a global
``TrainBatches`` order for training; sharded ``EvalBatches`` for validation, the train-eval subset and test).

A subclass reads its source in ``setup()`` (once: later calls return at once) into ``self.splits`` and names the
source split the test metrics come from in ``self._test_split``; it hands each split over as a dataset indexed by
a whole batch of indices (``batch_dataset``). Text batches are length-bucketed (``train_lengths``) and evaluated
in length order (``eval_order``); images override the loaders to add their device-resident path."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from reglab.data.batching import EvalBatches, TrainBatches, batch_loader, check_divisible, rank_and_world
from reglab.data.sources import check_subset_seed, subset_count
from reglab.errors import ConfigError, DataUnavailableError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")  # as split_sizes and results.json name them


def check_int(key: str, value, minimum: int = 1) -> int:
    """``data.<key>`` as an int of at least ``minimum``, or a one-line error naming the key."""
    try:
        number = None if isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        bound = "> 0" if minimum == 1 else f">= {minimum}"
        raise ConfigError(f"data.{key}={value!r}: must be {bound}")
    return number


def check_classes_present(labels, class_names: list, where: str) -> None:
    """The training labels cover the classes: one class only is an error (nothing to learn), a class with no
    training example is a warning naming it (the model can never predict it; test accuracy is capped)."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long).flatten(), minlength=len(class_names))
    present = (counts > 0).nonzero().flatten().tolist()
    if len(present) < 2:
        only = f"only class {class_names[present[0]]!r}" if present else "no labelled example"
        raise DataUnavailableError(f"{where}: the training split holds {only} ({int(counts.sum())} examples); a "
                                   "classifier needs examples of at least two classes")
    missing = [str(class_names[i]) for i in range(len(class_names)) if counts[i] == 0]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        log.warning("%s: the training split has no example of %d of the %d classes (%s); the model can never "
                    "predict them", where, len(missing), len(class_names), shown)


def check_data_path(path) -> None:
    """``data.path``, when given, is an existing folder; a file or a missing path is one line saying which."""
    if path is None or Path(path).is_dir():
        return
    try:
        Path(path).resolve(strict=True)
    except RuntimeError:  # Python raises this for a symlink loop
        raise ConfigError(f"data.path={path!r}: is a symlink loop (a link that points back at itself)") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ConfigError(f"data.path={path!r}: is a symlink loop (a link that points back at itself)") from None
        if Path(path).is_symlink():
            raise ConfigError(f"data.path={path!r}: is a symlink to {os.readlink(path)!r}, which does not exist") \
                from None
    if Path(path).exists():
        raise ConfigError(f"data.path={path!r}: is a file; give the folder that holds the data files")
    raise ConfigError(f"data.path={path!r}: directory does not exist")


def or_list(items) -> str:
    """What is allowed, for a message: ['a', 'b'] -> 'a or b'; ['a', 'b', 'c'] -> 'a, b, or c'."""
    items = [str(item) for item in items]
    return " or ".join(items) if len(items) <= 2 else f"{', '.join(items[:-1])}, or {items[-1]}"


class ClassificationDataModule(pl.LightningDataModule):
    """The shared half of reglab.contracts.ClassificationData; subclasses set ``input_kind`` and read the data."""

    def __init__(self, batch_size: int = 128, eval_batch_size: int = 512, num_workers: int = 0,
                 train_eval_size: int = 2000, seed: int = 0, train_size: int | float | None = None,
                 subset_seed: int = 0, augment: bool = True):
        super().__init__()
        subset_count(train_size)  # its form now; its size against the split once the split is read
        self.train_size, self.subset_seed = train_size, check_subset_seed(subset_seed)
        # One key switches augmentation off in every study, also where a data set has none to switch off.
        self.augment = bool(augment)
        # "full": one batch of the whole training split per step (full-batch methods: optim=lbfgs)
        self.batch_size = None if batch_size == "full" else check_int("batch_size", batch_size)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size)
        self.num_workers = check_int("num_workers", num_workers, minimum=0)
        self.train_eval_size = check_int("train_eval_size", train_eval_size)
        self.seed = int(seed)  # the run's seed: it alone decides the batch order
        self.splits = None  # what the subclass's setup() read (ImageSplits, or a dict of TokenBatchDatasets)
        self._test_split: str | None = None

    # -- what a subclass provides ------------------------------------------------------------------------
    def batch_dataset(self, name: str) -> Dataset:
        """Split ``name`` ("train", "val", "test" or "train_eval"), indexed by a whole batch of indices."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement batch_dataset()")

    def train_lengths(self) -> torch.Tensor | None:
        """Lengths of the training examples when batches are drawn from length buckets, else None."""
        return None

    def eval_order(self, dataset: Dataset) -> torch.Tensor | None:
        """The order a split is evaluated in (None: as stored)."""
        return None

    # -- the contract ----------------------------------------------------------------------------------------
    @property
    def test_split(self) -> str:
        """The source split the test metrics come from: "test", or "validation" where the source has no labelled
        test split (results.json records it)."""
        self.setup()
        return self._test_split

    @property
    def split_sizes(self) -> dict[str, int]:
        """Examples per split as trained and evaluated (train after ``data.train_size``)."""
        self.setup()
        return {name: len(self.batch_dataset(name)) for name in SPLIT_NAMES}

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        """Optimizer steps per epoch on ``world_size`` devices: the length of the training sampler, which is built
        without a loader (cheap) so the count is the one training will see."""
        self.setup()
        return len(self.train_sampler(world_size=world_size))

    # -- loaders -----------------------------------------------------------------------------------------------
    def train_sampler(self, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> TrainBatches:
        n_train = len(self.batch_dataset("train"))
        batch_size = self.batch_size or -(-n_train // world_size) * world_size  # full: one step per epoch
        return TrainBatches(n_train, batch_size, self.seed, rank, world_size,
                            lengths=self.train_lengths(), device=device)

    def eval_sampler(self, dataset: Dataset, device: torch.device | str = "cpu") -> EvalBatches:
        rank, world = rank_and_world(self.trainer)
        check_divisible(self.eval_batch_size, world, "data.eval_batch_size")
        return EvalBatches(len(dataset), self.eval_batch_size, rank, world, self.eval_order(dataset), device=device)

    def train_dataloader(self):
        rank, world = rank_and_world(self.trainer)
        return batch_loader(self.batch_dataset("train"), self.train_sampler(rank, world), self.num_workers,
                            self.trainer)

    def eval_loader(self, name: str):
        dataset = self.batch_dataset(name)
        return batch_loader(dataset, self.eval_sampler(dataset), self.num_workers)

    def val_dataloader(self):
        # Index 1 is a fixed train subset in eval mode: train/acc and the gap are not biased by dropout or
        # augmentation.
        return [self.eval_loader("val"), self.eval_loader("train_eval")]

    def test_dataloader(self):
        return self.eval_loader("test")
