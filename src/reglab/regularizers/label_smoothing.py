from reglab.regularizers.base import Regularizer
from reglab.values import below_one


class LabelSmoothing(Regularizer):
    """Label smoothing (Szegedy et al. 2016): the training cross-entropy targets 1 - smoothing on the true class
    plus smoothing / K on every class (torch's ``cross_entropy(label_smoothing=)``). Validation and test losses
    stay the plain cross-entropy, so NLL and calibration are measured against the true labels."""

    name = "label_smoothing"
    supports_warmup = False
    rules = {"smoothing": below_one}

    def __init__(self, smoothing: float = 0.1):
        super().__init__()
        self.label_smoothing = float(smoothing)

    def configure(self, model) -> None:
        return None  # acts on the targets, not on parameters
