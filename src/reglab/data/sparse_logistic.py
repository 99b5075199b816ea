"""A synthetic sparse logistic problem, as in Ng (2004) section 5: few relevant features among many irrelevant ones.

    x ~ N(0, I_n_features)          every feature, relevant or not, is standard normal
    theta_j = signal / sqrt(n_relevant)   for the first n_relevant features (||theta||_2 = signal), 0 elsewhere
    y ~ Bernoulli(sigmoid(theta . x))

Train, validation and test are independent draws from one generator, seeded by ``data_seed`` (null: the run's
seed, so every seed of a study is a fresh data set, as Ng averages over data sets). The features are named
``relevant_<j>`` and ``irrelevant_<j>``, so results.json and the lasso-path figure show which were which. The
draws do not depend on how many features there are: with the same seed, 100 features are the first 100 of 1,000,
and the labels are the same."""

from __future__ import annotations

import torch

from reglab.data.base import ClassificationDataModule, check_int
from reglab.data.image_tensors import TensorBatchDataset
from reglab.data.sources import train_eval_index, training_subset
from reglab.errors import ConfigError

SPLIT_KEYS = {"train": "n_train", "val": "n_val", "test": "n_test"}
MAX_FEATURES = 100_000  # columns are drawn one block at a time up to here


class SparseLogisticDataModule(ClassificationDataModule):
    input_kind = "features"

    def __init__(self, n_features: int = 100, n_relevant: int = 1, n_train: int = 70, n_val: int = 30,
                 n_test: int = 2000, signal: float = 10.0, data_seed: int | None = None, **shared):
        super().__init__(**shared)
        self.n_features = check_int("n_features", n_features)
        self.n_relevant = check_int("n_relevant", n_relevant)
        if self.n_relevant > self.n_features:
            raise ConfigError(f"data.n_relevant={n_relevant}: must be <= data.n_features={n_features}")
        if self.n_features > MAX_FEATURES:
            raise ConfigError(f"data.n_features={n_features}: at most {MAX_FEATURES}")
        self.sizes = {split: check_int(key, value) for (split, key), value in
                      zip(SPLIT_KEYS.items(), (n_train, n_val, n_test))}
        if not float(signal) > 0:
            raise ConfigError(f"data.signal={signal!r}: must be > 0")
        self.signal = float(signal)
        self.data_seed = self.seed if data_seed is None else check_int("data_seed", data_seed, minimum=0)
        self.feature_names = [f"{'relevant' if j < self.n_relevant else 'irrelevant'}_{j}"
                              for j in range(self.n_features)]

    def draw(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        rows = sum(self.sizes.values())
        # The label noise first, then column by column: feature j's values, and every label, are the same
        # whatever n_features is (more features only add irrelevant columns).
        noise = torch.rand(rows, generator=generator)
        x = torch.cat([torch.randn(rows, 1, generator=generator) for _ in range(self.n_features)], dim=1)
        theta = torch.zeros(self.n_features)
        theta[:self.n_relevant] = self.signal / self.n_relevant ** 0.5
        labels = (noise < torch.sigmoid(x @ theta)).long()
        splits, start = {}, 0
        for split, size in self.sizes.items():
            splits[split] = (x[start:start + size], labels[start:start + size])
            start += size
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        splits = self.draw()
        index = training_subset(splits["train"][1], self.train_size, self.subset_seed)
        if index is not None:
            splits["train"] = tuple(t[index] for t in splits["train"])
        train = splits["train"]
        eval_index = train_eval_index(len(train[1]), self.train_eval_size)
        splits["train_eval"] = (train[0][eval_index], train[1][eval_index])
        self.splits, self._test_split = splits, "test"

    def batch_dataset(self, name: str) -> TensorBatchDataset:
        return TensorBatchDataset(*self.splits[name])

    @property
    def model_kwargs(self) -> dict:
        return {"n_features": self.n_features, "num_classes": 2}
