"""Linear models (issue 16): model=linear with every regularizer, proximal L1 as ISTA, the synthetic sparse
logistic data of Ng (2004), SST-2-shaped bag-of-words kept sparse, non-zero features by name in results.json, and
the report sections built from real (tiny) studies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import data_settings, run_cli
from reglab.data.sparse_logistic import SparseLogisticDataModule
from reglab.errors import ConfigError
from reglab.models.linear import LinearClassifier
from reglab.optim import build_optimizer
from reglab.regularizers import build_regularizers
from reglab.regularizers.prox_l1 import ProxL1
from test_sst2 import synthetic_rows, write_tsv

SGD = {"_target_": "reglab.optim.SGDW", "_partial_": True, "momentum": 0.0, "nesterov": False}


def soft_threshold(w: np.ndarray, t: float) -> np.ndarray:
    return np.sign(w) * np.maximum(np.abs(w) - t, 0.0)


def test_prox_l1_on_the_linear_model_is_ista_by_hand():
    """SGD + prox_l1 on multinomial logistic regression = ISTA: W <- soft(W - lr * grad, lr * λ); b unpenalized."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 3, 40)
    lr, lam, steps = 0.5, 0.05, 25
    model = LinearClassifier(n_features=6, num_classes=3)
    prox = ProxL1(strength=lam)
    prox.configure(model)
    assert prox.param_names == ["head.weight"]
    optimizer = build_optimizer(OmegaConf.create({**SGD, "lr": lr}), [{"params": list(model.parameters())}])
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
        prox.after_step(model, lr, optimizer)

    W, b, onehot = np.zeros((3, 6)), np.zeros(3), np.eye(3)[y]
    for _ in range(steps):
        logits = x.astype(np.float64) @ W.T + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        residual = (p - onehot) / len(y)
        W, b = soft_threshold(W - lr * residual.T @ x, lr * lam), b - lr * residual.sum(0)
    np.testing.assert_allclose(model.head.weight.detach().numpy(), W, atol=1e-5)
    np.testing.assert_allclose(model.head.bias.detach().numpy(), b, atol=1e-5)
    assert (W == 0).any() and (model.head.weight == 0).sum() == (W == 0).sum()  # exact zeros, the same ones


@pytest.mark.parametrize("reg", ["l1", "l2", "elasticnet", "weight_decay", "prox_l1"])
def test_every_weight_regularizer_applies_to_the_linear_model_unchanged(reg):
    from conftest import CONF

    model = LinearClassifier(n_features=4, num_classes=2)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 3.0, -1.0, 2.0]]))
    (regularizer,) = build_regularizers(OmegaConf.load(CONF / "reg" / f"{reg}.yaml"))
    regularizer.configure(model)
    assert regularizer.param_names == ["head.weight"]  # the weights; never the bias
    if reg == "l2":
        assert float(regularizer.penalty(model).detach()) == pytest.approx(regularizer.strength * 19.25)  # Σw², no ½


def test_per_layer_only_reaches_the_bias_of_the_linear_model():
    from reglab.regularizers.l1 import L1

    model = LinearClassifier(n_features=4, num_classes=2)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.5, -1.5]))
    l1 = L1(strength=0.1, only=["head.bias"])
    l1.configure(model)
    assert l1.param_names == ["head.bias"] and float(l1.penalty(model).detach()) == pytest.approx(0.2)


def test_the_linear_model_starts_at_zero_and_has_no_dropout_sites():
    model = LinearClassifier(n_features=3, num_classes=2)
    assert torch.count_nonzero(model.head.weight) == 0 and model.dropout_sites() == {}
    with pytest.raises(ConfigError, match="model.bias='yes': must be true or false"):
        LinearClassifier(n_features=3, num_classes=2, bias="yes")


