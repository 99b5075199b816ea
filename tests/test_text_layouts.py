"""Text data as it ships: every layout read without conversion (TSV/CSV with a header, 'label text' lines,
fastText, JSON lines, parquet, a saved hub data set), split names anywhere in a file name, validation carved from
train, k-fold cross-validation for unsplit data, and one-line errors naming the file and line for bad files."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import data_settings
from reglab.data.sources import split_of, stratified_folds
from reglab.data.text import TextClassificationDataModule
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
    bom = tmp_path / "bom"  # a byte-order mark before the header, as spreadsheet exports write, with CRLF lines
    bom.mkdir()
    (bom / "train.tsv").write_bytes(("\ufefftext\tlabel\r\n" + "".join(f"film {i}\t{i % 2}\r\n" for i in range(30)))
                                    .encode("utf-8"))
    data = text_data(bom, tmp_path, val_size=6)
    data.setup()
    assert data.split_sizes["train"] == 24 and data.class_names == ["0", "1"]


BAD_FILES = [
    ("train.dat", "hello there\nno labels here\n", r"train\.dat:1: unknown text layout \(first line 'hello there'\)"),
    ("train.all", "0 a good film\n1 a bad film\n0 fine\n1 dull\n1 no good\nthis line has no label\n",
     r"train\.all:6: no label: each line is '<integer label> <text>'"),
    ("train.txt", "__label__1 a good film\n__label__0 a bad film\n" * 3 + "just text\n", r"train\.txt:7: no label"),
    ("train.txt", "__label__1 a good film\n__label__0 a bad film\n" * 3 + "__label__1\n", r"train\.txt:7: no text"),
    ("train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n{"label": 1}\n',
     r"train\.jsonl:3: no 'text' key"),
    ("train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n{"text": "meh"}\n',
     r"train\.jsonl:3: no label \('label', data.label_column\)"),
    ("train.tsv", "text\tlabel\ngood\t1\nbad\t0\nmeh\n", r"train\.tsv:4: 1 fields, but the header has 2"),
    ("train.tsv", "phrase\tlabel\ngood\t1\n", r"train\.tsv:1: expected a 'text' column \(data.text_column\) or "
                                               r"one of sentence, review, .* in the header line, found \['phrase', "
                                               r"'label'\]"),
    ("train.csv", "", r"train\.csv: the file is empty"),
]


def test_a_text_field_under_a_usual_name_is_read_without_naming_it(tmp_path):
    """GLUE's SST-2 calls its text `sentence`, review data `review`: with data.text_column at its default they
    are read as shipped (the README's `experiment=kim_cnn data.path=DIR`); a name set on purpose is kept to."""
    root, reviews = tmp_path / "glue", tmp_path / "reviews"
    root.mkdir(), reviews.mkdir()
    for name, seed, n in (("train", 0, 30), ("dev", 1, 6)):
        (root / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows(n, seed)))
        (reviews / f"{name}.jsonl").write_text("".join(json.dumps({"review": t, "label": y}) + "\n"
                                                       for t, y in rows(n, seed)))
    for folder in (root, reviews):
        dm = text_data(folder, tmp_path)
        dm.setup()
        assert dm.split_sizes["train"] == 30 and dm.split_sizes["val"] == 6
    with pytest.raises(DataUnavailableError, match=r"expected a 'title' column \(data.text_column\) in the header"):
        text_data(root, tmp_path, text_column="title").setup()


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


