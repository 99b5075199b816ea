"""Any "text + label" classification data: from the hub (``data.hub_name``, ``hub_config``), or a local folder
(``data.path``) of TSV files with a header line (train.tsv, dev.tsv or validation.tsv, optional test.tsv) or
parquet files named by split. Tokenized once, padded per batch.

Which columns hold the text and the label (``text_column``, ``label_column``) and what the classes are
(``labels``, ``num_classes``) come from the config and the data:
  - ``labels: null``: the labels found in the training split, sorted (numerically when they all look like
    integers); a list fixes the label set and the class order (its k-th label is class k).
  - ``num_classes: null``: as many as there are labels; a number is checked against them.
A row whose label is not in the label set fails naming its file and line. ``1``, ``1.0`` and `` 1 `` are one label.

Validation is the dev split. Test is a *labelled* test split when one is given; an unlabelled one (GLUE's
test: label column missing, or every label -1 or empty) is skipped with a message and the run tests on
validation, which results.json records."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from reglab.data.base import ClassificationDataModule, check_data_path, check_int, or_list
from reglab.data.sources import SPLIT_ALIASES, hub_reachable, split_of, train_eval_index, training_subset
from reglab.data.tokenizer import load_tokenizer
from reglab.errors import ConfigError, DataUnavailableError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".tsv", ".parquet")
NO_LABEL = ("-1", "")  # a split whose every label is one of these is unlabelled
TEXT_SPLITS = {"train": "train", "val": "validation", "test": "test"}


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


def label_name(value) -> str:
    """A label as the label set holds it: 1, 1.0, '1' and ' 1 ' are all '1'; names stay as written."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def sorted_labels(names) -> list[str]:
    """Numerically when every label looks like an integer ('2' before '10'), otherwise as text."""
    names = sorted(set(names))
    try:
        return sorted(names, key=int)
    except ValueError:
        return names


def configured_labels(labels) -> list[str] | None:
    """``data.labels`` as label names in class order (None: take them from the data), or a one-line error."""
    if labels is None:
        return None
    if isinstance(labels, (str, int, float)) or not labels:
        raise ConfigError(f"data.labels={labels!r}: allowed null (the labels of the training split) or a list "
                          "of at least two labels, in class order")
    names = [label_name(label) for label in labels]
    if len(set(names)) != len(names) or len(names) < 2 or "" in names:
        raise ConfigError(f"data.labels={labels!r}: must be at least two distinct, non-empty labels")
    return names


@dataclass
class TextFile:
    """The rows of one file (or hub split) as read: texts and label names ('' where it has no label column),
    and where they came from, for errors that name a file and line."""

    where: str
    first_line: int  # the line (or row number) of the first row
    texts: list
    labels: list[str]


def is_labelled(files: list[TextFile]) -> bool:
    return any(label not in NO_LABEL for file in files for label in file.labels)


