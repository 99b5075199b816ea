from reglab.regularizers.base import Regularizer
from reglab.values import positive


class MaxNorm(Regularizer):
    """Max-norm constraint (Srivastava et al. 2014): after each optimizer step, every unit's incoming weight
    vector is rescaled to L2 norm <= max_norm. A unit is a row of a Linear weight (out, in) or an output
    channel of a conv weight (out, in, kh, kw): dim 0 in both."""

    name = "maxnorm"
    supports_warmup = False
    rules = {"max_norm": positive.not_null()}

    def __init__(self, max_norm: float = 3.0, **selection):
        super().__init__(**selection)
        self.max_norm = float(max_norm)

    def after_step(self, model, lr: float, optimizer=None) -> None:
        import torch  # here, not at import: a bad reg.maxnorm.max_norm is refused before torch loads

        with torch.no_grad():
            for param in self.params:
                param.renorm_(2, 0, self.max_norm)
