from reglab.regularizers.base import Regularizer, weighted_l1_l2
from reglab.values import non_negative


class L1(Regularizer):
    """Lasso penalty added to the loss: strength * sum|w| (subgradient; no exact zeros)."""

    name = "l1"
    rules = {"strength": non_negative}

    def __init__(self, strength: float = 1e-5, **selection):
        super().__init__(**selection)
        self.strength = float(strength)

    def penalty(self, model):
        return weighted_l1_l2(self.params, l1=self.strength)
