from reglab.regularizers.base import Regularizer, check_non_negative, sum_abs


class L1(Regularizer):
    """Lasso penalty added to the loss: strength * sum|w| (subgradient; no exact zeros)."""

    name = "l1"

    def __init__(self, strength: float = 1e-5, **selection):
        check_non_negative(self.name, "strength", strength)
        super().__init__(**selection)
        self.strength = float(strength)

    def penalty(self, model):
        return self.strength * sum_abs(self.params)
