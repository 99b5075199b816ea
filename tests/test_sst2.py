"""SST-2 path: GLUE TSV / parquet reading, bad rows, the tokenizer cache, the Transformer, a short run."""

from __future__ import annotations

import json
import random

import pytest
import torch


from conftest import ROOT, data_settings
from reglab.data import tokenizer as tokenizer_module
from reglab.data.batching import TrainBatches
from reglab.data.text import TextClassificationDataModule
from reglab.errors import ConfigError, DataUnavailableError
from reglab.models.transformer import TransformerClassifier
from reglab.regularizers.dropout import Dropout
from reglab.regularizers.l2 import L2
from reglab.preflight import validate
from reglab.run import train

POSITIVE = ["wonderful", "moving", "brilliant", "charming", "funny", "gorgeous"]
NEGATIVE = ["dull", "tedious", "awful", "bland", "clumsy", "lifeless"]
FILLER = ["the", "film", "is", "a", "story", "with", "acting", "and", "plot", "quite"]


def synthetic_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentiment carried by a few words among filler; some rows contain a literal double quote."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, rng.randint(2, 8)) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        if i % 7 == 0:
            words.insert(1, '"')  # unbalanced quote: merges rows unless quoting is off
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path, rows, header=("sentence", "label")):
    lines = ["\t".join(header)] + ["\t".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def sst2_tsv(tmp_path_factory):
    root = tmp_path_factory.mktemp("sst2_tsv")
    write_tsv(root / "train.tsv", synthetic_rows(300, 0))
    write_tsv(root / "dev.tsv", synthetic_rows(60, 1))
    # GLUE's own test: no labels
    write_tsv(root / "test.tsv", [(i, s) for i, (s, _) in enumerate(synthetic_rows(20, 2))], ("index", "sentence"))
    return root


@pytest.fixture(scope="session")
def sst2_parquet(tmp_path_factory):
    from datasets import Dataset

    root = tmp_path_factory.mktemp("sst2_parquet")
    for split, n, seed in (("train", 300, 0), ("validation", 60, 1), ("test", 40, 3)):
        rows = synthetic_rows(n, seed)
        Dataset.from_dict({"sentence": [s for s, _ in rows], "label": [y for _, y in rows]}).to_parquet(
            str(root / f"{split}.parquet"))
    return root


def SST2DataModule(**kwargs) -> TextClassificationDataModule:
    """What data=sst2 builds with the Transformer (WordPiece tokens), with ``kwargs`` on top."""
    settings = data_settings("sst2", model="transformer")
    return TextClassificationDataModule(**(settings | kwargs))


def datamodule(path, tmp_path, **kwargs) -> TextClassificationDataModule:
    return SST2DataModule(**({"path": str(path), "cache_dir": str(tmp_path / "cache"), "vocab_size": 200,
                              "batch_size": 16, "max_length": 24} | kwargs))


def test_tsv_keeps_quotes_and_every_row(sst2_tsv, tmp_path):
    dm = datamodule(sst2_tsv, tmp_path)
    dm.setup()
    assert len(dm.splits["train"]) == 300 and len(dm.splits["validation"]) == 60
    # GLUE test has no labels: skipped, testing on validation, and the run says so
    assert dm.test_split == "validation" and dm.splits["test"] is dm.splits["validation"]
    text, _ = dm.read_text()
    quoted = [s for s in text["train"][0] if '"' in s]
    assert len(quoted) == len([i for i in range(300) if i % 7 == 0])
    assert text["train"][1][:4] == [0, 1, 0, 1]


def test_parquet_with_labelled_test(sst2_parquet, tmp_path):
    dm = datamodule(sst2_parquet, tmp_path)
    dm.setup()
    assert dm.test_split == "test" and len(dm.splits["test"]) == 40
    kwargs = dm.model_kwargs
    assert kwargs["num_classes"] == 2 and kwargs["pad_id"] == dm.tokenizer.pad_token_id
    assert kwargs["vocab_size"] == len(dm.tokenizer) <= 200


@pytest.mark.parametrize("bad_row,line,message", [
    ("a fine film\t2", 4, "label '2' is not 0 or 1"),
    ("a fine film\t", 3, "no label"),
    ("\t1", 5, "empty sentence"),
])
def test_bad_rows_name_file_and_line(tmp_path, bad_row, line, message):
    root = tmp_path / "bad"
    root.mkdir()
    rows = ["\t".join(map(str, r)) for r in synthetic_rows(6, 0)]
    rows.insert(line - 2, bad_row)
    (root / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    write_tsv(root / "dev.tsv", synthetic_rows(4, 1))
    with pytest.raises(DataUnavailableError, match=rf"train\.tsv:{line}: .*{message}"):
        datamodule(root, tmp_path).setup()


def test_missing_files_and_paths(tmp_path):
    with pytest.raises(ConfigError, match="data.path"):
        SST2DataModule(path=str(tmp_path / "nope"))
    (tmp_path / "only").mkdir()
    write_tsv(tmp_path / "only" / "train.tsv", synthetic_rows(4, 0))
    # no dev file: validation is carved from train, and 5,000 of 4 rows cannot be
    with pytest.raises(ConfigError, match=r"data.val_size=5000: must leave training examples; the train split has 4"):
        datamodule(tmp_path / "only", tmp_path).setup()


def test_tokenizer_is_trained_once_then_loaded_from_cache(sst2_tsv, tmp_path, monkeypatch):
    first = datamodule(sst2_tsv, tmp_path)
    first.setup()
    cached = list((tmp_path / "cache" / "tokenizers").glob("wordpiece-200-*/tokenizer.json"))
    assert len(cached) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the tokenizer is cached")

    monkeypatch.setattr(tokenizer_module, "train_wordpiece", no_training)
    second = datamodule(sst2_tsv, tmp_path)
    second.setup()
    assert torch.equal(first.splits["train"].ids, second.splits["train"].ids)
    # a different vocab size is a different tokenizer
    with pytest.raises(AssertionError, match="trained again"):
        datamodule(sst2_tsv, tmp_path, vocab_size=150).setup()


def test_batches_are_dynamically_padded(sst2_tsv, tmp_path):
    dm = datamodule(sst2_tsv, tmp_path)
    dm.setup()
    for inputs, _ in dm.train_dataloader():
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        assert ids.shape == mask.shape and ids.shape[1] == int(mask.sum(1).max())  # no all-pad column
        assert (ids[~mask] == dm.tokenizer.pad_token_id).all()
        assert (ids[:, 0] == dm.tokenizer.cls_token_id).all()


def test_length_buckets_cover_every_row_once():
    lengths = torch.randint(1, 40, (1000,))
    sampler = TrainBatches(1000, batch_size=32, seed=0, lengths=lengths, bucket_batches=4)
    batches = list(sampler)
    seen = sorted(i for batch in batches for i in batch)
    assert seen == list(range(1000)) and len(batches) == len(sampler)
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 10  # random batches would span ~35


def model(**kwargs) -> TransformerClassifier:
    torch.manual_seed(0)
    return TransformerClassifier(**({"vocab_size": 50, "num_classes": 2, "max_length": 32, "pad_id": 0,
                                     "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64} | kwargs))


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_padding_does_not_change_the_output(pooling, positions):
    net = model(pooling=pooling, positions=positions).eval()
    ids = torch.tensor([[2, 11, 12, 13, 3], [2, 21, 3, 0, 0]])
    mask = ids != 0
    padded = torch.cat([ids, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    garbage = padded.clone()
    garbage[:, 5:] = 7  # whatever sits in padded positions must not matter
    with torch.no_grad():
        short = net(ids, mask)
        long = net(padded, padded != 0)
        masked_garbage = net(garbage, torch.cat([mask, torch.zeros(2, 7, dtype=torch.bool)], dim=1))
        # the second row alone, without the first row's length forcing padding
        alone = net(ids[1:, :3], mask[1:, :3])
    assert torch.allclose(short, long, atol=1e-5)
    assert torch.allclose(short, masked_garbage, atol=1e-5)
    assert torch.allclose(short[1:], alone, atol=1e-5)


def test_dropout_sites_follow_train_and_eval_mode():
    net = model()
    sites = net.dropout_sites()
    assert set(sites) == {"embedding", "attention", "residual", "classifier"}
    assert all(m.p == 0.0 for modules in sites.values() for m in modules)  # reg=none is none
    ids = torch.randint(1, 50, (4, 10))
    mask = torch.ones_like(ids, dtype=torch.bool)
    net.train()
    assert torch.equal(net(ids, mask), net(ids, mask))  # p=0: deterministic even in train mode
    regularizer = Dropout(p=0.1, rates={"attention": 0.3})
    regularizer.configure(net)
    assert [m.p for m in sites["attention"]] == [0.3, 0.3] and sites["classifier"][0].p == 0.1
    assert not torch.equal(net(ids, mask), net(ids, mask))
    net.eval()
    assert torch.equal(net(ids, mask), net(ids, mask))


def test_embeddings_follow_the_shared_parameter_rule():
    net = model()
    default = L2(strength=1.0)
    default.configure(net)
    assert not any("embed" in name for name in default.param_names)
    assert all(p.ndim == 2 for p in default.params)
    with_embeddings = L2(strength=1.0, include=["token_embed.*", "pos_embed"])
    with_embeddings.configure(net)
    assert {"token_embed.weight", "pos_embed"} <= set(with_embeddings.param_names)


def test_cnn_on_text_fails_at_start_up(make_config):
    with pytest.raises(ConfigError, match="model=cnn takes image input but data=sst2 gives tokens input"):
        validate(make_config("data=sst2", "model=cnn"))
    with pytest.raises(ConfigError, match="model=transformer takes tokens input but data=digits gives image"):
        validate(make_config("data=digits", "model=transformer"))


def test_models_that_fit_include_those_that_extend_another_option():
    """cnn_small has no _target_ of its own (defaults: [cnn]): it still takes images, so it is listed."""
    from reglab.checks import models_taking

    assert models_taking("image") == ["cnn", "cnn_small", "resnet18"]
    assert {"transformer", "text_cnn"} <= set(models_taking("tokens")) and "cnn_small" not in models_taking("tokens")


@pytest.mark.slow
def test_short_sst2_run_writes_results(make_config, sst2_tsv):
    cfg = make_config("data=sst2", "model=transformer", "reg=[l2,dropout]", f"data.path={sst2_tsv}",
                      "data.vocab_size=200", "model.d_model=32", "model.d_ff=64", "optim.lr=3e-3")
    train(cfg)
    results = json.loads((ROOT / cfg.paths.output_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["test_split"] == "validation"
    assert {k: results["choices"][k] for k in ("data", "model", "reg", "optim")} == {
        "data": "sst2", "model": "transformer", "reg": "l2+dropout", "optim": "adamw"}
    assert results["metrics"]["val/acc"] > 0.6  # the sentiment words are learnable in 2 epochs
    assert results["history"][-1]["train/reg/l2"] > 0


def test_hf_encoder_tiny_random_config_offline():
    from reglab.models.hf_encoder import HFEncoderClassifier

    torch.manual_seed(0)
    net = HFEncoderClassifier(vocab_size=60, num_classes=2, max_length=16, pad_id=0,
                              config={"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "intermediate_size": 32})
    sites = net.dropout_sites()
    assert set(sites) == {"embedding", "attention", "residual", "classifier"}
    assert all(m.p == 0.0 for modules in sites.values() for m in modules)
    ids = torch.tensor([[2, 5, 6, 3, 0, 0]])
    mask = ids != 0
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(ids, mask), net(ids[:, :4], mask[:, :4]), atol=1e-5)
    Dropout(p=0.0, rates={"attention": 0.5}).configure(net)
    assert all(m.p == 0.5 for m in sites["attention"]) and all(m.p == 0.0 for m in sites["residual"])
    # MC dropout reaches the attention dropout, which transformers gates by the attention module's own mode
    from reglab.evaluation import mc_probabilities

    assert len(net.dropout_gates()) == 1
    torch.manual_seed(1)
    first = mc_probabilities(net, {"input_ids": ids, "attention_mask": mask}, samples=1)
    torch.manual_seed(2)
    assert not torch.allclose(first, mc_probabilities(net, {"input_ids": ids, "attention_mask": mask}, samples=1))
    assert not any(m.training for m in net.modules())
    penalty = L2(strength=1.0)
    penalty.configure(net)
    assert penalty.param_names and not any("embeddings" in n for n in penalty.param_names)


def test_pretrained_tokenizer_by_path_and_a_clear_error_by_unknown_name(sst2_tsv, tmp_path):
    trained = datamodule(sst2_tsv, tmp_path)
    trained.setup()
    saved = tmp_path / "my_tokenizer"
    trained.tokenizer.save_pretrained(str(saved))
    by_path = datamodule(sst2_tsv, tmp_path, tokenizer=str(saved))
    by_path.setup()
    assert torch.equal(by_path.splits["validation"].ids, trained.splits["validation"].ids)
    with pytest.raises(DataUnavailableError, match="data.tokenizer='no-such/tokenizer'"):
        datamodule(sst2_tsv, tmp_path, tokenizer="no-such/tokenizer").setup()


def test_train_size_subsets_sst2_training_examples_only(sst2_tsv, tmp_path):
    full, sub = datamodule(sst2_tsv, tmp_path), datamodule(sst2_tsv, tmp_path, train_size=0.5, subset_seed=1)
    full.setup()
    sub.setup()
    assert sub.split_sizes["train"] == round(0.5 * full.split_sizes["train"])
    assert sub.split_sizes["val"] == full.split_sizes["val"] and sub.split_sizes["test"] == full.split_sizes["test"]
    labels = sub.splits["train"].labels
    assert abs(int(labels.sum()) - len(labels) * float(full.splits["train"].labels.float().mean())) <= 1  # stratified
