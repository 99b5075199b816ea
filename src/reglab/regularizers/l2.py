from reglab.regularizers.base import Regularizer, weighted_l1_l2
from reglab.values import non_negative


class L2(Regularizer):
    """Coupled L2 added to the loss: strength * sum(w^2). No 1/2 factor, so the gradient is
    2 * strength * w; under plain SGD this equals weight decay of 2 * strength."""

    name = "l2"
    rules = {"strength": non_negative}

    def __init__(self, strength: float = 5e-4, **selection):
        super().__init__(**selection)
        self.strength = float(strength)

    def penalty(self, model):
        return weighted_l1_l2(self.params, l2=self.strength)
