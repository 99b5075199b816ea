import torch

from reglab.errors import ConfigError
from reglab.regularizers.base import Regularizer
from reglab.values import positive


class MaxNorm(Regularizer):
    """Max-norm constraint (Srivastava et al. 2014): after each optimizer step, every unit's incoming weight
    vector is rescaled to L2 norm <= max_norm. A unit is a row of a Linear weight (out, in) or an output
    channel of a conv weight (out, in, kh, kw): dim 0 in both."""

    name = "maxnorm"
    supports_warmup = False

    def __init__(self, max_norm: float = 3.0, **selection):
        if max_norm is None:
            raise ConfigError(f"reg.{self.name}.max_norm=None: must be a number > 0")
        positive(f"reg.{self.name}.max_norm", max_norm)
        super().__init__(**selection)
        self.max_norm = float(max_norm)

    @torch.no_grad()
    def after_step(self, model, lr: float, optimizer=None) -> None:
        for param in self.params:
            param.renorm_(2, 0, self.max_norm)
