"""The regularizer interface and the one rule for which parameters a regularizer touches.

A regularizer acts at up to five points of a training step and implements only those it needs:

- ``configure(model)``: once, before training (cache parameter lists, set dropout rates).
- ``before_forward(model)``: before each training forward pass (attach forward hooks to watch activations).
- ``penalty(model) -> Tensor``: a term added to the loss (and detach what ``before_forward`` attached).
- ``param_groups(groups) -> groups``: reshape optimizer parameter groups (decoupled decay).
- ``after_step(model, lr, optimizer)``: a projection / proximal step after each optimizer step (``optimizer``:
  the one that just stepped, for a step in its own metric; see reglab.optim.adaptive_step_scales).
- ``state_dict() -> dict`` / ``load_state_dict(state)``: a regularizer with state of its own (an RNG, a running
  statistic) returns it here; it travels in every checkpoint and comes back on resume (tensors and plain
  Python only: checkpoints load with ``weights_only=True``).

One optional attribute: ``label_smoothing``, the smoothing of the training cross-entropy (reg=label_smoothing).

The LightningModule calls these without knowing which regularizers exist.
"""

from __future__ import annotations

import contextvars
import inspect
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Iterable, Sequence

from reglab.errors import ConfigError
from reglab.values import OneOf, non_negative

if TYPE_CHECKING:  # torch is imported where a regularizer runs, not where its config is checked
    import torch
    from torch import nn


def is_selected(name: str, param: torch.Tensor, include: Sequence[str] = (), exclude: Sequence[str] = (),
                skip_names: Iterable[str] = (), only: Sequence[str] = ()) -> bool:
    """The shared parameter rule (timm's): weights yes; biases and norm parameters (ndim <= 1) and
    names the model lists in ``no_weight_decay()`` no. ``include`` patterns add, ``exclude`` patterns
    remove, and exclude wins. ``only`` (Keras's per-layer regularizers) restricts the regularizer to the names
    it matches, whatever their kind: ``only=["head.*"]`` is every head parameter, ``["*.bias"]`` every bias."""
    if any(fnmatchcase(name, pattern) for pattern in exclude):
        return False
    if only:
        return any(fnmatchcase(name, pattern) for pattern in only)
    if any(fnmatchcase(name, pattern) for pattern in include):
        return True
    return param.ndim > 1 and name not in set(skip_names)


def model_skip_names(model: nn.Module) -> set[str]:
    """Parameter names a model asks to keep out of penalties by default (e.g. embeddings)."""
    no_decay = getattr(model, "no_weight_decay", None)
    return set(no_decay()) if callable(no_decay) else set()


def select_parameters(model: nn.Module, include: Sequence[str] = (), exclude: Sequence[str] = (),
                      only: Sequence[str] = ()) -> list[tuple[str, nn.Parameter]]:
    skip = model_skip_names(model)
    return [(name, p) for name, p in model.named_parameters()
            if p.requires_grad and is_selected(name, p, include, exclude, skip, only)]


WARMUPS = ("constant", "linear")
# The config key a regularizer is being built under (build_regularizers): its checks run in __init__, before
# anyone could set the name, and must name the key as configured (reg.l1_head.strength), not the class's default.
CONFIG_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("reglab_regularizer_key", default=None)


class Regularizer:
    """Base class. Subclasses set ``name`` and override only the hooks they use.

    A regularizer's fields are its constructor's keyword arguments, and ``rules`` declares the value rule of
    each (reglab.values: ``{"strength": non_negative}``). The rules of a class and of its bases are checked
    when it is built, before its ``__init__`` runs, and name the key as configured (``reg.l1_head.strength``);
    ``__init__`` checks only what involves several fields at once. The docs' table of fields is checked against
    the same constructors (tests/test_regularizers.py).

    Every regularizer takes the selection fields ``include`` / ``exclude`` / ``only`` (see ``is_selected``) and
    a strength schedule: ``warmup: linear`` ramps its penalty (and a prox threshold) from 0 to full strength
    over ``warmup_epochs`` epochs, step by step; ``constant`` (the default) is full strength from the start."""

    name = "regularizer"
    supports_warmup = True  # False where the strength is not a penalty or prox threshold (decay, max-norm)
    rules = {"warmup": OneOf(WARMUPS), "warmup_epochs": non_negative}

    def __new__(cls, *args, **kwargs):
        regularizer = super().__new__(cls)
        key = CONFIG_KEY.get()
        if key is not None:
            regularizer.name = key  # the key as configured, for the rules' errors and __init__'s
        fields = [name for name in inspect.signature(cls.__init__).parameters][1:]
        cls.check_fields(regularizer.name, dict(zip(fields, args)) | kwargs)
        return regularizer

    @classmethod
    def declared_rules(cls) -> dict:
        """Field -> rule, from this class and its bases (a subclass's rule for a field wins)."""
        rules: dict = {}
        for klass in reversed(cls.__mro__):
            rules.update(vars(klass).get("rules") or {})
        return rules

    @classmethod
    def check_fields(cls, key: str, values: dict) -> None:
        """Each given field's value against its declared rule, as ``reg.<key>.<field>``."""
        rules = cls.declared_rules()
        for field, value in values.items():
            if field in rules:
                rules[field](f"reg.{key}.{field}", value)

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = (), only: Sequence[str] = (),
                 warmup: str = "constant", warmup_epochs: float = 0.0):
        self.include = list(include or ())
        self.exclude = list(exclude or ())
        self.only = list(only or ())
        if warmup != "constant" and not self.supports_warmup:
            raise ConfigError(f"reg.{self.name}.warmup={warmup!r}: warmups apply to penalties and prox steps; "
                              f"{self.name} allows only 'constant'")
        self.warmup, self.warmup_epochs = warmup, float(warmup_epochs)
        self.params: list[nn.Parameter] = []
        self.param_names: list[str] = []

    def strength_scale(self, progress: float) -> float:
        """The fraction of full strength at ``progress`` epochs into training (fractional within an epoch)."""
        if self.warmup == "constant" or self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, progress / self.warmup_epochs)

    def configure(self, model: nn.Module) -> None:
        selected = select_parameters(model, self.include, self.exclude, self.only)
        if not selected:
            raise ConfigError(f"reg.{self.name}: include/exclude/only patterns select no parameters of the model "
                              f"(its parameters: {', '.join(n for n, _ in model.named_parameters())[:300]})")
        self.param_names = [name for name, _ in selected]
        self.params = [p for _, p in selected]

    def before_forward(self, model: nn.Module) -> None:
        return None

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def param_groups(self, groups: list[dict]) -> list[dict]:
        return groups

    def after_step(self, model: nn.Module, lr: float, optimizer=None) -> None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    @property
    def needs_decoupled_optimizer(self) -> bool:
        """Whether the optimizer must apply its groups' ``weight_decay`` as decoupled decay (checked against
        ``optim`` in pre-flight): by default, whether it reshapes the optimizer groups (``param_groups``)."""
        return self.overrides("param_groups")

    @classmethod
    def overrides(cls, hook: str) -> bool:
        return getattr(cls, hook) is not getattr(Regularizer, hook)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                           if not k.startswith("_") and k not in ("params", "param_names", "watched"))
        return f"{type(self).__name__}({fields})"


def weighted_l1_l2(params: list[torch.Tensor], l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """l1 * sum|w| + l2 * sum(w^2): the L1, L2 and elastic-net penalties (reglab.regularizers.fused_penalty)."""
    from reglab.regularizers.fused_penalty import WeightedL1L2

    return WeightedL1L2.apply(float(l1), float(l2), *params)
