"""A plain VGG-style CNN with named dropout sites, for any image shape the datamodule declares.

    stem:     [conv3x3 -> BN -> act]                      (stem_width > 0)
    stage i:  [conv3x3 -> BN -> act] x convs_per_stage -> Dropout2d ("conv" site) -> maxpool 2x2
    head:     global avg pool (or flatten) -> [Linear -> act] -> Dropout ("fc" site) -> Linear(num_classes)

``pool: first`` moves each stage's max-pool to right after its first conv (the airbench / ResNet-9 layout):
the stage's later convs then run on a quarter of the pixels. ``channels_last`` keeps activations in NHWC,
which tensor-core convolutions (bf16 on a GPU) prefer. ``global_pool: none`` flattens the last feature map into
the classifier instead of averaging it (the classic VGG / Srivastava et al. head): many fully connected weights,
which is where a small training set gets memorized and where fc dropout and L2 have the most to do.

Every dropout site starts at p=0; only the dropout regularizer sets rates, so reg=none is none.
"""

from __future__ import annotations

import torch
from torch import nn

from reglab.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


POOLS = ("end", "first")
GLOBAL_POOLS = ("avg", "none")


def conv_stage(in_channels: int, out_channels: int, convs: int, activation: str, batchnorm: bool,
               pool: bool, pool_first: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1,
                                bias=not batchnorm))
        if pool and pool_first and i == 0:
            layers.append(nn.MaxPool2d(2))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(ACTIVATIONS[activation]())
    layers.append(nn.Dropout2d(p=0.0))
    if pool and not pool_first:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class CNN(nn.Module):
    input_kind = "image"
    # What plain reg=dropout sets (reg.dropout.p null): Srivastava et al.'s 0.5 on the fully connected layer, and no
    # conv dropout. Their 0.1-0.25 on conv layers is element-wise; these conv sites drop whole channels
    # (Dropout2d), far stronger noise at the same p, and BatchNorm already regularizes the convs. On the CIFAR-10
    # CPU study (validation, 30 epochs) channel-wise 0.05 cost 1.5 pt and 0.1 held train accuracy at 69%.
    dropout_defaults = {"conv": 0.0, "fc": 0.5}

    def __init__(self, in_channels: int, image_size: int, num_classes: int,
                 widths: list[int] = (32, 64, 128), convs_per_stage: int = 2, activation: str = "relu",
                 batchnorm: bool = True, fc_hidden: int = 256, stem_width: int = 0, pool: str = "end",
                 channels_last: bool = False, global_pool: str = "avg"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation={activation!r}: allowed {sorted(ACTIVATIONS)}")
        if not widths or any(int(w) < 1 for w in widths):
            raise ConfigError(f"model.widths={list(widths)!r}: need at least one stage, each width >= 1")
        if convs_per_stage < 1:
            raise ConfigError(f"model.convs_per_stage={convs_per_stage!r}: must be >= 1")
        if fc_hidden < 0:
            raise ConfigError(f"model.fc_hidden={fc_hidden!r}: must be >= 0")
        if stem_width < 0:
            raise ConfigError(f"model.stem_width={stem_width!r}: must be >= 0 (0: no stem)")
        if pool not in POOLS:
            raise ConfigError(f"model.pool={pool!r}: allowed {list(POOLS)}")
        if global_pool not in GLOBAL_POOLS:
            raise ConfigError(f"model.global_pool={global_pool!r}: allowed {list(GLOBAL_POOLS)}")
        stages, channels, size = [], in_channels, image_size
        if stem_width:
            stages.append(conv_stage(channels, int(stem_width), 1, activation, batchnorm, pool=False)[:-1])
            channels = int(stem_width)
        for width in widths:
            pooled = size >= 2  # pool while there is something left to pool
            stages.append(conv_stage(channels, int(width), convs_per_stage, activation, batchnorm, pooled,
                                     pool_first=pool == "first"))
            channels, size = int(width), size // 2 if pooled else size
        self.features = nn.Sequential(*stages)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        if global_pool == "avg":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.pool, channels = nn.Flatten(), channels * size * size
        hidden = [nn.Linear(channels, fc_hidden), ACTIVATIONS[activation]()] if fc_hidden else []
        self.head = nn.Sequential(*hidden, nn.Dropout(p=0.0), nn.Linear(fc_hidden or channels, num_classes))

    def no_weight_decay(self) -> set[str]:
        return set()  # biases and BatchNorm are already out by the shared rule (ndim <= 1); nothing else is

    def dropout_sites(self) -> dict[str, list[nn.Module]]:
        return {
            "conv": [m for m in self.features.modules() if isinstance(m, nn.Dropout2d)],
            "fc": [m for m in self.head.modules() if isinstance(m, nn.Dropout)],
        }

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.pool(self.features(x)))
