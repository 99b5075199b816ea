"""Kim (2014)'s CNN for sentence classification, CNN-rand: randomly initialised word embeddings (U(-0.25, 0.25), as
Kim's), one convolution layer of several window widths, max-over-time pooling, dropout, a linear classifier.

    tokens (N, L) -> features.embed: Embedding(vocab, 300), pad = 0 vector
                  -> features.convs: for w in (3, 4, 5): Conv1d(300, 100, w, padding w-1) -> ReLU -> max over time
                  -> concat (N, 300) -> Dropout ("penultimate") -> head: Linear(300, num_classes)

The convolution is "wide" (w-1 zero vectors on each side, as Kim pads), and windows that hold only padding are
masked out of the max, so a sentence's output never depends on how much padding its batch carries. Kim's other
two ingredients are reglab regularizers, not model code: dropout (``reg=dropout``: this model recommends 0.5 at
its one site) and a max-norm of 3 on the classifier's weight vectors (``reg=maxnorm``, ``only: [head.weight]``);
``reg=dropout_maxnorm`` is the pair."""

from __future__ import annotations

import torch
from torch import nn

from reglab.errors import ConfigError


class TextCNN(nn.Module):
    input_kind = "tokens"
    dropout_defaults = {"penultimate": 0.5}  # Kim's rate

    def __init__(self, vocab_size: int, num_classes: int, max_length: int, pad_id: int = 0, embed_dim: int = 300,
                 windows: tuple[int, ...] = (3, 4, 5), feature_maps: int = 100):
        super().__init__()
        windows = list(windows or ())
        if not windows or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in windows):
            raise ConfigError(f"model.windows={windows!r}: must be a list of window widths >= 1, e.g. [3, 4, 5]")
        for key, value in (("embed_dim", embed_dim), ("feature_maps", feature_maps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key}={value!r}: must be an integer >= 1")
        self.windows = windows
        self.features = nn.ModuleDict({
            "embed": nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id),
            "convs": nn.ModuleList(nn.Conv1d(embed_dim, feature_maps, w, padding=w - 1) for w in windows),
        })
        self.penultimate_drop = nn.Dropout(0.0)
        self.head = nn.Linear(feature_maps * len(windows), num_classes)
        with torch.no_grad():  # Kim's random vectors: U(-0.25, 0.25), about the spread of pretrained word2vec
            self.features["embed"].weight.uniform_(-0.25, 0.25)
            self.features["embed"].weight[pad_id].zero_()

    def no_weight_decay(self) -> set[str]:
        # Kim penalizes nothing but the output layer (by max-norm); the embedding table is kept out of penalties
        # by default, as in the Transformer (``include: ["features.embed.*"]`` adds it).
        return {"features.embed.weight"}

    def dropout_sites(self) -> dict[str, list[nn.Module]]:
        return {"penultimate": [self.penultimate_drop]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.features["embed"](input_ids).transpose(1, 2)  # (N, embed_dim, L)
        lengths = attention_mask.sum(1)
        pooled = []
        for width, conv in zip(self.windows, self.features["convs"]):
            maps = torch.relu(conv(x))  # (N, maps, L + width - 1); position t sees tokens t-width+1 .. t
            real = torch.arange(maps.shape[-1], device=maps.device)[None, :] < (lengths + width - 1)[:, None]
            pooled.append(maps.masked_fill(~real[:, None, :], 0.0).amax(-1))  # after ReLU, 0 is the floor
        return self.head(self.penultimate_drop(torch.cat(pooled, 1)))
