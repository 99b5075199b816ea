"""Any "text + label" classification data: a local folder (``data.path``) of files in any layout
reglab.data.text_layouts reads (TSV/CSV with a header, label-first lines, fastText, JSON lines, parquet), a folder
saved by ``datasets``' ``save_to_disk``, or a hub data set (``data.hub_name``, ``hub_config``). Tokenized once,
padded per batch.

A file's split is a split name anywhere in its file name (sources.split_of); a folder holds one layout. Which
columns hold the text and the label (``text_column``, ``label_column``) and what the classes are (``labels``,
``num_classes``) come from the config and the data:
  - ``labels: null``: the labels found in the training data, sorted (numerically when they all look like
    integers); a list fixes the label set and the class order (its k-th label is class k).
  - ``num_classes: null``: as many as there are labels; a number is checked against them.
A row whose label is not in the label set, or that has none, fails naming its file and line. ``1``, ``1.0`` and
`` 1 `` are one label.

Splits (``split_text``): a labelled dev split is validation, else ``val_size`` training examples carved
class-stratified; data with no split names is cut into ``cv_folds`` stratified folds and fold ``fold`` is the
test split. Test is a *labelled* test split when one is given; an unlabelled one (GLUE's test: label column
missing, or every label -1 or empty) is skipped with a message and the run tests on validation, which
results.json records."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from reglab.data.base import ClassificationDataModule, check_classes_present, check_data_path, check_int, or_list
from reglab.data.sources import (hub_reachable, split_of, stratified_folds, stratified_subset, train_eval_index,
                                  training_subset)
from reglab.data.text_layouts import Columns, TextFile, TextLayout, label_name, layout_of
from reglab.data.tokenizer import load_tokenizer
from reglab.errors import ConfigError, DataUnavailableError

log = logging.getLogger(__name__)

NO_LABEL = ("-1", "")  # a split whose every label is one of these is unlabelled
TEXT_SPLITS = {"train": "train", "val": "validation", "test": "test"}
UNSPLIT = "(unsplit)"  # the pool of files whose names carry no split: cross-validation folds are cut from it
# Files that sit beside data and are never data.
NOT_DATA_SUFFIXES = (".md", ".rst", ".py", ".sh", ".yaml", ".yml", ".pdf", ".html", ".zip", ".gz", ".tgz", ".tar",
                     ".bz2", ".xz", ".arrow", ".pkl", ".pt", ".ckpt", ".lock", ".log")
NOT_DATA_NAMES = ("readme", "license", "licence", "changelog", "citation", "notice", "makefile")
SAVED_MARKERS = ("dataset_dict.json", "state.json")  # a folder written by datasets' save_to_disk
SAVED_FILES = (*SAVED_MARKERS, "dataset_info.json")


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


def pick(texts: list[str], labels: list[int], index: list[int]) -> tuple[list[str], list[int]]:
    return [texts[i] for i in index], [labels[i] for i in index]


def check_val_size(value) -> int | float:
    """``data.val_size``: a count >= 1 or a fraction in (0, 1); checked against the split once it is read."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < value < 1 or (value >= 1 and float(value).is_integer())):
        raise ConfigError(f"data.val_size={value!r}: allowed a count >= 1 or a fraction in (0, 1)")
    return value


def check_folds(cv_folds, fold) -> tuple[int | None, int | None]:
    """``data.cv_folds`` (null, or k >= 2) and ``data.fold`` (0 .. k-1, only with cv_folds)."""
    if cv_folds is None:
        if fold is not None:
            raise ConfigError(f"data.fold={fold!r}: needs data.cv_folds (k-fold cross-validation), e.g. "
                              "data.cv_folds=10")
        return None, None
    folds = check_int("cv_folds", cv_folds, minimum=2)
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ConfigError(f"data.fold={fold!r}: must be an integer in 0..{folds - 1} (data.cv_folds={folds})")
    return folds, fold


def is_labelled(files: list[TextFile]) -> bool:
    return any(label not in NO_LABEL for file in files for label in file.labels)


