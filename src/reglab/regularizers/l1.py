from reglab.regularizers.base import Regularizer, check_non_negative, weighted_l1_l2


class L1(Regularizer):
    """Lasso penalty added to the loss: strength * sum|w| (subgradient; no exact zeros)."""

    name = "l1"

    def __init__(self, strength: float = 1e-5, **selection):
        check_non_negative(self.name, "strength", strength)
        super().__init__(**selection)
        self.strength = float(strength)

    def penalty(self, model):
        return weighted_l1_l2(self.params, l1=self.strength)
