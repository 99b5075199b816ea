"""Multinomial logistic regression: one Linear layer from the features to the classes, softmax in the loss.

    x (N, n_features), dense or sparse -> head: Linear(n_features, num_classes) -> logits

The weights start at zero, as a convex problem's solvers start: the L1 path then grows features in from nothing,
and a run's result depends on its regularizer and data, not on an initial draw. Every regularizer applies to
``head.weight`` by the shared rule (the bias, ndim 1, is never penalized)."""

from __future__ import annotations

import torch
from torch import nn

from reglab.errors import ConfigError


class LinearClassifier(nn.Module):
    input_kind = "features"

    def __init__(self, n_features: int, num_classes: int, bias: bool = True):
        super().__init__()
        if not isinstance(bias, bool):
            raise ConfigError(f"model.bias={bias!r}: must be true or false")
        self.head = nn.Linear(n_features, num_classes, bias=bias)
        with torch.no_grad():
            self.head.weight.zero_()
            if bias:
                self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_sparse:  # bag-of-words batches stay sparse (data=sst2_bow): one sparse x dense product
            logits = torch.sparse.mm(x, self.head.weight.t())
            return logits if self.head.bias is None else logits + self.head.bias
        return self.head(x)

    def feature_weights(self) -> torch.Tensor:
        """(num_classes, n_features): what results.json lists per feature (reglab.module.feature_record)."""
        return self.head.weight

    def dropout_sites(self) -> dict[str, list[nn.Module]]:
        return {}  # a linear model has no hidden units to drop

    def no_weight_decay(self) -> set[str]:
        return set()
