"""Generic text data (data=text_tsv): a 4-class topic TSV shaped like AG News, made here, trained end to end through
config alone; the label set from the data or the config; one-line errors; batches per epoch without a loader."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import FAST, data_settings, run_cli
from reglab.data.batching import TrainBatches
from reglab.data.text import TextClassificationDataModule
from reglab.errors import ConfigError, DataUnavailableError

TOPICS = {
    "World": ["election", "minister", "treaty", "border", "embassy", "parliament", "refugees", "summit"],
    "Sports": ["goal", "coach", "league", "tournament", "striker", "playoffs", "medal", "stadium"],
    "Business": ["shares", "profit", "merger", "investors", "earnings", "market", "bank", "revenue"],
    "Sci/Tech": ["software", "chip", "satellite", "internet", "genome", "laptop", "robot", "physics"],
}
FILLER = ["the", "a", "on", "after", "says", "new", "report", "in", "with", "week", "over", "from"]
SMALL_TRANSFORMER = ["model=transformer", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64",
                     "data.vocab_size=200", "data.max_length=32", "optim.lr=3e-3"]


def topic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Headlines: two words of their topic among filler; every 11th holds an unbalanced `"`."""
    rng, names, rows = random.Random(seed), list(TOPICS), []
    for i in range(n):
        label = names[i % len(names)]
        words = rng.sample(FILLER, rng.randint(3, 8)) + rng.sample(TOPICS[label], 2)
        rng.shuffle(words)
        if i % 11 == 0:
            words.insert(2, '"')  # merges rows unless quoting is off
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path, rows, header=("text", "label")) -> None:
    path.write_text("\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n")


@pytest.fixture(scope="session")
def topics_tsv(tmp_path_factory):
    root = tmp_path_factory.mktemp("topics_tsv")
    for split, n, seed in (("train", 400, 0), ("dev", 80, 1), ("test", 80, 2)):
        write_tsv(root / f"{split}.tsv", topic_rows(n, seed))
    return root


def text_tsv(path, tmp_path, **kwargs) -> TextClassificationDataModule:
    """What data=text_tsv builds with the Transformer (WordPiece tokens), with ``kwargs`` on top."""
    settings = data_settings("text_tsv", model="transformer")
    return TextClassificationDataModule(**(settings | {"path": None if path is None else str(path),
                                                       "cache_dir": str(tmp_path / "cache"), "vocab_size": 200,
                                                       "batch_size": 16, "max_length": 32} | kwargs))


