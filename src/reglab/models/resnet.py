"""Pre-activation ResNet-18 for CIFAR-sized images (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    stem:     conv3x3, stride 1, no max-pool (CIFAR style: a 32x32 image has no pixels to spare)
    stage i:  2 x PreActBlock(width * [1, 2, 4, 8][i]), first block of stages 2-4 at stride 2
    block:    BN -> ReLU -> conv3x3 -> BN -> ReLU -> Dropout ("block" site) -> conv3x3, + shortcut
    head:     BN -> ReLU -> global avg pool -> Dropout ("fc" site) -> Linear(num_classes)

With width 64 on 3x32x32 input and 10 classes: 11,172,170 parameters (tests/test_resnet.py counts them by hand).
The often-quoted 11,171,146 is the same network without the final BN, which pre-activation needs: the last block
ends in a conv, so without it the pooled features would be neither normalized nor rectified.

Every dropout site starts at p=0; only the dropout regularizer sets rates, so reg=none is none.
"""

from __future__ import annotations

from torch import nn

from reglab.errors import ConfigError

STAGE_MULTIPLIERS = (1, 2, 4, 8)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)  # BN follows: no bias


class PreActBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # Element-wise, as in Zagoruyko & Komodakis's wide ResNets (F.dropout between the convs), so their rates
        # mean the same here; a Dropout2d drops whole channels, far stronger noise at the same p.
        self.dropout = nn.Dropout(p=0.0)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x):
        out = self.bn1(x).relu()
        # A projection reads the pre-activated input (He et al. 2016, fig. 4e): the BN-ReLU is shared with conv1.
        # The identity path stays untouched, which is the point of pre-activation.
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(self.bn2(out).relu()))
        return out + skip


class PreActResNet18(nn.Module):
    input_kind = "image"
    # What plain reg=dropout sets (reg.dropout.p null): Zagoruyko & Komodakis's 0.3 between the convs of each
    # block, their best rate on CIFAR. No fc dropout: the head is one linear layer on 8*width pooled features,
    # with few weights to memorize with, and neither residual-network paper drops there.
    dropout_defaults = {"block": 0.3, "fc": 0.0}

    def __init__(self, in_channels: int, image_size: int, num_classes: int, width: int = 64):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"model.width={width!r}: must be an integer >= 1")
        # image_size needs no check: 3x3 convs with padding 1 and a global pool accept any size, down to 1x1.
        channels = width
        stages: list[nn.Module] = [conv3x3(in_channels, channels)]
        for multiplier, stride in zip(STAGE_MULTIPLIERS, STAGE_STRIDES):
            out_channels = width * multiplier
            blocks = [PreActBlock(channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
                      for i in range(BLOCKS_PER_STAGE)]
            stages.append(nn.Sequential(*blocks))
            channels = out_channels
        stages += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(p=0.0),
                                  nn.Linear(channels, num_classes))

    def dropout_sites(self) -> dict[str, list[nn.Module]]:
        return {
            "block": [m.dropout for m in self.features.modules() if isinstance(m, PreActBlock)],
            "fc": [m for m in self.head if isinstance(m, nn.Dropout)],
        }

    def no_weight_decay(self) -> set[str]:
        return set()  # biases and BN parameters are already skipped by the shared rule (ndim <= 1)

    def forward(self, x):
        return self.head(self.features(x))
