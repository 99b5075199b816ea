"""How batches are drawn, on one device or many.

``data.batch_size`` (and ``eval_batch_size``) is the GLOBAL batch: with N devices each rank gets batch_size / N
rows of every batch. The batches of an epoch depend only on (seed, epoch), never on the global RNG, and every
rank draws the same ones; a rank takes its contiguous share of each. So a run on 1 device and on N devices
trains on the same batches in the same order, with the same learning-rate schedule (hyperparameters mean the
same thing at any scale), and a resumed run sees the order it would have seen.

Evaluation shards each split across ranks without padding: every sample is counted exactly once (Lightning's
DistributedSampler pads with duplicates; the trainer configs turn it off)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from reglab.errors import ConfigError


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An RNG for (seed, epoch) with no overlap between nearby pairs (seed + epoch would collide). On a GPU the
    same seed gives another (equally fixed) permutation than on the CPU: randperm differs by device."""
    return keyed_generator([int(seed), int(epoch)], device)


def keyed_generator(key: list[int], device: torch.device | str = "cpu") -> torch.Generator:
    """An RNG fixed by a list of integers; distinct lists give unrelated streams."""
    state = np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def check_divisible(batch_size: int, world_size: int, key: str = "data.batch_size") -> None:
    if batch_size % world_size:
        raise ConfigError(f"{key}={batch_size} is the global batch size and must divide by the {world_size} "
                          f"devices (each gets an equal share); allowed: a multiple of {world_size}")


class TrainBatches(Sampler[list[int]]):
    """Shuffled global batches; this rank's share of each. With ``lengths``, batches are drawn from length
    buckets (``bucket_batches`` batches per bucket, sorted by length inside), so padding drops to near zero.

    The last, partial batch keeps a multiple of world_size rows (at most world_size - 1 rows of an epoch are
    skipped) so every rank steps together with an equal share."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 lengths: torch.Tensor | None = None, bucket_batches: int = 50, device: torch.device | str = "cpu"):
        check_divisible(batch_size, world_size)
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.lengths, self.bucket_batches, self.epoch = lengths, bucket_batches, 0
        self.device = torch.device(device)  # where the order is drawn and the index batches live
        self.resume: tuple[int, int] | None = None  # (epoch, batches already trained in it)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """The next pass over ``epoch`` starts after its first ``batches_done`` batches (a resumed run)."""
        self.resume = (int(epoch), int(batches_done))

    def global_batches(self) -> list[torch.Tensor]:
        generator = epoch_generator(self.seed, self.epoch, self.device)
        order = torch.randperm(self.n, generator=generator, device=self.device)
        if self.lengths is None:
            return list(order.split(self.batch_size))
        batches = []
        bucket = self.batch_size * self.bucket_batches
        for start in range(0, self.n, bucket):
            members = order[start:start + bucket]
            batches.extend(members[torch.argsort(self.lengths[members], stable=True)].split(self.batch_size))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator, device=self.device).tolist()]

    def index_batches(self):
        """This rank's index tensor of each batch, on ``device``."""
        skip = self.resume[1] if self.resume is not None and self.resume[0] == self.epoch else 0
        self.resume = None
        batches = [b for b in self.global_batches() if len(b) >= self.world_size]
        for batch in batches[skip:]:
            keep = len(batch) - len(batch) % self.world_size
            yield batch[:keep].view(self.world_size, -1)[self.rank]

    def __iter__(self):
        for index in self.index_batches():
            yield index.tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        if self.lengths is not None:  # only the last bucket can end in a partial batch
            full, rest = divmod(self.n, self.batch_size * self.bucket_batches)
            full, rest = full * self.bucket_batches + rest // self.batch_size, rest % self.batch_size
        return full + (rest >= self.world_size)


class EvalBatches(Sampler[list[int]]):
    """Every sample exactly once across ranks: a contiguous shard per rank, in ``order`` (for instance
    by length, to cut padding), cut into batches of batch_size / world_size."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 order: torch.Tensor | None = None, device: torch.device | str = "cpu"):
        order = torch.arange(n) if order is None else order
        self.shard = order.tensor_split(world_size)[rank].to(device)
        self.batch_size = max(1, batch_size // world_size)

    def index_batches(self):
        return iter(self.shard.split(self.batch_size))

    def __iter__(self):
        for batch in self.index_batches():
            yield batch.tolist()

    def __len__(self) -> int:
        return -(-len(self.shard) // self.batch_size)


def rank_and_world(trainer) -> tuple[int, int]:
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def batch_loader(dataset, sampler: Sampler[list[int]], num_workers: int, trainer=None) -> DataLoader:
    """A DataLoader over a sampler of index lists. The datasets index a whole batch at once (one gather);
    ``sampler=`` rather than ``batch_sampler=`` so Lightning finds ``set_epoch`` on ``loader.sampler``. Its own
    generator: starting an epoch's iterator draws nothing from the global RNG (which dropout and augmentation
    use), so a resumed run's random stream matches the uninterrupted one. A training loader (``TrainBatches``)
    is resumable mid-epoch."""
    options = dict(sampler=sampler, batch_size=None, collate_fn=_as_is, num_workers=num_workers,
                   pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                   generator=torch.Generator().manual_seed(0))
    if isinstance(sampler, TrainBatches):
        return ResumableLoader(dataset, trainer=trainer, **options)
    return DataLoader(dataset, **options)


class ResumablePosition:
    """What makes a training loader checkpointable mid-epoch: Lightning saves ``state_dict()`` in the checkpoint
    and hands it to ``load_state_dict()`` on resume. The state is the epoch and the batches already trained in
    it (from the optimizer step count, which the checkpoint restores exactly); the order depends only on (seed,
    epoch), so skipping those batches resumes the epoch where it stopped. Needs ``trainer`` and a TrainBatches
    ``sampler``."""

    def state_dict(self) -> dict:
        epoch, step = self.trainer.current_epoch, self.trainer.global_step
        return {"epoch": epoch, "batches_done": step - epoch * len(self.sampler)}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume_at(state["epoch"], state["batches_done"])


class ResumableLoader(ResumablePosition, DataLoader):
    """The training DataLoader (CPU path): workers and pinned memory as configured, resumable mid-epoch."""

    def __init__(self, dataset, trainer=None, **options):
        super().__init__(dataset, **options)
        self.trainer = trainer


class DeviceBatches:
    """Batches gathered from tensors that already sit on the training device (the GPU-resident path): no
    DataLoader, no workers, no per-sample Python, and shuffling is a randperm on the device. Lightning iterates
    it like a loader: ``len``, and ``sampler.set_epoch`` each epoch."""

    batch_sampler = None  # Lightning inspects loaders for one; the sampler here yields whole batches

    def __init__(self, tensors: tuple[torch.Tensor, ...], sampler: TrainBatches | EvalBatches):
        self.tensors, self.sampler = tensors, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler.index_batches():
            yield tuple(tensor[index] for tensor in self.tensors)


class ResumableDeviceBatches(ResumablePosition, DeviceBatches):
    """The training batches of the GPU-resident path, resumable mid-epoch like ResumableLoader."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], sampler: TrainBatches, trainer=None):
        super().__init__(tensors, sampler)
        self.trainer = trainer


def _as_is(batch):
    return batch