class TextClassificationDataModule(ClassificationDataModule):
    input_kind = "tokens"

    def __init__(self, path: str | None = None, hub_name: str | None = None, hub_config: str | None = None,
                 text_column: str = "text", label_column: str = "label", labels: list | None = None,
                 num_classes: int | None = None, cache_dir: str = ".cache", tokenizer: str = "wordpiece",
                 vocab_size: int = 8000, lowercase: bool = True, max_length: int = 64, batch_size: int = 64,
                 eval_batch_size: int = 256, sort_by_length: bool = True, val_size: int | float = 0.1,
                 val_seed: int = 0, carve_val: bool = False, cv_folds: int | None = None, fold: int | None = None,
                 **shared):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, **shared)
        check_data_path(path)
        if path is None and not hub_name:
            raise ConfigError("data.path=None: required, a folder of text files named by split (train, dev or "
                              "validation, test; any layout: TSV/CSV with a header, 'label text' lines, fastText, "
                              "JSON lines, parquet), or one unsplit file with data.cv_folds; or give data.hub_name")
        self.max_length, self.vocab_size = check_int("max_length", max_length), check_int("vocab_size", vocab_size)
        self.path = Path(path) if path is not None else None
        self.hub_name, self.hub_config, self.cache_dir = hub_name, hub_config, Path(cache_dir)
        self.columns = Columns(str(text_column), str(label_column))
        self.text_column, self.label_column = self.columns.text, self.columns.label
        self.labels = configured_labels(labels)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes, minimum=2)
        if self.labels is not None and self.num_classes is not None and len(self.labels) != self.num_classes:
            raise ConfigError(f"data.num_classes={self.num_classes}: data.labels lists {len(self.labels)} labels "
                              f"{self.labels}")
        self.tokenizer_name, self.lowercase, self.sort_by_length = tokenizer, bool(lowercase), bool(sort_by_length)
        self.val_size, self.val_seed = check_val_size(val_size), check_int("val_seed", val_seed, minimum=0)
        if not isinstance(carve_val, bool):
            raise ConfigError(f"data.carve_val={carve_val!r}: must be true or false")
        self.carve_val = carve_val
        self.cv_folds, self.fold = check_folds(cv_folds, fold)
        self.class_names: list[str] | None = None  # the label set in class order, once read

    @property
    def source(self) -> str:
        """The data's name in messages."""
        if self.path is not None:
            return f"data.path={str(self.path)!r}"
        return self.hub_name if self.hub_config is None else f"{self.hub_name}/{self.hub_config}"

    # -- reading ------------------------------------------------------------------------------------------------
    def read_file(self, path: Path, layout: TextLayout) -> TextFile:
        """One file in the layout data_files found for it (reglab.data.text_layouts)."""
        try:
            file = layout.read(path, self.columns)
        except OSError as err:
            raise DataUnavailableError(f"{path}: cannot read: {err.strerror or err}") from None
        if not file.texts:
            raise DataUnavailableError(f"{path}: holds no examples")
        return file

    def text_file(self, data, where: str) -> TextFile:
        """A hub (or saved) split as read."""
        text_column = self.columns.text_in(data.column_names)
        if text_column is None:
            raise DataUnavailableError(f"{where}: expected a {self.columns.missing_text()}, found {data.column_names}")
        texts = data[text_column]
        if not texts:
            raise DataUnavailableError(f"{where}: split is empty")
        has_labels = self.label_column in data.column_names
        labels = [label_name(label) for label in data[self.label_column]] if has_labels else [""] * len(texts)
        return TextFile(where, texts, labels, list(range(1, len(texts) + 1)))

    def data_files(self) -> dict[str, list[tuple[Path, TextLayout]]]:
        """split -> its files under data.path, each with its layout. A file's split is a split name anywhere in its name
        (``qc.train.all``, ``reviews-test.jsonl``), else in the name of a folder it sits in (``train/0000.parquet``).
        When some files name a split, the others are extras that ship beside the data (GLUE's ``original/``) and are
        skipped with a log line; when none does, they all form one unsplit pool. One folder holds one layout."""
        candidates: dict[Path, str | None] = {}
        for path in sorted(self.path.rglob("*")):
            relative = path.relative_to(self.path)
            if (not path.is_file() or any(part.startswith(".") for part in relative.parts)
                    or path.suffix.lower() in NOT_DATA_SUFFIXES or path.name in SAVED_FILES
                    or path.name.lower().split(".")[0] in NOT_DATA_NAMES):
                continue
            candidates[path] = split_of(path.name) or next(
                (split for part in reversed(relative.parts[:-1]) if (split := split_of(part))), None)
        if any(split is not None for split in candidates.values()):
            skipped = [path for path, split in candidates.items() if split is None]
            if skipped:
                log.warning("%s: skipped %d file(s) with no split name (train, dev, test), e.g. %s", self.source,
                            len(skipped), skipped[0].relative_to(self.path))
            candidates = {path: split for path, split in candidates.items() if split is not None}
        found: dict[str, list[tuple[Path, TextLayout]]] = {}
        layouts: dict[str, Path] = {}
        for path, split in candidates.items():
            layout = layout_of(path, self.columns)
            layouts.setdefault(layout.name, path)
            if len(layouts) > 1:
                (first, first_path), (other, other_path) = list(layouts.items())[:2]
                raise DataUnavailableError(f"{other_path}: layout {other}, but {first_path} is {first}; one folder "
                                           "holds one layout (move the other files out)")
            found.setdefault(split or UNSPLIT, []).append((path, layout))
        if not found:
            raise DataUnavailableError(f"{self.source}: no data files (any of: TSV/CSV with a header, "
                                       "'label text' lines, fastText, JSON lines, parquet)")
        return found

    def read_files(self) -> tuple[dict[str, list[TextFile]], str]:
        """split -> its files as read, and a fingerprint of the source for the tokenizer cache."""
        if self.path is not None and any((self.path / marker).is_file() for marker in SAVED_MARKERS):
            return self.read_saved(self.path)
        if self.path is not None:
            found = self.data_files()
            stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for files in found.values() for p, _ in files]
            fingerprint = hashlib.sha1(json.dumps([stats, self.text_column]).encode()).hexdigest()[:16]
            return {split: [self.read_file(p, layout) for p, layout in files] for split, files in found.items()}, \
                fingerprint
        if Path(self.hub_name).is_dir():
            return self.read_saved(Path(self.hub_name))
        if not hub_reachable():
            raise DataUnavailableError(
                f"{self.source}: the Hugging Face hub is unreachable. Give a local folder with data.path=DIR "
                "(files named by split, e.g. train.tsv and dev.tsv with a header line), or a data set saved with "
                "datasets' save_to_disk (data.path=DIR)")
        from datasets import load_dataset

        loaded = load_dataset(self.hub_name, self.hub_config, cache_dir=str(self.cache_dir / "hf"))
        return self.hub_splits(loaded), f"hub-{self.source}-{self.text_column}"

    def hub_splits(self, loaded) -> dict[str, list[TextFile]]:
        splits: dict[str, list[TextFile]] = {}
        for name, data in loaded.items():  # 'Train', 'validation_matched', 'test-2': by the split name in them
            splits.setdefault(split_of(name) or name, []).append(self.text_file(data, f"{self.source} ({name})"))
        return splits

    def read_saved(self, folder: Path) -> tuple[dict[str, list[TextFile]], str]:
        """A DatasetDict written by ``datasets``' ``save_to_disk`` (what a hub data set becomes offline)."""
        from datasets import DatasetDict, load_from_disk

        try:
            loaded = load_from_disk(str(folder))
        except Exception as err:
            raise DataUnavailableError(f"{folder}: cannot load as a saved data set: {err}") from None
        if not isinstance(loaded, DatasetDict):
            loaded = DatasetDict({UNSPLIT: loaded})
        state = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
        fingerprint = hashlib.sha1(json.dumps([state, self.text_column]).encode()).hexdigest()[:16]
        return self.hub_splits(loaded), fingerprint

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
            for line, text, label in zip(file.lines, file.texts, file.labels):
                if label == "":
                    raise DataUnavailableError(f"{file.where}:{line}: no label ({self.label_column!r}, "
                                               "data.label_column)")
                if label not in classes:
                    raise DataUnavailableError(f"{file.where}:{line}: label {label!r} is not {allowed}")
                if text is None or not str(text).strip():
                    raise DataUnavailableError(f"{file.where}:{line}: empty {self.text_column}")
                texts.append(str(text))
                labels.append(classes[label])
        return texts, labels

    def read_text(self) -> tuple[dict[str, tuple[list[str], list[int] | None]], str]:
        """split -> (texts, class indices, or None for an unlabelled split), and the source's fingerprint.
        Fixes ``class_names``, the label set in class order, from the training split (or the unsplit pool)."""
        files, fingerprint = self.read_files()
        train = "train" if "train" in files else UNSPLIT
        if train not in files:
            raise DataUnavailableError(f"{self.source}: no train split (found {sorted(files)}): name the training "
                                       "file by its split (train.tsv, qc.train.all, ...)")
        if not is_labelled(files[train]):
            raise DataUnavailableError(f"{files[train][0].where}: the training data has no labels (column "
                                       f"{self.label_column!r}, data.label_column, missing or all -1/empty)")
        self.class_names = self.label_set(files[train])
        classes = {name: index for index, name in enumerate(self.class_names)}
        text = {}
        for split, split_files in files.items():
            if is_labelled(split_files):
                text[split] = self.labelled_rows(split_files, classes)
            else:
                text[split] = ([str(t) for file in split_files for t in file.texts], None)
        check_classes_present(text[train][1], self.class_names, files[train][0].where)
        return text, fingerprint

    def split_text(self) -> tuple[dict[str, tuple[list[str], list[int]]], str]:
        """train, validation and test as (texts, class indices), and the source's fingerprint.

        - Data without splits (files whose names carry none): fold ``data.fold`` of ``data.cv_folds``
          class-stratified folds is the test split, the other folds train (``data.val_seed`` fixes the folds).
        - No labelled validation split, or ``data.carve_val``: validation is ``data.val_size`` training examples,
          class-stratified and fixed by ``data.val_seed``; with ``carve_val``, the source's validation split then
          serves as the test split when there is no labelled test split.
        - No labelled test split: the run tests on validation, and says so (``test_split``)."""
        text, fingerprint = self.read_text()
        test = text.get("test")
        if test is not None and test[1] is None:
            log.warning("%s: the test split has no labels (as GLUE's test): testing on validation", self.source)
            test = None
        val = text.get("validation") if (text.get("validation") or (None, None))[1] is not None else None
        self._test_split = "test"
        if UNSPLIT in text:
            if self.cv_folds is None:
                raise ConfigError(f"data.cv_folds=None: {self.source} has no split names in its file names (train, "
                                  "dev, test), so it needs k-fold cross-validation: data.cv_folds=10 data.fold=0 "
                                  "(sweep data.fold=0,1,...,9 as seeds are swept)")
            texts, labels = text[UNSPLIT]
            if self.cv_folds > len(labels):
                raise ConfigError(f"data.cv_folds={self.cv_folds}: more folds than the {len(labels)} examples of "
                                  f"{self.source}")
            folds = stratified_folds(labels, self.cv_folds, self.val_seed)
            test = pick(texts, labels, (folds == self.fold).nonzero().flatten().tolist())
            train = pick(texts, labels, (folds != self.fold).nonzero().flatten().tolist())
            self._test_split = f"fold {self.fold} of {self.cv_folds} (cross-validation)"
        else:
            if self.cv_folds is not None:
                raise ConfigError(f"data.cv_folds={self.cv_folds}: {self.source} already has splits "
                                  f"({', '.join(sorted(text))}); cross-validation is for data shipped unsplit "
                                  "(set data.cv_folds=null)")
            train = text["train"]
        if val is None or self.carve_val or UNSPLIT in text:
            if test is None and val is not None:
                test, self._test_split = val, "validation (held out)"
            train, val = self.carve(*train)
        if test is None:
            test, self._test_split = val, "validation"
        return {"train": train, "validation": val, "test": test}, fingerprint

    def carve(self, texts: list[str], labels: list[int]) -> tuple[tuple, tuple]:
        """(train, validation): ``data.val_size`` examples of train, class-stratified, fixed by ``data.val_seed``."""
        size = max(1, round(self.val_size * len(labels))) if self.val_size < 1 else int(self.val_size)
        if size >= len(labels):
            raise ConfigError(f"data.val_size={self.val_size!r}: must leave training examples; the train split "
                              f"has {len(labels)}")
        val_index = stratified_subset(labels, size, self.val_seed)
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[val_index] = False
        return pick(texts, labels, keep.nonzero().flatten().tolist()), pick(texts, labels, val_index.tolist())

    # -- tokens -------------------------------------------------------------------------------------------------
    def encode(self, tokenizer, texts: list[str], labels: list[int]) -> TokenBatchDataset:
        encoded = tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        # A text with no token left (only symbols Kim's clean-up removes: '---', an emoji) reads as one [UNK].
        encoded = [ids or [tokenizer.unk_token_id] for ids in encoded]
        lengths = torch.tensor([len(ids) for ids in encoded])
        ids = torch.full((len(encoded), self.max_length), tokenizer.pad_token_id, dtype=torch.long)
        for row, token_ids in enumerate(encoded):
            ids[row, :len(token_ids)] = torch.tensor(token_ids)
        return TokenBatchDataset(ids, lengths, torch.tensor(labels, dtype=torch.long))

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        text, fingerprint = self.split_text()
        self.tokenizer = load_tokenizer(self.tokenizer_name, text["train"][0], self.cache_dir, fingerprint,
                                        self.vocab_size, self.lowercase, self.split_key())
        splits = {"train": self.encode(self.tokenizer, *text["train"]),
                  "validation": self.encode(self.tokenizer, *text["validation"])}
        splits["test"] = (splits["validation"] if text["test"] is text["validation"] else
                          self.encode(self.tokenizer, *text["test"]))
        # The tokenizer above was fitted on the training examples' text (no labels); the subset is of examples.
        self.keep_splits(splits)

    def split_key(self) -> str:
        """What decides which examples train (the vocabulary is fitted on them): part of every cache key."""
        return json.dumps([self.label_column, self.labels, self.carve_val, self.val_size, self.val_seed,
                           self.cv_folds, self.fold])

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
