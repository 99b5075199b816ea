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

import torch
from torch.utils.data import Dataset

from reglab.data.augment import normalize, random_crop, random_hflip
from reglab.data.base import ClassificationDataModule, check_int
from reglab.data.batching import DeviceBatches, ResumableDeviceBatches, keyed_generator, rank_and_world
from reglab.data.sources import train_eval_index, training_subset
from reglab.errors import ConfigError

AUGMENTATION_STREAM = 0xA06  # keeps these streams apart from the batch order's (seed, epoch) ones


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


class ImageTensorDataModule(ClassificationDataModule):
    input_kind = "image"

    def __init__(self, batch_size: int = 128, eval_batch_size: int = 512, crop_padding: int = 0, hflip: bool = False,
                 device_resident: str | bool = "auto", **shared):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, **shared)
        if device_resident not in DEVICE_RESIDENT:
            raise ConfigError(f"data.device_resident={device_resident!r}: allowed ['auto', true, false] (auto: on "
                              "when training on a GPU)")
        self.device_resident = device_resident
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.crop_padding, self.hflip = check_int("crop_padding", crop_padding, minimum=0), bool(hflip)

    def load_splits(self) -> ImageSplits:
        raise NotImplementedError(f"{type(self).__qualname__} does not implement load_splits()")

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        splits = self.load_splits()
        index = training_subset(splits.train[1], self.train_size, self.subset_seed)
        if index is not None:
            splits.train = (splits.train[0][index], splits.train[1][index])
        splits = self.decoded(splits)
        self.splits, self._test_split = splits, splits.test_split
        train_images = splits.train[0].float() / 255.0  # statistics of what is trained on
        self.mean = train_images.mean(dim=(0, 2, 3))
        self.std = train_images.std(dim=(0, 2, 3)).clamp_min(1e-3)
        eval_index = train_eval_index(len(splits.train[1]), self.train_eval_size)
        self.train_eval = (splits.train[0][eval_index], splits.train[1][eval_index])

    def decoded(self, splits: ImageSplits) -> ImageSplits:
        """The splits with pixels: a source read lazily (reglab.data.images) decodes here, after validation is
        carved and data.train_size applied, only the rows that are kept."""
        return splits

    def split_tensors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of split ``name``: "train", "val", "test" or "train_eval"."""
        return self.train_eval if name == "train_eval" else getattr(self.splits, name)

    def batch_dataset(self, name: str) -> TensorBatchDataset:
        return TensorBatchDataset(*self.split_tensors(name))

    @property
    def model_kwargs(self) -> dict:
        """What the model needs to know about the data; the model never reaches into the data."""
        self.setup()
        _, channels, height, _ = self.splits.train[0].shape
        return {"in_channels": channels, "image_size": height, "num_classes": len(self.splits.class_names)}

    def resident_device(self) -> torch.device | None:
        """The device the splits live on (the GPU-resident path), or None (the DataLoader path)."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        on = device.type == "cuda" if self.device_resident == "auto" else bool(self.device_resident)
        return device if on else None

    def split_on(self, name: str, device: torch.device):
        """Split ``name`` moved to ``device`` once (uint8 images: CIFAR-10's 50k are 150 MB) and kept there."""
        if name not in self._on_device or self._on_device[name][0].device != device:
            self._on_device[name] = tuple(t.to(device) for t in self.split_tensors(name))
        return self._on_device[name]

    def train_dataloader(self):
        device = self.resident_device()
        if device is None:
            return super().train_dataloader()
        rank, world = rank_and_world(self.trainer)
        return ResumableDeviceBatches(self.split_on("train", device), self.train_sampler(rank, world, device),
                                      self.trainer)

    def eval_loader(self, name: str):
        device = self.resident_device()
        if device is None:
            return super().eval_loader(name)
        return DeviceBatches(self.split_on(name, device), self.eval_sampler(self.batch_dataset(name), device))

    def augmentation_generator(self, device: torch.device) -> torch.Generator:
        """The crops and flips of a batch come from (seed, rank, epoch, batch), never from the global RNG that
        dropout also draws from: for a seed, every regularizer sees the same augmented batches (matched seeds),
        and a resumed run sees the ones it would have seen."""
        trainer = self.trainer
        progress = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)
        if progress is not None:
            batch = progress.current.ready
        else:  # a datamodule driven by hand, outside a Trainer's loop: each call its own batch
            self._augmented_batches = getattr(self, "_augmented_batches", 0) + 1
            batch = self._augmented_batches
        key = [AUGMENTATION_STREAM, self.seed, getattr(trainer, "global_rank", 0), getattr(trainer, "current_epoch", 0),
               batch]
        return keyed_generator(key, device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.augment and self.trainer is not None and self.trainer.training and (self.crop_padding > 0
                                                                                    or self.hflip):
            generator = self.augmentation_generator(images.device)
            images = random_crop(images, self.crop_padding, generator)
            if self.hflip:
                images = random_hflip(images, generator)
        if self.mean.device != images.device:  # once: a per-batch host-to-GPU copy would sync every step
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        return normalize(images, self.mean, self.std), labels
