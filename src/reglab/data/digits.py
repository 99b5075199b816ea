"""scikit-learn's bundled 8x8 handwritten digits: 1,797 real images, no network. The quickstart:
it overfits within seconds, so regularization effects show fast."""

from __future__ import annotations

import torch

from reglab.data.image_tensors import ImageSplits, ImageTensorDataModule
from reglab.errors import ConfigError


class DigitsDataModule(ImageTensorDataModule):
    def __init__(self, val_fraction: float = 0.2, test_fraction: float = 0.2, split_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: "
                              "each must be in (0, 1) and together < 1")
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def load_splits(self) -> ImageSplits:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]
        labels = torch.from_numpy(digits.target).long()
        index = list(range(len(labels)))
        rest, test = train_test_split(index, test_size=self.test_fraction, random_state=self.split_seed,
                                      stratify=labels)
        train, val = train_test_split(rest, test_size=self.val_fraction / (1 - self.test_fraction),
                                      random_state=self.split_seed, stratify=labels[rest])
        pick = lambda idx: (images[idx], labels[idx])  # noqa: E731
        return ImageSplits(pick(train), pick(val), pick(test), [str(d) for d in range(10)])
