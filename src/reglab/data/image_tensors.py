"""What every image datamodule shares: splits held as decoded uint8 tensors, per-channel
normalisation from train statistics, batched augmentation after transfer to the device, and a
fixed train subset evaluated in eval mode for the generalisation gap.

Subclasses implement ``load_splits()`` and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from reglab.data.augment import normalize, random_crop, random_hflip
from reglab.data.batching import EvalBatches, TrainBatches, batch_loader, check_divisible, rank_and_world
from reglab.data.sources import train_eval_index
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


class ImageTensorDataModule(pl.LightningDataModule):
    input_kind = "image"

    def __init__(self, batch_size: int = 128, eval_batch_size: int = 512, num_workers: int = 0,
                 train_eval_size: int = 2000, crop_padding: int = 0, hflip: bool = False, seed: int = 0):
        super().__init__()
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
        self.splits = splits = self.load_splits()
        train_images = splits.train[0].float() / 255.0
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

    def train_dataloader(self) -> DataLoader:
        rank, world = rank_and_world(self.trainer)
        sampler = TrainBatches(len(self.splits.train[1]), self.batch_size, self.seed, rank, world)
        return batch_loader(TensorBatchDataset(*self.splits.train), sampler, self.num_workers, self.trainer)

    def _eval_loader(self, split) -> DataLoader:
        rank, world = rank_and_world(self.trainer)
        check_divisible(self.eval_batch_size, world, "data.eval_batch_size")
        sampler = EvalBatches(len(split[1]), self.eval_batch_size, rank, world)
        return batch_loader(TensorBatchDataset(*split), sampler, self.num_workers)

    def val_dataloader(self):
        # Index 1 is a fixed train subset in eval mode: train/acc and the gap are not biased by
        # dropout or augmentation.
        return [self._eval_loader(self.splits.val), self._eval_loader(self.train_eval)]

    def test_dataloader(self):
        return self._eval_loader(self.splits.test)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            images = random_crop(images, self.crop_padding)
            if self.hflip:
                images = random_hflip(images)
        return normalize(images, self.mean, self.std), labels
