"""GLUE SST-2 sentiment: from the hub (nyu-mll/glue, sst2), a local GLUE folder (train.tsv, dev.tsv or
validation.tsv, optional test.tsv) or parquet files named by split. Tokenized once, padded per batch.

Validation is GLUE dev. Test is a *labelled* test split when one is given; GLUE's own test has no labels,
so it is skipped (with a message) and the run tests on validation, which results.json records."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from reglab.data.batching import EvalBatches, TrainBatches, batch_loader, check_divisible, rank_and_world
from reglab.data.sources import (SPLIT_ALIASES, check_subset_seed, hub_reachable, split_of, subset_count,
                                 train_eval_index, training_subset)
from reglab.data.tokenizer import load_tokenizer
from reglab.errors import ConfigError, DataUnavailableError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".tsv", ".parquet")


class TokenBatchDataset(Dataset):
    """Token ids pre-padded to max_length in one tensor; a batch is one gather, trimmed to its longest row."""

    def __init__(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor):
        self.ids, self.lengths, self.labels = ids, lengths, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        index = torch.as_tensor(indices)
        lengths = self.lengths[index]
        width = int(lengths.max())
        mask = torch.arange(width)[None, :] < lengths[:, None]
        return {"input_ids": self.ids[index, :width], "attention_mask": mask}, self.labels[index]

    def subset(self, index: torch.Tensor) -> "TokenBatchDataset":
        return TokenBatchDataset(self.ids[index], self.lengths[index], self.labels[index])


def check_rows(sentences: list, labels: list, where: str, first_line: int) -> bool:
    """Raise on a bad row, naming file and line. Returns False when the split has no labels at all
    (GLUE's test: label column missing or all -1), True when every row is labelled 0/1."""
    if labels is None or (labels and all(str(label).strip() in ("-1", "") for label in labels)):
        return False
    for i, (sentence, label) in enumerate(zip(sentences, labels)):
        line = first_line + i
        if str(label).strip() not in ("0", "1", "0.0", "1.0"):
            raise DataUnavailableError(f"{where}:{line}: label {str(label)!r} is not 0 or 1")
        if sentence is None or not str(sentence).strip():
            raise DataUnavailableError(f"{where}:{line}: empty sentence")
    return True


def read_split(files: list[Path], cache_dir: Path) -> tuple[list[str], list[int] | None]:
    """Rows of one split, validated. TSVs are read with quoting off: SST-2 sentences contain `"`."""
    from datasets import load_dataset

    sentences, labels = [], []
    for path in files:
        try:
            if path.suffix == ".tsv":
                # quoting=3 (QUOTE_NONE): otherwise a `"` silently merges rows
                data = load_dataset("csv", data_files=str(path), delimiter="\t", quoting=3, split="train",
                                    keep_default_na=False, na_filter=False, cache_dir=str(cache_dir / "hf"))
                first_line = 2  # after the header
            else:
                data = load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(cache_dir / "hf"))
                first_line = 1
        except Exception as err:
            raise DataUnavailableError(f"{path}: cannot read: {err}") from None
        if "sentence" not in data.column_names:
            raise DataUnavailableError(f"{path}: expected a 'sentence' column, found {data.column_names}")
        rows = data["sentence"]
        row_labels = data["label"] if "label" in data.column_names else None
        if not rows:
            raise DataUnavailableError(f"{path}: split is empty")
        if not check_rows(rows, row_labels, str(path), first_line):
            return rows, None
        sentences += [str(s) for s in rows]
        labels += [int(float(label)) for label in row_labels]
    return sentences, labels


def find_split_files(root: Path) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix in TEXT_SUFFIXES and (split := split_of(path.name)) is not None:
            files.setdefault(split, []).append(path)
    return files


