"""Regularizer plugins: one class per file, one yaml per class under conf/reg/."""

__all__ = ["Regularizer", "is_selected", "select_parameters", "build_regularizers", "drop_unselected"]


def __getattr__(name: str):
    # The base classes import torch; the launcher uses drop_unselected before torch is imported (reglab.values).
    if name in ("Regularizer", "is_selected", "select_parameters"):
        from reglab.regularizers import base

        return getattr(base, name)
    raise AttributeError(name)


def drop_unselected(reg_cfg) -> list[str]:
    """Remove ``reg.<name>`` entries that only carry settings (no ``_target_``), returning their names.

    An experiment may tune every regularizer it sweeps over (``reg.l1.strength``) while a given job
    selects only some of them; the settings of unselected ones are dropped, not applied."""
    from omegaconf import open_dict

    dropped = [key for key, entry in (reg_cfg or {}).items() if entry is None or "_target_" not in entry]
    with open_dict(reg_cfg):
        for key in dropped:
            del reg_cfg[key]
    return dropped


def build_regularizers(reg_cfg) -> list:
    """Instantiate every entry of ``cfg.reg`` (a mapping name -> config with ``_target_``)."""
    from reglab.errors import ConfigError, instantiate

    regularizers = []
    for key, entry in (reg_cfg or {}).items():
        if entry is None or "_target_" not in entry:
            raise ConfigError(f"reg.{key}: not a regularizer config (choose one with reg=..., e.g. reg=l1)")
        regularizer = instantiate(entry, f"reg.{key}")
        regularizer.name = key  # logs and errors use the config key (e.g. dropout_conv)
        regularizers.append(regularizer)
    return regularizers
