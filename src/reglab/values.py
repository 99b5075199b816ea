"""Checks of a composed config's values that need nothing heavy imported (no torch, no Lightning), so a bad value
is one line about a second after the command, not after the ten seconds the stack takes to import.

The value rules (``Rule``) are defined here; a regularizer class declares which of them each of its fields
follows (``Regularizer.rules``), and that declaration is checked as it is built."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from omegaconf import DictConfig

from reglab.errors import ConfigError, is_number
from reglab.identity import TOP_LEVEL_KEYS  # conf/train.yaml's keys, declared once (an experiment may add more)


@dataclass(frozen=True)
class Rule:
    """A value rule: ``rule(key, value)`` raises a one-line ConfigError naming the key, or returns. Null passes
    unless ``required`` (null: the default behaviour, such as a model's own dropout rates)."""

    holds: Callable[[float], bool]
    says: str  # what the value must be, as the error says it
    required: bool = False

    def __call__(self, key: str, value) -> None:
        if value is None and not self.required:
            return
        if not (is_number(value) and self.holds(value)):  # also refuses NaN, strings and booleans
            raise ConfigError(f"{key}={value!r}: {self.says}")

    def not_null(self) -> Rule:
        return replace(self, required=True)


@dataclass(frozen=True)
class OneOf:
    """The value is one of ``allowed``."""

    allowed: tuple

    def __call__(self, key: str, value) -> None:
        if value not in self.allowed:
            raise ConfigError(f"{key}={value!r}: allowed {list(self.allowed)}")


@dataclass(frozen=True)
class EachValue:
    """A mapping (``rates: {conv: 0.1, fc: 0.5}``) whose every value passes ``rule``, null included."""

    rule: Rule

    def __call__(self, key: str, value) -> None:
        for name, item in dict(value or {}).items():
            self.rule.not_null()(f"{key}.{name}", item)


non_negative = Rule(lambda v: v >= 0, "must be a number >= 0")
positive = Rule(lambda v: v > 0, "must be a number > 0")
dropout_rate = Rule(lambda v: 0.0 <= v < 1.0, "a dropout rate must be in [0, 1)")
fraction = Rule(lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
below_one = Rule(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")


def check_command_line_keys() -> None:
    """A top-level key added on the command line (``+seeed=3``) that no config declares is a typo, not a setting."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0]
        if key.startswith("+") and "." not in key and key.lstrip("+") not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{key.lstrip('+')}: not a config key (a typo?); top-level keys are "
                              f"{sorted(TOP_LEVEL_KEYS)}, and a study file may declare more")


def check_early(cfg: DictConfig) -> None:
    """The values that need no import: top-level keys, the seed, the epoch budget, the test checkpoint, the
    learning rate, a study's report section and the batch size. (A regularizer's values are checked by the
    rules its class declares, when the pre-flight builds it next: reglab.regularizers.base.)"""
    check_command_line_keys()
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
        raise ConfigError(f"seed={seed!r}: must be an integer in [0, 2**32)")
    trainer = cfg.get("trainer") or {}
    epochs, steps = trainer.get("max_epochs", 1), trainer.get("max_steps", -1)
    if not isinstance(epochs, int) or isinstance(epochs, bool):
        raise ConfigError(f"trainer.max_epochs={epochs!r}: must be an integer >= 1")
    if epochs < 1 and not (epochs == -1 and isinstance(steps, int) and steps > 0):
        raise ConfigError(f"trainer.max_epochs={epochs}: must be >= 1 (or -1 with trainer.max_steps > 0: a step "
                          "budget)")
    every = cfg.get("checkpoint_every_n_steps", 0)
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ConfigError(f"checkpoint_every_n_steps={every!r}: must be an integer >= 0 (0: only at epoch ends)")
    if cfg.get("test_ckpt") not in ("last", "best"):
        raise ConfigError(f"test_ckpt={cfg.get('test_ckpt')!r}: allowed ['last', 'best']")
    positive("optim.lr", (cfg.get("optim") or {}).get("lr"))
    if cfg.get("report") is not None:  # a study's report section: checked now, not when the report is made
        from omegaconf import OmegaConf

        from reglab.report.declared import check_declaration

        report = cfg.report
        check_declaration(cfg.get("study"), OmegaConf.to_container(report, resolve=True)
                          if OmegaConf.is_config(report) else report, f"study {cfg.get('study')}")
    batch_size = (cfg.get("data") or {}).get("batch_size")
    if batch_size is not None and batch_size != "full" and (not isinstance(batch_size, int)
                                                            or isinstance(batch_size, bool) or batch_size < 1):
        raise ConfigError(f"data.batch_size={batch_size!r}: must be > 0, or 'full' (the whole training split: "
                          "full-batch optimizers such as optim=lbfgs)")
