from reglab.regularizers.base import Regularizer, is_selected, model_skip_names
from reglab.values import non_negative


class WeightDecay(Regularizer):
    """Decoupled weight decay (Loshchilov & Hutter 2019): w <- w - lr * decay * w, done by the
    optimizer (AdamW, Adam(decoupled_weight_decay=True), SGDW). Nothing enters the loss.

    It splits each optimizer group into a decayed part (the shared parameter rule) and an
    undecayed part (biases, norms, excluded names)."""

    name = "weight_decay"
    supports_warmup = False
    rules = {"decay": non_negative}

    def __init__(self, decay: float = 5e-2, **selection):
        super().__init__(**selection)
        self.decay = float(decay)
        self._skip: set[str] = set()

    def configure(self, model) -> None:
        super().configure(model)
        self._skip = model_skip_names(model)

    def param_groups(self, groups):
        split = []
        for group in groups:
            named = list(zip(group["names"], group["params"]))
            decayed = [(n, p) for n, p in named if is_selected(n, p, self.include, self.exclude, self._skip, self.only)]
            kept = [(n, p) for n, p in named if not is_selected(n, p, self.include, self.exclude, self._skip, self.only)]
            for part, decay in ((decayed, self.decay), (kept, group.get("weight_decay", 0.0))):
                if part:
                    split.append({**group, "names": [n for n, _ in part], "params": [p for _, p in part],
                                  "weight_decay": decay})
        return split
