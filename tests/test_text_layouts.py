"""Text data as it ships: every layout read without conversion (TSV/CSV with a header, 'label text' lines,
fastText, JSON lines, parquet, a saved hub data set), split names anywhere in a file name, validation carved from
train, k-fold cross-validation for unsplit data, and one-line errors naming the file and line for bad files."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import data_settings
from reglab.data.sources import split_of
from reglab.data.text import TextClassificationDataModule, stratified_folds
from reglab.errors import ConfigError, DataUnavailableError
from test_text_data import topic_rows

CLASSES = ["World", "Sports", "Business", "Sci/Tech"]


def rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Topic headlines with integer labels 0..3 (the label-first layout needs integers); no `"` so every layout
    holds the same texts."""
    return [(text.replace('"', "").replace("  ", " "), CLASSES.index(label)) for text, label in topic_rows(n, seed)]


def write(layout: str, path, examples) -> None:
    if layout == "tsv":
        lines = ["text\tlabel"] + [f"{t}\t{y}" for t, y in examples]
    elif layout == "csv":
        lines = ["label,text"] + [f'{y},"{t}, indeed"' for t, y in examples]  # a quoted comma inside the text
    elif layout == "label-first":
        lines = [f"{y} {t}" for t, y in examples]
    elif layout == "label-first-tab":
        lines = [f"{y}\t{t}" for t, y in examples]
    elif layout == "fasttext":
        lines = [f"__label__{y} {t}" for t, y in examples]
    elif layout == "jsonl":
        lines = [json.dumps({"text": t, "label": y}) for t, y in examples]
    elif layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": [t for t, _ in examples], "label": [y for _, y in examples]}), path)
        return
    else:
        raise ValueError(layout)
    path.write_text("\n".join(lines) + "\n")


def text_data(path, tmp_path, **kwargs) -> TextClassificationDataModule:
    """What data=text builds (Kim's word tokens), small, with ``kwargs`` on top."""
    settings = data_settings("text")
    return TextClassificationDataModule(**(settings | {"path": None if path is None else str(path),
                                                       "cache_dir": str(tmp_path / "cache"), "batch_size": 8}
                                           | kwargs))


NAMES = {"tsv": ("train.tsv", "dev.tsv"), "csv": ("reviews-train.csv", "reviews-dev.csv"),
         "label-first": ("qc.train.all", "qc.dev.all"), "label-first-tab": ("stsa.binary.train", "stsa.binary.dev"),
         "fasttext": ("train.txt", "valid.txt"), "jsonl": ("reviews-train.jsonl", "reviews-dev.jsonl"),
         "parquet": ("train-00000-of-00001.parquet", "validation-00000-of-00001.parquet")}


@pytest.mark.parametrize("layout", list(NAMES))
def test_every_layout_is_read_as_shipped(layout, tmp_path):
    root = tmp_path / layout
    root.mkdir()
    train, dev = rows(40, 0), rows(12, 1)
    write(layout, root / NAMES[layout][0], train)
    write(layout, root / NAMES[layout][1], dev)
    (root / "README.md").write_text("not data\n")
    data = text_data(root, tmp_path)
    data.setup()
    assert data.class_names == ["0", "1", "2", "3"]
    assert data.split_sizes == {"train": 40, "val": 12, "test": 12} and data.test_split == "validation"
    first = data.tokenizer.decode(data.splits["train"].ids[0][:data.splits["train"].lengths[0]])
    expected = train[0][0].lower() + (" , indeed" if layout == "csv" else "")
    assert first.split() == expected.split()
    assert data.splits["train"].labels.tolist() == [y for _, y in train]


def test_a_data_set_saved_by_the_datasets_library_reads_like_a_hub_data_set(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"title": Value("string"), "topic": ClassLabel(names=CLASSES)})
    saved = DatasetDict({name: Dataset.from_dict({"title": [t for t, _ in part], "topic": [y for _, y in part]},
                                                 features=features)
                         for name, part in (("train", rows(40, 0)), ("test", rows(12, 2)))})
    saved.save_to_disk(str(tmp_path / "saved"))
    for path, hub_name in ((tmp_path / "saved", None), (None, str(tmp_path / "saved"))):
        data = text_data(path, tmp_path, hub_name=hub_name, text_column="title", label_column="topic", val_size=8)
        data.setup()
        # no validation split: carved from train; the labelled test split is the test
        assert data.split_sizes == {"train": 32, "val": 8, "test": 12} and data.test_split == "test"


@pytest.mark.parametrize("name,split", [("qc.train.all", "train"), ("train.txt", "train"),
                                        ("reviews-test.jsonl", "test"), ("stsa.binary.dev", "validation"),
                                        ("TREC.test.all", "test"), ("rt-polarity.all", None),
                                        ("contest.tsv", None), ("train-00000-of-00002.parquet", "train")])
def test_split_names_are_found_anywhere_in_a_file_name(name, split):
    assert split_of(name) == split


def test_a_latin1_file_is_read(tmp_path):
    root = tmp_path / "latin1"
    root.mkdir()
    (root / "train.txt").write_bytes("".join(f"{i % 2} caf\xe9 film number {i}\n" for i in range(30))
                                     .encode("latin-1"))
    data = text_data(root, tmp_path, val_size=6)
    data.setup()
    assert "café" in data.tokenizer.get_vocab()