class SST2DataModule(pl.LightningDataModule):
    input_kind = "tokens"

    def __init__(self, path: str | None = None, hub_name: str = "nyu-mll/glue", hub_config: str = "sst2",
                 cache_dir: str = ".cache", tokenizer: str = "wordpiece", vocab_size: int = 8000,
                 lowercase: bool = True, max_length: int = 64, batch_size: int = 64, eval_batch_size: int = 256,
                 num_workers: int = 0, sort_by_length: bool = True, train_eval_size: int = 2000, seed: int = 0,
                 train_size: int | float | None = None, subset_seed: int = 0, augment: bool = True):
        super().__init__()
        subset_count(train_size)  # its form now; its size against the split once the split is read
        # augment: accepted so one key switches augmentation off in every study; SST-2 training has none.
        self.train_size, self.subset_seed, self.augment = train_size, check_subset_seed(subset_seed), bool(augment)
        if path is not None and not Path(path).is_dir():
            raise ConfigError(f"data.path={path!r}: directory does not exist")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                           ("max_length", max_length), ("vocab_size", vocab_size)):
            if int(value) <= 0:
                raise ConfigError(f"data.{key}={value!r}: must be > 0")
        self.path = Path(path) if path is not None else None
        self.hub_name, self.hub_config, self.cache_dir = hub_name, hub_config, Path(cache_dir)
        self.tokenizer_name, self.vocab_size, self.lowercase = tokenizer, int(vocab_size), bool(lowercase)
        self.max_length, self.batch_size, self.eval_batch_size = int(max_length), int(batch_size), int(eval_batch_size)
        self.num_workers, self.sort_by_length, self.train_eval_size = int(num_workers), sort_by_length, train_eval_size
        self.seed = int(seed)  # the run's seed: it alone decides the batch order
        self.splits: dict[str, TokenBatchDataset] | None = None

    # -- reading ------------------------------------------------------------------------------------
    def read_text(self) -> tuple[dict[str, tuple[list[str], list[int] | None]], str]:
        """split -> (sentences, labels or None), and a fingerprint of the source for caches."""
        if self.path is not None:
            files = find_split_files(self.path)
            if "train" not in files or "validation" not in files:
                raise DataUnavailableError(f"data.path={str(self.path)!r}: need train and dev/validation files "
                                           f"(.tsv or .parquet), found {sorted(files) or 'none'}")
            stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files["train"]]
            fingerprint = hashlib.sha1(json.dumps(stats).encode()).hexdigest()[:16]
            return {split: read_split(paths, self.cache_dir) for split, paths in files.items()}, fingerprint
        if not hub_reachable():
            raise DataUnavailableError(
                "SST-2: the Hugging Face hub is unreachable. Give a local GLUE folder with data.path=DIR "
                "(train.tsv and dev.tsv, header 'sentence<TAB>label'), or parquet files named by split.")
        from datasets import load_dataset

        loaded = load_dataset(self.hub_name, self.hub_config, cache_dir=str(self.cache_dir / "hf"))
        text = {}
        for name, data in loaded.items():
            labels = data["label"]
            labelled = check_rows(data["sentence"], labels, f"{self.hub_name}/{self.hub_config} ({name})", 1)
            text[SPLIT_ALIASES.get(name, name)] = (data["sentence"], labels if labelled else None)
        return text, f"hub-{self.hub_name}-{self.hub_config}"

    def encode(self, tokenizer, sentences: list[str], labels: list[int]) -> TokenBatchDataset:
        encoded = tokenizer(sentences, truncation=True, max_length=self.max_length)["input_ids"]
        lengths = torch.tensor([len(ids) for ids in encoded])
        ids = torch.full((len(encoded), self.max_length), tokenizer.pad_token_id, dtype=torch.long)
        for row, token_ids in enumerate(encoded):
            ids[row, :len(token_ids)] = torch.tensor(token_ids)
        return TokenBatchDataset(ids, lengths, torch.tensor(labels, dtype=torch.long))

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        text, fingerprint = self.read_text()
        self.tokenizer = load_tokenizer(self.tokenizer_name, text["train"][0], self.cache_dir, fingerprint,
                                        self.vocab_size, self.lowercase)
        test = text.get("test")
        if test is not None and test[1] is None:
            log.warning("SST-2 test split has no labels (GLUE's test is unlabelled): testing on validation")
            test = None
        self.test_split = "test" if test is not None else "validation"
        self.splits = {"train": self.encode(self.tokenizer, *text["train"]),
                       "validation": self.encode(self.tokenizer, *text["validation"])}
        self.splits["test"] = self.encode(self.tokenizer, *test) if test else self.splits["validation"]
        # The tokenizer above was fitted on the whole train split's text (no labels); the subset is of examples.
        index = training_subset(self.splits["train"].labels, self.train_size, self.subset_seed)
        if index is not None:
            self.splits["train"] = self.splits["train"].subset(index)
        self.train_eval = self.splits["train"].subset(train_eval_index(len(self.splits["train"]), self.train_eval_size))

    @property
    def split_sizes(self) -> dict[str, int]:
        """Examples per split as trained and evaluated (train after ``data.train_size``)."""
        self.setup()
        return {"train": len(self.splits["train"]), "val": len(self.splits["validation"]),
                "test": len(self.splits["test"])}

    @property
    def model_kwargs(self) -> dict:
        self.setup()
        return {"vocab_size": len(self.tokenizer), "num_classes": 2, "max_length": self.max_length,
                "pad_id": self.tokenizer.pad_token_id}

    # -- loaders ------------------------------------------------------------------------------------
    def _eval_loader(self, dataset: TokenBatchDataset) -> DataLoader:
        rank, world = rank_and_world(self.trainer)
        check_divisible(self.eval_batch_size, world, "data.eval_batch_size")
        # Evaluation order does not matter: sorted by length, batches carry almost no padding.
        order = torch.argsort(dataset.lengths, stable=True)
        sampler = EvalBatches(len(dataset), self.eval_batch_size, rank, world, order)
        return batch_loader(dataset, sampler, self.num_workers)

    def train_dataloader(self):
        rank, world = rank_and_world(self.trainer)
        train = self.splits["train"]
        sampler = TrainBatches(len(train), self.batch_size, self.seed, rank, world,
                               lengths=train.lengths if self.sort_by_length else None)
        return batch_loader(train, sampler, self.num_workers, self.trainer)

    def val_dataloader(self):
        # Index 1: a fixed train subset in eval mode, for train/acc and gen_gap without dropout.
        return [self._eval_loader(self.splits["validation"]), self._eval_loader(self.train_eval)]

    def test_dataloader(self):
        return self._eval_loader(self.splits["test"])