def test_mixed_layouts_are_refused_and_extras_beside_split_files_are_skipped(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write("tsv", mixed / "train.tsv", rows(20, 0))
    write("jsonl", mixed / "dev.jsonl", rows(5, 1))
    with pytest.raises(DataUnavailableError, match=r"train\.tsv: layout tsv, but .*dev\.jsonl is jsonl; one folder "
                                                   "holds one layout"):
        text_data(mixed, tmp_path).setup()
    glue = tmp_path / "SST-2"  # as GLUE's zip ships it: original/ holds the raw treebank files beside the splits
    (glue / "original").mkdir(parents=True)
    write("tsv", glue / "train.tsv", rows(20, 0))
    write("tsv", glue / "dev.tsv", rows(8, 1))
    (glue / "original" / "SOStr.txt").write_text("a|b|c\n")
    (glue / "original" / "datasetSentences.txt").write_text("sentence_index\ttext\n1\ta film\n")
    data = text_data(glue, tmp_path)
    data.setup()
    assert data.split_sizes == {"train": 20, "val": 8, "test": 8}


def test_split_names_in_folder_names_and_odd_hub_split_names(tmp_path):
    from datasets import Dataset, DatasetDict

    folders = tmp_path / "folders"  # the hub's parquet export: default/train/0000.parquet
    for split, seed in (("train", 0), ("test", 1)):
        (folders / "default" / split).mkdir(parents=True)
        write("parquet", folders / "default" / split / "0000.parquet", rows(20, seed))
    data = text_data(folders, tmp_path, val_size=4)
    data.setup()
    assert data.split_sizes == {"train": 16, "val": 4, "test": 20} and data.test_split == "test"
    saved = DatasetDict({name: Dataset.from_dict({"text": [t for t, _ in part], "label": [y for _, y in part]})
                         for name, part in (("Train", rows(20, 0)), ("validation_matched", rows(6, 1)))})
    saved.save_to_disk(str(tmp_path / "saved"))
    data = text_data(tmp_path / "saved", tmp_path)
    data.setup()
    assert data.split_sizes == {"train": 20, "val": 6, "test": 6}
    single = tmp_path / "single"  # one saved Dataset, no splits: cross-validation
    Dataset.from_dict({"text": [t for t, _ in rows(20, 0)], "label": [y for _, y in rows(20, 0)]}).save_to_disk(
        str(single))
    data = text_data(single, tmp_path, cv_folds=4, fold=1, val_size=3)
    data.setup()
    assert data.split_sizes == {"train": 12, "val": 3, "test": 5}


def test_json_lines_named_json_and_texts_with_no_word_left(tmp_path):
    root = tmp_path / "json"
    root.mkdir()
    write("jsonl", root / "train.json", rows(20, 0) + [("--- ***", 1)])
    write("jsonl", root / "dev.json", rows(6, 1))
    data = text_data(root, tmp_path)
    data.setup()
    assert data.split_sizes["train"] == 21
    symbols_only = data.splits["train"].lengths[-1]
    assert symbols_only == 1 and data.splits["train"].ids[-1, 0] == data.tokenizer.unk_token_id


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
    with pytest.raises(ConfigError, match=r"data.cv_folds=101: more folds than the 100 examples"):
        text_data(root, tmp_path, cv_folds=101, fold=0).setup()
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
    # most frequent first, ties alphabetical: the same ids on every machine, whatever the hash seed
    vocabulary = sorted(data.tokenizer.get_vocab().items(), key=lambda item: item[1])
    assert [token for token, _ in vocabulary[:5]] == ["[PAD]", "[UNK]", "'s", "it", "!"]


# -- Kim's CNN -------------------------------------------------------------------------------------------------------
def small_cnn(vocab_size: int = 50, num_classes: int = 3):
    from reglab.models.text_cnn import TextCNN

    return TextCNN(vocab_size, num_classes, max_length=32, embed_dim=8, windows=[3, 4, 5], feature_maps=4)


def test_text_cnn_output_does_not_depend_on_the_padding_its_batch_carries():
    torch.manual_seed(0)
    model = small_cnn().eval()
    short = torch.tensor([[5, 6]])  # shorter than every window
    alone = model(short, torch.ones_like(short))
    padded = torch.tensor([[5, 6, 0, 0, 0, 0, 0, 0], [7, 8, 9, 10, 11, 12, 13, 14]])
    mask = padded != 0
    assert torch.allclose(model(padded, mask)[0], alone[0], atol=1e-6)


def test_text_cnn_under_kims_regularizers(make_config):
    from reglab.regularizers import build_regularizers

    cfg = make_config("data=text", "reg=dropout_maxnorm", fast=False)
    assert cfg.model._target_.endswith("TextCNN") and cfg.data.tokenizer == "words"
    model = small_cnn()
    regularizers = build_regularizers(cfg.reg)
    for regularizer in regularizers:
        regularizer.configure(model)
    assert model.dropout_sites() == {"penultimate": [model.penultimate_drop]} and model.penultimate_drop.p == 0.5
    maxnorm = next(r for r in regularizers if r.name == "maxnorm")
    assert maxnorm.param_names == ["head.weight"] and maxnorm.max_norm == 3.0
    with torch.no_grad():
        model.head.weight.mul_(100)
    maxnorm.after_step(model, lr=1.0)
    assert model.head.weight.norm(dim=1).max() <= 3.0 + 1e-5  # each class's weight vector, as Kim constrains it
    assert model.features["convs"][0].weight.norm() > 0  # the trunk is left alone


# -- underfitting ----------------------------------------------------------------------------------------------------
def test_underfitting_is_named_by_train_accuracy_or_a_still_falling_loss():
    from reglab.fit import underfit_reason

    flat = [{"train/eval_loss": 0.30}, {"train/eval_loss": 0.299}]
    assert underfit_reason({"train/acc": 0.70}, flat) == "train accuracy 70.0% (< 90%)"
    assert underfit_reason({"train/acc": 0.95}, flat) is None
    falling = [{"train/eval_loss": 0.5}, {"train/eval_loss": 0.4}]
    assert underfit_reason({"train/acc": 0.93}, falling) == "training loss still falling (-20% in the last epoch)"
    assert underfit_reason({"train/acc": 0.97}, falling) is None  # fitted: the loss may keep falling
    assert underfit_reason({}, falling) is None



def test_the_report_pools_folds_as_replicates_and_says_when_the_baseline_underfits(tmp_path):
    from reglab.report.tables import regime_lines, summarize, to_markdown
    from test_report import load_runs, write_run

    root = tmp_path / "cv"
    for fold in range(3):
        for reg, acc in (("none", 0.70 + fold / 100), ("dropout", 0.72 + fold / 100)):
            write_run(root, f"reg={reg},data.fold={fold}", reg, 0, acc, metrics={"train/acc": 0.72},
                      config={"data": {"cv_folds": 3, "fold": fold}, "trainer": {"max_epochs": 2},
                              **({"reg": {"dropout": {"p": 0.5}}} if reg == "dropout" else {})})
    table = summarize(load_runs([root]), by="reg", metrics=["test/acc"])
    assert table.n == {"none": 3, "dropout": 3} and table.replicates == "folds"
    markdown = to_markdown(table)
    assert "Mean ± sample std over folds" in markdown and "each cross-validation fold is a replicate" in markdown
    regime = " ".join(regime_lines(table))
    assert "It underfits (3 of its 3 runs: train accuracy 72.0% (< 90%)): regularization results on an " \
           "underfitting baseline are not meaningful." in regime


@pytest.mark.slow
def test_a_cross_validated_text_cnn_sweep_runs_from_one_unsplit_file_and_reports(tmp_path):
    from conftest import run_cli

    root = tmp_path / "data"
    root.mkdir()
    write("label-first", root / "questions.all", rows(120, 0))
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "data=text", f"data.path={root}", "data.cv_folds=3", "data.fold=0,1,2", "reg=dropout_maxnorm",
                   "model.embed_dim=16", "model.feature_maps=8", "trainer.max_epochs=1", "logger=csv", "mc_samples=4",
                   "callbacks=none", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep: 3 jobs: 3 done" in done.stdout
    assert "underfits" in done.stdout and "regularization results on an underfitting baseline" in done.stdout
    records = [json.loads(p.read_text()) for p in sorted(sweep.rglob("results.json"))]
    assert sorted(r["fold"] for r in records) == [0, 1, 2]
    assert {r["test_split"] for r in records} == {f"fold {k} of 3 (cross-validation)" for k in range(3)}
    assert len({r["condition_id"] for r in records}) == 1  # folds are replicates of one condition
    from reglab.identity import RunLabel

    assert RunLabel({"data": "text", "model": "text_cnn", "reg": "none"}).wandb_name(0, 2).endswith("seed=0 fold=2")
    assert all(r["split_sizes"]["test"] == 40 for r in records)
    assert all("mc/acc" in r["metrics"] for r in records)  # MC dropout through the model's named dropout site
    from reglab.report.cli import main as report_main

    assert report_main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "table.md").read_text()
    assert "over folds" in table and "| 3 |" in table.replace("  ", " ")


