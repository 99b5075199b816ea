"""Text as bag-of-words feature vectors for linear models: counts, binary or TF-IDF over a vocabulary fitted on the
training split with scikit-learn's vectorizer (cached, like the tokenizer). Reading, columns and labels are the
text datamodule's (reglab.data.text), so ``data=sst2_bow`` is SST-2 with another input form.

Sparse inputs stay sparse: each split is a scipy CSR matrix (SST-2's 67k phrases over a 13k-word vocabulary: a
few MB), and a batch is a sparse tensor (reglab.models.linear multiplies it without densifying).

``carve_val``: validation is a seeded random subset of ``val_size`` training rows and the source's validation
split becomes the test split, so lambda is chosen on data the reported number never saw (SST-2's labelled dev set
is its only held-out set). The vocabulary is fitted on what is trained on."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch.utils.data import Dataset

from reglab.atomic import atomic_write, check_writable_dir
from reglab.data.base import check_int
from reglab.data.text import TextClassificationDataModule
from reglab.errors import ConfigError

WEIGHTINGS = ("tfidf", "counts", "binary")


class SparseRowsDataset(Dataset):
    """Rows of a CSR matrix; a batch is a sparse COO tensor (the linear model multiplies it as one), so even the
    whole training set is one cheap batch: full-batch proximal gradient, the lasso's own solver."""

    def __init__(self, matrix, labels: torch.Tensor):
        self.matrix, self.labels = matrix, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        index = np.asarray(indices)
        rows = self.matrix[index].tocoo()
        coordinates = torch.from_numpy(np.vstack([rows.row, rows.col]).astype(np.int64))
        batch = torch.sparse_coo_tensor(coordinates, torch.from_numpy(rows.data), rows.shape).coalesce()
        return batch, self.labels[torch.as_tensor(index)]

    def subset(self, index) -> "SparseRowsDataset":
        index = np.asarray(index)
        return SparseRowsDataset(self.matrix[index], self.labels[torch.as_tensor(index)])


class BagOfWordsDataModule(TextClassificationDataModule):
    input_kind = "features"

    def __init__(self, weighting: str = "tfidf", min_df: int = 2, max_features: int | None = None,
                 ngram_max: int = 1, **text):
        super().__init__(**text)
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"data.weighting={weighting!r}: allowed {list(WEIGHTINGS)}")
        self.weighting, self.min_df, self.ngram_max = weighting, check_int("min_df", min_df), check_int(
            "ngram_max", ngram_max)
        self.max_features = None if max_features is None else check_int("max_features", max_features)
        self.feature_names: list[str] | None = None

    def vectorizer_settings(self) -> dict:
        return {"weighting": self.weighting, "min_df": self.min_df, "max_features": self.max_features,
                "ngram_max": self.ngram_max, "lowercase": self.lowercase}

    def vectorizer(self, vocabulary: dict | None = None, idf: list | None = None):
        """The configured vectorizer: unfitted, or rebuilt from a cached vocabulary (and IDF weights)."""
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

        options = dict(min_df=self.min_df, max_features=self.max_features, ngram_range=(1, self.ngram_max),
                       lowercase=self.lowercase, token_pattern=r"(?u)\b\w[\w']*\b|[!?]", vocabulary=vocabulary)
        vectorizer = (TfidfVectorizer(sublinear_tf=True, dtype=np.float64, **options) if self.weighting == "tfidf"
                      else CountVectorizer(binary=self.weighting == "binary", **options))
        if idf is not None:
            vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
        return vectorizer

    def load_vectorizer(self, texts: list[str], fingerprint: str):
        """Fitted on ``texts`` once per (data, carve, settings) and cached as JSON (its vocabulary and IDF weights:
        data that cannot run code, unlike a pickle) under the cache dir, written atomically."""
        key = json.dumps([fingerprint, self.split_key(), self.vectorizer_settings()])
        path = self.cache_dir / "vectorizers" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                return self.vectorizer({str(k): int(v) for k, v in saved["vocabulary"].items()}, saved.get("idf"))
            except Exception:
                path.unlink(missing_ok=True)  # unreadable or foreign: fit again
        check_writable_dir(path.parent, "paths.cache_dir", "the fitted vectorizer is cached there")
        vectorizer = self.vectorizer()
        vectorizer.fit(texts)
        saved = {"vocabulary": {k: int(v) for k, v in vectorizer.vocabulary_.items()},
                 "idf": vectorizer.idf_.tolist() if self.weighting == "tfidf" else None}
        atomic_write(path, lambda handle: handle.write(json.dumps(saved).encode()))
        return vectorizer

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        text, fingerprint = self.split_text()
        train, val, test = text["train"], text["validation"], text["test"]
        vectorizer = self.load_vectorizer(train[0], fingerprint)
        self.feature_names = [str(name) for name in vectorizer.get_feature_names_out()]

        def encode(texts, labels) -> SparseRowsDataset:
            matrix = vectorizer.transform(texts).astype(np.float32).tocsr()
            return SparseRowsDataset(matrix, torch.tensor(labels, dtype=torch.long))

        splits = {"train": encode(*train), "validation": encode(*val)}
        splits["test"] = encode(*test) if test is not val else splits["validation"]
        self.keep_splits(splits)

    @property
    def model_kwargs(self) -> dict:
        self.setup()
        return {"n_features": len(self.feature_names), "num_classes": len(self.class_names)}

    def train_lengths(self) -> torch.Tensor | None:
        return None  # rows have one width: nothing to bucket

    def eval_order(self, dataset) -> torch.Tensor | None:
        return None