def test_sparse_logistic_draws_nested_features_and_labels_from_the_logistic_model():
    small, large = SparseLogisticDataModule(n_features=10, seed=3), SparseLogisticDataModule(n_features=500, seed=3)
    small.setup(), large.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(small.splits[split][0], large.splits[split][0][:, :10])
        assert torch.equal(small.splits[split][1], large.splits[split][1])
    assert small.split_sizes == {"train": 70, "val": 30, "test": 2000}
    assert large.feature_names[:2] == ["relevant_0", "irrelevant_1"] and large.model_kwargs == {
        "n_features": 500, "num_classes": 2}
    # y ~ Bernoulli(sigmoid(10 x_0)): the Bayes rule sign(x_0) is right about 94% of the time (E sigmoid(10|z|))
    x, y = large.splits["test"]
    assert 0.91 < float(((x[:, 0] > 0).long() == y).float().mean()) < 0.97
    other = SparseLogisticDataModule(n_features=10, seed=4)
    other.setup()
    assert not torch.equal(other.splits["train"][0], small.splits["train"][0])  # each seed a fresh data set
    with pytest.raises(ConfigError, match="data.n_relevant=20: must be <= data.n_features=10"):
        SparseLogisticDataModule(n_features=10, n_relevant=20)


@pytest.fixture(scope="module")
def sentiment_tsv(tmp_path_factory):
    root = tmp_path_factory.mktemp("bow_tsv")
    write_tsv(root / "train.tsv", synthetic_rows(400, 0))
    write_tsv(root / "dev.tsv", synthetic_rows(80, 1) + [("an unseenword here", 1)])
    return root


def bow(path, tmp_path, **kwargs):
    from reglab.data.bag_of_words import BagOfWordsDataModule

    settings = data_settings("sst2_bow")
    return BagOfWordsDataModule(**(settings | {"path": str(path), "cache_dir": str(tmp_path / "cache"),
                                               "val_size": 100, "min_df": 1} | kwargs))


def test_bag_of_words_stays_sparse_and_fits_its_vocabulary_on_train_only(sentiment_tsv, tmp_path):
    import scipy.sparse

    data = bow(sentiment_tsv, tmp_path)
    data.setup()
    train = data.splits["train"]
    assert scipy.sparse.isspmatrix_csr(train.matrix) and train.matrix.dtype == np.float32
    assert "unseenword" not in data.feature_names and "wonderful" in data.feature_names
    assert data.split_sizes == {"train": 300, "val": 100, "test": 81} and data.test_split == "validation (held out)"
    inputs, labels = train[[0, 5, 7]]
    assert inputs.is_sparse and inputs.shape == (3, len(data.feature_names)) and labels.shape == (3,)
    assert torch.equal(inputs.to_dense()[0], torch.from_numpy(train.matrix[0].toarray()[0]))
    model = LinearClassifier(n_features=len(data.feature_names), num_classes=2)
    torch.nn.init.normal_(model.head.weight)
    torch.testing.assert_close(model(inputs), model(inputs.to_dense()))  # the sparse product is the dense one
    assert len(list((tmp_path / "cache" / "vectorizers").glob("*.json"))) == 1  # cached (JSON: data, not code)
    again = bow(sentiment_tsv, tmp_path)
    again.setup()
    assert again.feature_names == data.feature_names
    counts = bow(sentiment_tsv, tmp_path, weighting="counts")
    counts.setup()
    assert set(np.unique(counts.splits["train"].matrix.data)) <= {1.0, 2.0, 3.0}  # raw counts, not TF-IDF
    assert len(list((tmp_path / "cache" / "vectorizers").glob("*.json"))) == 2
    with pytest.raises(ConfigError, match=r"data.weighting='bm25': allowed \['tfidf', 'counts', 'binary'\]"):
        bow(sentiment_tsv, tmp_path, weighting="bm25")


