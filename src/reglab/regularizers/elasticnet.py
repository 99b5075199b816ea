from reglab.errors import ConfigError
from reglab.regularizers.base import Regularizer, weighted_l1_l2
from reglab.values import fraction, non_negative


class ElasticNet(Regularizer):
    """Elastic net (Zou & Hastie 2005): strength * (alpha * sum|w| + (1 - alpha) * sum(w^2)),
    or, given directly, l1_strength * sum|w| + l2_strength * sum(w^2)."""

    name = "elasticnet"
    rules = {"strength": non_negative, "alpha": fraction, "l1_strength": non_negative,
             "l2_strength": non_negative}

    def __init__(self, strength: float | None = 1e-4, alpha: float | None = 0.5,
                 l1_strength: float | None = None, l2_strength: float | None = None,
                 **selection):
        direct = l1_strength is not None or l2_strength is not None
        if direct:
            if l1_strength is None or l2_strength is None:
                raise ConfigError(f"reg.{self.name}: give both l1_strength and l2_strength, or neither")
        else:
            if strength is None or alpha is None:
                raise ConfigError(f"reg.{self.name}: give strength and alpha, or l1_strength and l2_strength")
            l1_strength, l2_strength = strength * alpha, strength * (1.0 - alpha)
        super().__init__(**selection)
        self.l1_strength = float(l1_strength)
        self.l2_strength = float(l2_strength)

    def penalty(self, model):
        return weighted_l1_l2(self.params, self.l1_strength, self.l2_strength)
