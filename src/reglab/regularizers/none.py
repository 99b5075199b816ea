from reglab.regularizers.base import Regularizer


class NoRegularizer(Regularizer):
    """Explicit 'no regularization' (reg=none is an empty list; this exists for code that wants an object)."""

    name = "none"

    def configure(self, model) -> None:
        return None