@pytest.mark.slow
def test_prox_l1_on_bag_of_words_lists_its_sentiment_words_by_name(sentiment_tsv, tmp_path):
    done = run_cli("data=sst2_bow", f"data.path={sentiment_tsv}", "data.val_size=100", "model=linear", "optim=adamw",
                   "reg=prox_l1", "reg.prox_l1.strength=3e-3", "optim.lr=0.05", "trainer.max_epochs=15",
                   "data.batch_size=32", "logger=csv", f"paths.cache_dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr  # sparse batches: torch's notice about them stays off the console
    assert "Sparse" not in console and "Generating" not in console and "warning" not in console.lower(), console
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    features = results["features"]
    assert results["input_kind"] == "features" and results["metrics"]["test/acc"] > 0.9
    assert 0 < features["nonzero"] < features["n_features"] and features["listed"] == features["nonzero"]
    assert results["metrics"]["weights/zero_frac"] > 0.3  # exact zeros
    top = features["names"][:8]
    assert set(top) <= set(POSITIVE_AND_NEGATIVE), top  # the words that carry the label, not the filler


POSITIVE_AND_NEGATIVE = ["wonderful", "moving", "brilliant", "charming", "funny", "gorgeous", "dull", "tedious",
                         "awful", "bland", "clumsy", "lifeless"]


@pytest.mark.slow
def test_the_ng2004_study_and_its_report_section(tmp_path):
    """A tiny version of experiment=ng2004 through the sweep machinery, then the report: λ chosen on validation per
    condition, L1 ahead of L2 with many irrelevant features, and the lasso path drawn."""
    sweep = tmp_path / "ng"
    done = run_cli("-m", "experiment=ng2004", "reg=prox_l1,l2", "lam=0.01,0.1", "data.n_features=100",
                   "data.n_relevant=3", "seed=0,1", "trainer.max_epochs=100",
                   f"hydra.sweep.dir={sweep}", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = subprocess.run([str(Path(sys.executable).parent / "reglab-report"), str(sweep), "--paper", "--out",
                             str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    section = text.split("## Ng (2004): L1 vs L2 logistic regression as irrelevant features are added")[1]
    assert "| relevant | features | l2 test error (%) | l2 λ | l2 n | prox_l1 test error (%)" in section
    assert (tmp_path / "report" / "figures" / "ng2004.png").is_file()
    assert (tmp_path / "report" / "figures" / "lasso_path_synthetic.png").is_file()
    row = next(line for line in section.splitlines() if line.startswith("| 3 | 100 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    l2_error, l1_error = float(cells[2].split(" ± ")[0]), float(cells[5].split(" ± ")[0])
    assert l1_error < l2_error, row


@pytest.mark.slow
def test_the_text_feature_selection_study_and_its_report_section(sentiment_tsv, tmp_path):
    sweep = tmp_path / "text"
    done = run_cli("-m", "experiment=text_feature_selection", f"data.path={sentiment_tsv}", "data.val_size=100",
                   "data.min_df=1", "reg=prox_l1,l2", "lam=1e-3,1e-2", "optim.lr=0.05", "data.batch_size=32",
                   "trainer.max_epochs=10", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    report = subprocess.run([str(Path(sys.executable).parent / "reglab-report"), str(sweep), "--paper", "--out",
                             str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    section = (tmp_path / "report" / "report.md").read_text().split("## L1 as feature selection in text")[1]
    assert "| reg | λ | val acc (%) | test acc (%) | words kept | vocabulary |" in section
    assert "Words kept by prox_l1 at λ=" in section and "the most accurate run keeping at most 10%" in section
    words = [line.split("|")[1].strip() for line in section.splitlines()
             if line.startswith("| ") and line.count("|") == 5 and not line.startswith("| positive")]
    assert words and set(words[:3]) <= set(POSITIVE_AND_NEGATIVE[:6]), words  # the top positive words
    for name in ("text_feature_selection.png", "lasso_path_text.png"):
        assert (tmp_path / "report" / "figures" / name).is_file()
