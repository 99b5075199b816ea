"""Regularizer plugins: one class per file, one yaml per class under conf/reg/."""

__all__ = ["Regularizer", "is_selected", "select_parameters", "build_regularizers", "drop_unselected"]


def __getattr__(name: str):
    # Imported on first use: the pre-flight calls drop_unselected and build_regularizers before torch loads.
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


HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")


def accepted_fields(cls) -> list[str] | None:
    """The keyword arguments a regularizer class takes: its own and, where it passes ``**kwargs`` on, its bases'
    (L1's ``**selection`` reaches Regularizer's include/exclude/only/warmup). None: it takes any keyword."""
    import inspect

    fields: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        fields += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and p.name not in fields]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return fields
    return None


def build_regularizers(reg_cfg) -> list:
    """Instantiate every entry of ``cfg.reg`` (a mapping name -> config with ``_target_``). Each is built under
    its config key: a field it does not take, and any error its constructor raises, name ``reg.<key>`` as
    configured (``reg.l1_head.warmup``), not the class's default name."""
    from reglab.errors import ConfigError, import_target, instantiate
    from reglab.regularizers import base

    regularizers = []
    for key, entry in (reg_cfg or {}).items():
        if entry is None or "_target_" not in entry:
            raise ConfigError(f"reg.{key}: not a regularizer config (choose one with reg=..., e.g. reg=l1)")
        try:
            cls = import_target(str(entry["_target_"]))
        except Exception:  # noqa: BLE001 - instantiate names the key of a target it cannot import
            cls = None
        fields = accepted_fields(cls) if isinstance(cls, type) else None
        unknown = [field for field in entry if field not in HYDRA_KEYS and fields is not None
                   and field not in fields]
        if unknown:
            raise ConfigError(f"reg.{key}.{unknown[0]}: {cls.__name__} has no such field; allowed: "
                              f"{', '.join(fields)}")
        token = base.CONFIG_KEY.set(key)
        try:
            regularizer = instantiate(entry, f"reg.{key}")
        finally:
            base.CONFIG_KEY.reset(token)
        regularizer.name = key  # logs and errors use the config key (e.g. dropout_conv)
        regularizers.append(regularizer)
    return regularizers
