from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from reglab.errors import ConfigError
from reglab.regularizers.base import Regularizer
from reglab.values import non_negative

if TYPE_CHECKING:
    import torch


class Activity(Regularizer):
    """Keras's activity regularizer: a penalty on the outputs of the modules whose names match ``modules``,

        (l1 * sum|a| + l2 * sum a^2) / batch_size      per watched module, summed,

    divided by the batch size as Keras does, so the strength does not change with the batch. Forward hooks
    are attached right before each training forward pass and removed when the penalty is read, so nothing
    stays on the model between steps, and validation / test / inference passes are never watched."""

    name = "activity"
    rules = {"l1": non_negative, "l2": non_negative}

    def __init__(self, modules=("features.*",), l1: float = 0.0, l2: float = 1e-5, warmup: str = "constant",
                 warmup_epochs: float = 0.0):
        super().__init__(warmup=warmup, warmup_epochs=warmup_epochs)
        self.module_patterns = list(modules or ())
        self.l1, self.l2 = float(l1), float(l2)
        self.watched: list[tuple[str, torch.nn.Module]] = []
        self._handles: list = []
        self._terms: list[torch.Tensor] = []

    def configure(self, model) -> None:
        self.watched = [(name, module) for name, module in model.named_modules()
                        if name and any(fnmatchcase(name, pattern) for pattern in self.module_patterns)]
        if not self.watched:
            names = ", ".join(name for name, _ in model.named_modules() if name)
            raise ConfigError(f"reg.{self.name}.modules={self.module_patterns}: match no module of the model "
                              f"(its modules: {names[:300]})")

    def _record(self, module, inputs, output) -> None:
        activation = output[0] if isinstance(output, (tuple, list)) else output
        term = activation.new_zeros(())
        if self.l1:
            term = term + self.l1 * activation.abs().sum()
        if self.l2:
            term = term + self.l2 * activation.pow(2).sum()
        self._terms.append(term / activation.shape[0])

    def before_forward(self, model) -> None:
        self.remove_hooks()
        self._handles = [module.register_forward_hook(self._record) for _, module in self.watched]

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def penalty(self, model):
        import torch  # here, not at import: a bad reg.activity.l1 / l2 is refused before torch loads

        self.remove_hooks()
        terms, self._terms = self._terms, []
        if not terms:  # no watched forward pass since the last read (e.g. asked outside training)
            return torch.zeros((), device=next(model.parameters()).device)
        return torch.stack(terms).sum()
