from reglab.errors import ConfigError
from reglab.regularizers.base import Regularizer


class LabelSmoothing(Regularizer):
    """Label smoothing (Szegedy et al. 2016): the training cross-entropy targets 1 - smoothing on the true class
    plus smoothing / K on every class (torch's ``cross_entropy(label_smoothing=)``). Validation and test losses
    stay the plain cross-entropy, so NLL and calibration are measured against the true labels."""

    name = "label_smoothing"
    supports_warmup = False

    def __init__(self, smoothing: float = 0.1):
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"reg.label_smoothing.smoothing={smoothing!r}: must be in [0, 1)")
        super().__init__()
        self.label_smoothing = float(smoothing)

    def configure(self, model) -> None:
        return None  # acts on the targets, not on parameters
