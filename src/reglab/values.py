"""Checks of a composed config's values that need nothing heavy imported (no torch, no Lightning), so a bad value
is one line about a second after the command, not after the ten seconds the stack takes to import.

The rules are defined here once; the regularizer classes apply the same ones when they are built (they remain
the authority: this early pass covers the keys every regularizer spells the same way)."""

from __future__ import annotations

from omegaconf import DictConfig

from reglab.errors import ConfigError, is_number
from reglab.identity import TOP_LEVEL_KEYS  # conf/train.yaml's keys, declared once (an experiment may add more)


def non_negative(key: str, value) -> None:
    if value is not None and not (is_number(value) and value >= 0):  # also rejects NaN and strings
        raise ConfigError(f"{key}={value!r}: must be a number >= 0")


def positive(key: str, value) -> None:
    if value is not None and not (is_number(value) and value > 0):
        raise ConfigError(f"{key}={value!r}: must be a number > 0")


def dropout_rate(key: str, value) -> None:
    if value is not None and not (is_number(value) and 0.0 <= float(value) < 1.0):
        raise ConfigError(f"{key}={value!r}: a dropout rate must be in [0, 1)")


def fraction(key: str, value) -> None:
    if value is not None and not (is_number(value) and 0.0 <= float(value) <= 1.0):
        raise ConfigError(f"{key}={value!r}: must be in [0, 1]")


def below_one(key: str, value) -> None:
    if value is not None and not (is_number(value) and 0.0 <= float(value) < 1.0):
        raise ConfigError(f"{key}={value!r}: must be in [0, 1)")


# reg.<name>.<key>: the rule for the keys regularizers share by name.
REG_RULES = {"strength": non_negative, "l1_strength": non_negative, "l2_strength": non_negative,
             "decay": non_negative, "l1": non_negative, "l2": non_negative, "warmup_epochs": non_negative,
             "p": dropout_rate, "alpha": fraction, "max_norm": positive, "smoothing": below_one}


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
    regularizers' shared keys, the learning rate and the batch size."""
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
    for name, entry in (cfg.get("reg") or {}).items():
        for key, rule in REG_RULES.items() if entry is not None else ():
            if key in entry:
                rule(f"reg.{name}.{key}", entry[key])
        for site, rate in dict((entry or {}).get("rates") or {}).items():
            dropout_rate(f"reg.{name}.rates.{site}", rate)
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