@pytest.mark.slow
def test_text_bow_with_lbfgs_reaches_scikit_learns_logistic_regression(tmp_path):
    """data=text_bow's defaults (model=linear, full-batch L-BFGS) solve the same L2 logistic regression as
    scikit-learn: the same training loss and the same validation and test accuracy on a 4-class set."""
    import numpy as np
    from hydra.utils import instantiate
    from sklearn.linear_model import LogisticRegression

    from conftest import compose_config, run_cli

    root = tmp_path / "data"
    root.mkdir()
    write("fasttext", root / "topics.train.txt", rows(300, 0))
    write("fasttext", root / "topics.test.txt", rows(100, 1))
    lam = 1e-3
    done = run_cli("data=text_bow", f"data.path={root}", "reg=l2", f"reg.l2.strength={lam}", "trainer.max_epochs=3",
                   "logger=csv", "callbacks=none", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]

    cfg = compose_config(tmp_path, ["data=text_bow", f"data.path={root}"])
    data = instantiate(cfg.data, _convert_="all")
    data.setup()
    train = data.splits["train"]
    model = LogisticRegression(C=1 / (2 * lam * len(train)), tol=1e-8, max_iter=10_000)
    model.fit(train.matrix, train.labels.numpy())
    probabilities = model.predict_proba(train.matrix)[np.arange(len(train)), train.labels.numpy()]
    assert ours["train/eval_loss"] == pytest.approx(float(-np.log(probabilities).mean()), abs=2e-3)
    for split, key in (("validation", "val/acc"), ("test", "test/acc")):
        theirs = float(np.mean(model.predict(data.splits[split].matrix) == data.splits[split].labels.numpy()))
        assert ours[key] == pytest.approx(theirs, abs=0.011), split