class TextClassificationDataModule(ClassificationDataModule):
    input_kind = "tokens"

    def __init__(self, path: str | None = None, hub_name: str | None = None, hub_config: str | None = None,
                 text_column: str = "text", label_column: str = "label", labels: list | None = None,
                 num_classes: int | None = None, cache_dir: str = ".cache", tokenizer: str = "wordpiece",
                 vocab_size: int = 8000, lowercase: bool = True, max_length: int = 64, batch_size: int = 64,
                 eval_batch_size: int = 256, sort_by_length: bool = True, **shared):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, **shared)
        check_data_path(path)
        if path is None and not hub_name:
            raise ConfigError("data.path=None: required, a folder of train.tsv and dev.tsv or validation.tsv "
                              "(optional test.tsv), or parquet files named by split; or give data.hub_name")
        self.max_length, self.vocab_size = check_int("max_length", max_length), check_int("vocab_size", vocab_size)
        self.path = Path(path) if path is not None else None
        self.hub_name, self.hub_config, self.cache_dir = hub_name, hub_config, Path(cache_dir)
        self.text_column, self.label_column = str(text_column), str(label_column)
        self.labels = configured_labels(labels)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, minimum=2)
        if self.labels is not None and self.num_classes is not None and len(self.labels) != self.num_classes:
            raise ConfigError(f"data.num_classes={self.num_classes}: data.labels lists {len(self.labels)} labels "
                              f"{self.labels}")
        self.tokenizer_name, self.lowercase, self.sort_by_length = tokenizer, bool(lowercase), bool(sort_by_length)
        self.class_names: list[str] | None = None  # the label set in class order, once read

    @property
    def source(self) -> str:
        """The data's name in messages."""
        if self.path is not None:
            return f"data.path={str(self.path)!r}"
        return self.hub_name if self.hub_config is None else f"{self.hub_name}/{self.hub_config}"

    # -- reading ------------------------------------------------------------------------------------------------
    def read_file(self, path: Path) -> TextFile:
        """One TSV or parquet file. TSVs are read with quoting off: SST-2 sentences contain `"`."""
        from datasets import load_dataset

        # A throwaway Hugging Face cache: the texts are taken out at once, and a local file needs no cache (nor a
        # writable cache_dir) to be read.
        with tempfile.TemporaryDirectory(prefix="reglab-hf-") as hf_cache:
            try:
                if path.suffix == ".tsv":
                    # quoting=3 (QUOTE_NONE): otherwise a `"` silently merges rows
                    data = load_dataset("csv", data_files=str(path), delimiter="\t", quoting=3, split="train",
                                        keep_default_na=False, na_filter=False, cache_dir=hf_cache)
                    first_line = 2  # after the header
                else:
                    data = load_dataset("parquet", data_files=str(path), split="train", cache_dir=hf_cache)
                    first_line = 1
            except Exception as err:
                raise DataUnavailableError(f"{path}: cannot read: {err}") from None
            return self.text_file(data, str(path), first_line)

    def text_file(self, data, where: str, first_line: int) -> TextFile:
        if self.text_column not in data.column_names:
            raise DataUnavailableError(f"{where}: expected a {self.text_column!r} column (data.text_column), "
                                       f"found {data.column_names}")
        texts = data[self.text_column]
        if not texts:
            raise DataUnavailableError(f"{where}: split is empty")
        has_labels = self.label_column in data.column_names
        labels = [label_name(label) for label in data[self.label_column]] if has_labels else [""] * len(texts)
        return TextFile(where, first_line, texts, labels)

    def read_files(self) -> tuple[dict[str, list[TextFile]], str]:
        """split -> its files as read, and a fingerprint of the source for the tokenizer cache."""
        if self.path is not None:
            found: dict[str, list[Path]] = {}
            for path in sorted(self.path.rglob("*")):
                if path.suffix in TEXT_SUFFIXES and (split := split_of(path.name)) is not None:
                    found.setdefault(split, []).append(path)
            if "train" not in found or "validation" not in found:
                raise DataUnavailableError(f"{self.source}: need train and dev/validation files (.tsv or .parquet), "
                                           f"found {sorted(found) or 'none'}")
            stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in found["train"]]
            fingerprint = hashlib.sha1(json.dumps([stats, self.text_column]).encode()).hexdigest()[:16]
            return {split: [self.read_file(p) for p in paths] for split, paths in found.items()}, fingerprint
        if not hub_reachable():
            raise DataUnavailableError(
                f"{self.source}: the Hugging Face hub is unreachable. Give a local folder with data.path=DIR "
                f"(train.tsv and dev.tsv, header '{self.text_column}<TAB>{self.label_column}'), or parquet files "
                "named by split.")
        from datasets import load_dataset

        loaded = load_dataset(self.hub_name, self.hub_config, cache_dir=str(self.cache_dir / "hf"))
        files = {SPLIT_ALIASES.get(name, name): [self.text_file(data, f"{self.source} ({name})", 1)]
                 for name, data in loaded.items()}
        return files, f"hub-{self.source}-{self.text_column}"

    def label_set(self, train: list[TextFile]) -> list[str]:
        """The classes in order: ``data.labels``, or those of the training split; checked against num_classes."""
        names = self.labels or sorted_labels(label for file in train for label in file.labels if label)
        if self.num_classes is not None and len(names) != self.num_classes:
            raise ConfigError(f"data.num_classes={self.num_classes}: the training split has {len(names)} labels "
                              f"{names} (null: as many as the data has)")
        if len(names) < 2:
            raise DataUnavailableError(f"{train[0].where}: the training split has {len(names)} label(s) {names}; "
                                       "a classifier needs at least two")
        return names

    def labelled_rows(self, files: list[TextFile], classes: dict[str, int]) -> tuple[list[str], list[int]]:
        """Texts and class indices of a labelled split; a bad row fails naming its file and line."""
        allowed = or_list(classes)
        texts, labels = [], []
        for file in files:
            for i, (text, label) in enumerate(zip(file.texts, file.labels)):
                line = file.first_line + i
                if label not in classes:
                    raise DataUnavailableError(f"{file.where}:{line}: label {label!r} is not {allowed}")
                if text is None or not str(text).strip():
                    raise DataUnavailableError(f"{file.where}:{line}: empty {self.text_column}")
                texts.append(str(text))
                labels.append(classes[label])
        return texts, labels

    def read_text(self) -> tuple[dict[str, tuple[list[str], list[int] | None]], str]:
        """split -> (texts, class indices, or None for an unlabelled split), and the source's fingerprint.
        Fixes ``class_names``, the label set in class order."""
        files, fingerprint = self.read_files()
        for split in ("train", "validation"):
            if split not in files:
                raise DataUnavailableError(f"{self.source}: no {split} split (found {sorted(files)})")
            if not is_labelled(files[split]):
                raise DataUnavailableError(f"{files[split][0].where}: the {split} split has no labels (column "
                                           f"{self.label_column!r}, data.label_column, missing or all -1/empty)")
        self.class_names = self.label_set(files["train"])
        classes = {name: index for index, name in enumerate(self.class_names)}
        text = {}
        for split, split_files in files.items():
            if is_labelled(split_files):
                text[split] = self.labelled_rows(split_files, classes)
            else:
                text[split] = ([str(t) for file in split_files for t in file.texts], None)
        return text, fingerprint

    # -- tokens -------------------------------------------------------------------------------------------------
    def encode(self, tokenizer, texts: list[str], labels: list[int]) -> TokenBatchDataset:
        encoded = tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
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
            log.warning("%s: the test split has no labels (as GLUE's test): testing on validation", self.source)
            test = None
        self._test_split = "test" if test is not None else "validation"
        splits = {"train": self.encode(self.tokenizer, *text["train"]),
                  "validation": self.encode(self.tokenizer, *text["validation"])}
        splits["test"] = self.encode(self.tokenizer, *test) if test else splits["validation"]
        # The tokenizer above was fitted on the whole train split's text (no labels); the subset is of examples.
        self.keep_splits(splits)

    def keep_splits(self, splits: dict) -> None:
        """The encoded splits, with ``data.train_size``'s training subset and the fixed train-eval subset."""
        index = training_subset(splits["train"].labels, self.train_size, self.subset_seed)
        if index is not None:
            splits["train"] = splits["train"].subset(index)
        self.train_eval = splits["train"].subset(train_eval_index(len(splits["train"]), self.train_eval_size))
        self.splits = splits

    @property
    def model_kwargs(self) -> dict:
        self.setup()
        return {"vocab_size": len(self.tokenizer), "num_classes": len(self.class_names),
                "max_length": self.max_length, "pad_id": self.tokenizer.pad_token_id}

    # -- batches ------------------------------------------------------------------------------------------------
    def batch_dataset(self, name: str) -> TokenBatchDataset:
        return self.train_eval if name == "train_eval" else self.splits[TEXT_SPLITS[name]]

    def train_lengths(self) -> torch.Tensor | None:
        # Training batches of similar length (shuffled buckets): far less padding.
        return self.splits["train"].lengths if self.sort_by_length else None

    def eval_order(self, dataset: TokenBatchDataset) -> torch.Tensor:
        # Evaluation order does not matter: sorted by length, batches carry almost no padding.
        return torch.argsort(dataset.lengths, stable=True)
