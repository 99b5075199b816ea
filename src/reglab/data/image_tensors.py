"""What every image datamodule shares: splits held as decoded uint8 tensors, per-channel
normalisation from train statistics, batched augmentation after transfer to the device, and a
fixed train subset evaluated in eval mode for the generalisation gap.

Two ways to the device, one augmentation: on a GPU (``device_resident: auto``) every split is moved to the
device once, as uint8, and batches are gathered there (``DeviceBatches``: randperm on the device, no
DataLoader); on the CPU a DataLoader (workers, pinned memory) gathers them. Either way a batch reaches
``on_after_batch_transfer`` as uint8 on the device, where crop, flip and normalisation run as batched
tensor ops.

Subclasses implement ``load_splits()`` and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from reglab.data.augment import normalize, random_crop, random_hflip
from reglab.data.batching import (DeviceBatches, EvalBatches, ResumableDeviceBatches, TrainBatches, batch_loader,
                                  check_divisible, rank_and_world)
from reglab.data.sources import check_subset_seed, subset_count, train_eval_index, training_subset
from reglab.errors import ConfigError


@dataclass
class ImageSplits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    class_names: list[str]
    test_split: str = "test"  # which source split the test metrics come from


class TensorBatchDataset(Dataset):
    """Indexed with a whole batch of indices at once, so a batch is one gather."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def carve_validation(images: torch.Tensor, labels: torch.Tensor, size: int, seed: int, key: str):
    if not 0 < size < len(labels):
        raise ConfigError(f"{key}={size}: must be between 1 and {len(labels) - 1} (train has {len(labels)} images)")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val, train = order[:size], order[size:]
    return (images[train], labels[train]), (images[val], labels[val])


DEVICE_RESIDENT = ("auto", True, False)


class ImageTensorDataModule(pl.LightningDataModule):
    input_kind = "image"

    def __init__(self, batch_size: int = 128, eval_batch_size: int = 512, num_workers: int = 0,
                 train_eval_size: int = 2000, crop_padding: int = 0, hflip: bool = False, seed: int = 0,
                 device_resident: str | bool = "auto", train_size: int | float | None = None, subset_seed: int = 0,
                 augment: bool = True):
        super().__init__()
        subset_count(train_size)  # its form now; its size against the split once the split is read
        self.train_size, self.subset_seed, self.augment = train_size, check_subset_seed(subset_seed), bool(augment)
        if device_resident not in DEVICE_RESIDENT:
            raise ConfigError(f"data.device_resident={device_resident!r}: allowed ['auto', true, false] (auto: on "
                              "when training on a GPU)")
        self.device_resident = device_resident
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) <= 0:
                raise ConfigError(f"data.{key}={value!r}: must be > 0")
        self.seed = int(seed)  # the run's seed: it alone decides the batch order
        if int(num_workers) < 0:
            raise ConfigError(f"data.num_workers={num_workers!r}: must be >= 0")
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.train_eval_size = int(num_workers), int(train_eval_size)
        self.crop_padding, self.hflip = int(crop_padding), bool(hflip)
        self.splits: ImageSplits | None = None

    def load_splits(self) -> ImageSplits:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        splits = self.load_splits()
        index = training_subset(splits.train[1], self.train_size, self.subset_seed)
        if index is not None:
            splits.train = (splits.train[0][index], splits.train[1][index])
        self.splits = splits
        train_images = splits.train[0].float() / 255.0  # statistics of what is trained on
        self.mean = train_images.mean(dim=(0, 2, 3))
        self.std = train_images.std(dim=(0, 2, 3)).clamp_min(1e-3)
        eval_index = train_eval_index(len(splits.train[1]), self.train_eval_size)
        self.train_eval = (splits.train[0][eval_index], splits.train[1][eval_index])

    @property
    def model_kwargs(self) -> dict:
        """What the model needs to know about the data; the model never reaches into the data."""
        self.setup()
        _, channels, height, _ = self.splits.train[0].shape
        return {"in_channels": channels, "image_size": height, "num_classes": len(self.splits.class_names)}

    @property
    def test_split(self) -> str:
        self.setup()
        return self.splits.test_split

    @property
    def split_sizes(self) -> dict[str, int]:
        """Examples per split as trained and evaluated (train after ``data.train_size``)."""
        self.setup()
        return {name: len(getattr(self.splits, name)[1]) for name in ("train", "val", "test")}

    def resident_device(self) -> torch.device | None:
        """The device the splits live on (the GPU-resident path), or None (the DataLoader path)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        on = device.type == "cuda" if self.device_resident == "auto" else bool(self.device_resident)
        return device if on else None

    def split_on(self, name: str, split: tuple[torch.Tensor, torch.Tensor], device: torch.device):
        """A split moved to ``device`` once (uint8 images: CIFAR-10's 50k are 150 MB) and kept there."""
        if name not in self._on_device or self._on_device[name][0].device != device:
            self._on_device[name] = tuple(t.to(device) for t in split)
        return self._on_device[name]

    def train_dataloader(self):
        rank, world = rank_and_world(self.trainer)
        device = self.resident_device()
        sampler = TrainBatches(len(self.splits.train[1]), self.batch_size, self.seed, rank, world,
                               device=device or "cpu")
        if device is not None:
            return ResumableDeviceBatches(self.split_on("train", self.splits.train, device), sampler, self.trainer)
        return batch_loader(TensorBatchDataset(*self.splits.train), sampler, self.num_workers, self.trainer)

    def _eval_loader(self, name: str, split):
        rank, world = rank_and_world(self.trainer)
        check_divisible(self.eval_batch_size, world, "data.eval_batch_size")
        device = self.resident_device()
        sampler = EvalBatches(len(split[1]), self.eval_batch_size, rank, world, device=device or "cpu")
        if device is not None:
            return DeviceBatches(self.split_on(name, split, device), sampler)
        return batch_loader(TensorBatchDataset(*split), sampler, self.num_workers)

    def val_dataloader(self):
        # Index 1 is a fixed train subset in eval mode: train/acc and the gap are not biased by
        # dropout or augmentation.
        return [self._eval_loader("val", self.splits.val), self._eval_loader("train_eval", self.train_eval)]

    def test_dataloader(self):
        return self._eval_loader("test", self.splits.test)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.augment and self.trainer is not None and self.trainer.training:
            images = random_crop(images, self.crop_padding)
            if self.hflip:
                images = random_hflip(images)
        if self.mean.device != images.device:  # once: a per-batch host-to-GPU copy would sync every step
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        return normalize(images, self.mean, self.std), labels