def cli(root, tmp_path, *overrides: str):
    fast = [o for o in FAST if not o.startswith("optim.lr=")]
    return run_cli("data=text_tsv", f"data.path={root}", *fast, *SMALL_TRANSFORMER, *overrides,
                   f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")


@pytest.mark.slow
def test_a_four_class_tsv_trains_end_to_end_through_config_alone(topics_tsv, tmp_path):
    done = cli(topics_tsv, tmp_path, "data.num_classes=4")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed" and results["test_split"] == "test"
    assert results["split_sizes"] == {"train": 400, "val": 80, "test": 80}  # the `"` rows merged nothing
    assert results["metrics"]["test/acc"] > 0.5  # chance is 0.25; the topic words are learnable in 2 epochs


def test_num_classes_that_disagree_with_the_data_fail_in_one_line(topics_tsv, tmp_path):
    done = cli(topics_tsv, tmp_path, "data.num_classes=3")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("error: data.num_classes=3: the training split has 4 labels "
                                                    "['Business', 'Sci/Tech', 'Sports', 'World'] (null: as many as "
                                                    "the data has)")


def test_a_missing_path_is_one_line_naming_data_path(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.path=None: required") as raised:
        text_tsv(None, tmp_path)
    assert "\n" not in str(raised.value)


def test_labels_from_the_data_are_sorted_and_index_the_classes(topics_tsv, tmp_path):
    dm = text_tsv(topics_tsv, tmp_path)
    dm.setup()
    assert dm.class_names == ["Business", "Sci/Tech", "Sports", "World"]
    assert dm.model_kwargs["num_classes"] == 4 and dm.test_split == "test"
    text, _ = dm.read_text()
    assert [dm.class_names[k] for k in text["train"][1]] == [label for _, label in topic_rows(400, 0)]
    assert sum('"' in t for t in text["train"][0]) == len(range(0, 400, 11))


def test_explicit_labels_fix_the_class_order(topics_tsv, tmp_path):
    order = ["Sports", "World", "Sci/Tech", "Business"]
    dm = text_tsv(topics_tsv, tmp_path, labels=order, num_classes=4)
    dm.setup()
    assert dm.class_names == order
    labels = dm.splits["validation"].labels.tolist()
    assert labels == [order.index(label) for _, label in topic_rows(80, 1)]  # label k of the config is class k
    with pytest.raises(ConfigError, match=r"data.num_classes=3: data.labels lists 4 labels"):
        text_tsv(topics_tsv, tmp_path, labels=order, num_classes=3)
    with pytest.raises(ConfigError, match="data.labels"):
        text_tsv(topics_tsv, tmp_path, labels=["World", "World"])


def test_integer_labels_sort_numerically_and_spellings_agree(tmp_path):
    root = tmp_path / "numbers"
    root.mkdir()
    rows = [(text, {"World": "2", "Sports": "10", "Business": "2.0", "Sci/Tech": " 1"}[label])
            for text, label in topic_rows(40, 0)]
    write_tsv(root / "train.tsv", rows)
    write_tsv(root / "validation.tsv", rows[:8])
    dm = text_tsv(root, tmp_path)
    dm.setup()
    assert dm.class_names == ["1", "2", "10"]  # numerically, not "1" < "10" < "2"; 2 and 2.0 are one label
    assert dm.test_split == "validation"  # no test file: tests on validation


def test_an_unknown_label_names_the_file_and_line(topics_tsv, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "train.tsv").write_text((topics_tsv / "train.tsv").read_text())
    rows = topic_rows(10, 1)
    rows[4] = ("a headline about nothing", "Weather")  # line 6: after the header, the 5th row
    write_tsv(root / "dev.tsv", rows)
    with pytest.raises(DataUnavailableError, match=r"dev\.tsv:6: label 'Weather' is not Business, Sci/Tech, Sports, "
                                                   r"or World$"):
        text_tsv(root, tmp_path).setup()


def test_an_unlabelled_test_split_is_skipped_and_the_run_tests_on_validation(topics_tsv, tmp_path):
    root = tmp_path / "glue_like"
    root.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (root / name).write_text((topics_tsv / name).read_text())
    write_tsv(root / "test.tsv", [(text, -1) for text, _ in topic_rows(20, 2)])
    dm = text_tsv(root, tmp_path)
    assert dm.test_split == "validation" and dm.split_sizes == {"train": 400, "val": 80, "test": 80}


class FakeTrainer:
    """What a datamodule asks a trainer for its loaders."""

    global_rank, training, datamodule = 0, True, None

    def __init__(self, world_size: int):
        self.world_size = world_size


@pytest.mark.parametrize("sort_by_length", [True, False])
def test_train_batches_per_epoch_is_the_loaders_length_without_a_loader(topics_tsv, tmp_path, sort_by_length):
    # Batch 4: length buckets of 200 rows, the second one partial; its last batch holds one row, which a world of
    # 2 skips (each rank needs a share).
    dm = text_tsv(topics_tsv, tmp_path, batch_size=4, train_size=389, sort_by_length=sort_by_length)
    counts = {world: dm.train_batches_per_epoch(world) for world in (1, 2)}
    assert counts == {1: 98, 2: 97}
    dm.trainer = FakeTrainer(1)
    assert counts[1] == len(dm.train_dataloader()) == sum(1 for _ in dm.train_dataloader().sampler)
    lengths = dm.splits["train"].lengths if sort_by_length else None
    for rank in (0, 1):
        sampler = TrainBatches(389, 4, dm.seed, rank, 2, lengths=lengths)
        assert counts[2] == len(sampler) == sum(1 for _ in sampler)


def test_a_hub_data_set_reads_like_a_folder(monkeypatch, tmp_path):
    """The hub path offline: load_dataset stands in for the hub (ClassLabel ids; GLUE-style unlabelled test)."""
    import datasets

    from reglab.data import text as text_module

    def split(n: int, seed: int, labelled: bool = True):
        rows = topic_rows(n, seed)
        labels = [list(TOPICS).index(label) if labelled else -1 for _, label in rows]
        features = datasets.Features({"title": datasets.Value("string"),
                                      "topic": datasets.ClassLabel(names=list(TOPICS))})
        return datasets.Dataset.from_dict({"title": [t for t, _ in rows], "topic": labels},
                                          features=None if not labelled else features)

    hub = datasets.DatasetDict({"train": split(120, 0), "validation": split(40, 1), "test": split(20, 2, False)})
    monkeypatch.setattr(text_module, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, cache_dir: hub)
    dm = text_tsv(None, tmp_path, hub_name="someone/topics", text_column="title", label_column="topic")
    dm.setup()
    assert dm.class_names == ["0", "1", "2", "3"] and dm.test_split == "validation"
    assert dm.split_sizes == {"train": 120, "val": 40, "test": 40}
    assert dm.splits["train"].labels[:4].tolist() == [0, 1, 2, 3]


def test_a_read_only_cache_is_named_as_the_cache_and_a_filled_one_is_only_read(topics_tsv, tmp_path, monkeypatch):
    import os

    from reglab.errors import ConfigError

    cache = tmp_path / "cache"
    cache.mkdir()
    real_access = os.access

    def read_only(path, mode):
        return False if cache in (Path(path), *Path(path).parents) else real_access(path, mode)

    monkeypatch.setattr(os, "access", read_only)
    with pytest.raises(ConfigError, match=r"paths.cache_dir=.*not writable by this user \(the trained tokenizer "
                                          r"is cached there\)"):
        text_tsv(topics_tsv, tmp_path, cache_dir=str(cache)).setup()
    monkeypatch.setattr(os, "access", real_access)
    text_tsv(topics_tsv, tmp_path, cache_dir=str(cache)).setup()  # fills the cache
    monkeypatch.setattr(os, "access", read_only)
    datamodule = text_tsv(topics_tsv, tmp_path, cache_dir=str(cache))
    datamodule.setup()  # reading the files and the cached tokenizer needs no write
    assert len(datamodule.splits["train"]) > 0
    assert not any(p.name.startswith("hf") for p in cache.iterdir())  # no Hugging Face arrow cache for local files