BAD_FILES = [
    ("train.dat", "hello there\nno labels here\n", r"train\.dat:1: unknown text layout \(first line 'hello there'\)"),
    ("train.all", "0 a good film\n1 a bad film\n0 fine\n1 dull\n1 no good\nthis line has no label\n",
     r"train\.all:6: no label: each line is '<integer label> <text>'"),
    ("train.txt", "__label__1 a good film\n__label__0 a bad film\n" * 3 + "just text\n", r"train\.txt:7: no label"),
    ("train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n{"label": 1}\n',
     r"train\.jsonl:3: no 'text' key"),
    ("train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n{"text": "meh"}\n',
     r"train\.jsonl:3: no label \('label', data.label_column\)"),
    ("train.tsv", "text\tlabel\ngood\t1\nbad\t0\nmeh\n", r"train\.tsv:4: 1 fields, but the header has 2"),
    ("train.tsv", "sentence\tlabel\ngood\t1\n", r"train\.tsv:1: unknown text layout"),
    ("train.csv", "", r"train\.csv: the file is empty"),
]


@pytest.mark.parametrize("name,content,message", BAD_FILES)
def test_a_bad_file_is_one_line_naming_the_file_and_line(name, content, message, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / name).write_text(content)
    dev_layout = {".tsv": "tsv", ".jsonl": "jsonl", ".txt": "fasttext"}.get(root.joinpath(name).suffix, "label-first")
    write(dev_layout, root / f"dev.{dev_layout}", [(t, y % 2) for t, y in rows(4, 1)])
    with pytest.raises(DataUnavailableError, match=message) as raised:
        text_data(root, tmp_path).setup()
    assert "\n" not in str(raised.value)


def test_mixed_layouts_and_stray_files_are_refused_naming_them(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write("tsv", mixed / "train.tsv", rows(20, 0))
    write("jsonl", mixed / "dev.jsonl", rows(5, 1))
    with pytest.raises(DataUnavailableError, match=r"train\.tsv: layout tsv, but .*dev\.jsonl is jsonl; one folder "
                                                   "holds one layout"):
        text_data(mixed, tmp_path).setup()
    stray = tmp_path / "stray"
    stray.mkdir()
    write("tsv", stray / "train.tsv", rows(20, 0))
    write("tsv", stray / "extra.tsv", rows(5, 1))
    with pytest.raises(DataUnavailableError, match=r"extra\.tsv: no split name .* in its file name"):
        text_data(stray, tmp_path).setup()


def test_validation_is_carved_from_train_class_stratified_and_fixed_by_val_seed(tmp_path):
    root = tmp_path / "no_dev"
    root.mkdir()
    write("label-first", root / "TREC.train.all", rows(200, 0))
    write("label-first", root / "TREC.test.all", rows(40, 1))
    data = text_data(root, tmp_path, val_size=0.1)
    data.setup()
    assert data.split_sizes == {"train": 180, "val": 20, "test": 40} and data.test_split == "test"
    assert torch.bincount(data.splits["validation"].labels).tolist() == [5, 5, 5, 5]
    val_ids = {tuple(row.tolist()) for row in data.splits["validation"].ids}
    train_ids = {tuple(row.tolist()) for row in data.splits["train"].ids}
    assert len(val_ids & train_ids) <= 2  # disjoint examples (two headlines may repeat by chance)
    same = text_data(root, tmp_path, val_size=0.1, seed=7)  # the run's seed never moves the carve
    same.setup()
    assert torch.equal(same.splits["validation"].ids, data.splits["validation"].ids)
    other = text_data(root, tmp_path, val_size=0.1, val_seed=1)
    other.setup()
    assert not torch.equal(other.splits["validation"].ids, data.splits["validation"].ids)


def test_unsplit_data_needs_folds_and_the_folds_partition_it(tmp_path):
    root = tmp_path / "unsplit"
    root.mkdir()
    examples = rows(100, 0)
    write("label-first", root / "rt-polarity.all", examples)
    with pytest.raises(ConfigError, match=r"data.cv_folds=None: .* no split names .* data.cv_folds=10 data.fold=0"):
        text_data(root, tmp_path).setup()
    tested = []
    for fold in range(5):
        data = text_data(root, tmp_path, cv_folds=5, fold=fold, val_size=8)
        data.setup()
        assert data.split_sizes == {"train": 72, "val": 8, "test": 20}
        assert data.test_split == f"fold {fold} of 5 (cross-validation)"
        assert torch.bincount(data.splits["test"].labels).tolist() == [5, 5, 5, 5]
        tested.append(data.splits["test"].labels)
    folds = stratified_folds([y for _, y in examples], 5, 0)
    assert torch.bincount(folds).tolist() == [20] * 5  # every example is tested in exactly one fold
    with pytest.raises(ConfigError, match=r"data.fold=5: must be an integer in 0..4"):
        text_data(root, tmp_path, cv_folds=5, fold=5)
    with pytest.raises(ConfigError, match=r"data.fold=2: needs data.cv_folds"):
        text_data(root, tmp_path, fold=2)
    split = tmp_path / "split"
    split.mkdir()
    write("tsv", split / "train.tsv", rows(20, 0))
    with pytest.raises(ConfigError, match=r"data.cv_folds=5: .* already has splits \(train\)"):
        text_data(split, tmp_path, cv_folds=5, fold=0).setup()


def test_kims_word_tokens_split_off_contractions_and_punctuation(tmp_path):
    root = tmp_path / "words"
    root.mkdir()
    write("tsv", root / "train.tsv", [("I don't like it, (really)! It's Joe's film -- ok?", 1),
                                      ("we've seen better", 0)] * 5)
    data = text_data(root, tmp_path, val_size=2)
    data.setup()
    tokens = data.tokenizer.tokenize("I don't like it, (really)! It's Joe's film -- ok?")
    assert tokens == ["i", "do", "n't", "like", "it", ",", "(", "really", ")", "!", "it", "'s", "joe", "'s", "film",
                      "ok", "?"]
    assert data.tokenizer("unseenword film")["input_ids"] == [data.tokenizer.unk_token_id,
                                                               data.tokenizer.convert_tokens_to_ids("film")]
