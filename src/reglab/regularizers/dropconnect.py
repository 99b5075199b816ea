"""DropConnect (Wan et al. 2013): in training, each weight of a Linear layer is dropped with probability p (one
Bernoulli mask per weight and step, shared by the batch) and the kept ones are scaled by 1 / (1 - p); at
inference the layer uses its weights as they are, which is the expectation of the masked layer.

Dropout zeroes a layer's outputs; DropConnect zeroes its connections. The masks come from a generator of the
regularizer's own, seeded from the run's seed, whose state travels in checkpoints (``state_dict``): a resumed
run draws the masks it would have drawn."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from reglab.errors import ConfigError
from reglab.regularizers.base import Regularizer
from reglab.values import dropout_rate

if TYPE_CHECKING:  # torch is imported when the regularizer runs: a bad reg.dropconnect.p is refused before it loads
    import torch
    from torch import nn


class DropConnect(Regularizer):
    name = "dropconnect"
    supports_warmup = False
    rules = {"p": dropout_rate.not_null()}

    def __init__(self, p: float = 0.5, modules=("head.*",)):
        super().__init__()
        self.p = float(p)
        self.module_patterns = list(modules or ())
        self._layers: list[nn.Linear] = []
        self._generator: torch.Generator | None = None
        self._pending_state: torch.Tensor | None = None

    def configure(self, model: nn.Module) -> None:
        from torch import nn

        self._layers = [module for name, module in model.named_modules()
                       if isinstance(module, nn.Linear) and any(fnmatchcase(name, p) for p in self.module_patterns)]
        if not self._layers:
            linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
            raise ConfigError(f"reg.{self.name}.modules={self.module_patterns}: match no Linear layer of the model "
                              f"(its Linear layers: {', '.join(linears)[:300] or 'none'})")
        # The forward is swapped on these instances only: parameter names, state dicts and checkpoints are untouched.
        for layer in self._layers:
            layer.forward = self._masked_forward(layer)

    def _masked_forward(self, layer: nn.Linear):
        import torch
        import torch.nn.functional as F

        def forward(inputs: torch.Tensor) -> torch.Tensor:
            if not layer.training or self.p == 0.0:
                return F.linear(inputs, layer.weight, layer.bias)
            keep = torch.empty_like(layer.weight).bernoulli_(1.0 - self.p, generator=self.masks(layer.weight.device))
            return F.linear(inputs, layer.weight * keep / (1.0 - self.p), layer.bias)

        return forward

    def masks(self, device: torch.device) -> torch.Generator:
        """The mask generator, made on the weights' device at the first masked step: seeded from torch's initial
        seed (the run's seed, set by seed_everything), or put back to a checkpoint's state."""
        import torch

        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(torch.initial_seed())
            if self._pending_state is not None:
                self._generator.set_state(self._pending_state)
                self._pending_state = None
        return self._generator

    def state_dict(self) -> dict:
        state = self._generator.get_state() if self._generator is not None else self._pending_state
        return {"generator": state} if state is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._generator, self._pending_state = None, state.get("generator")
