class ReglabError(Exception):
    """A problem the user can fix (bad config, missing data). Reported as one line, no traceback."""


class ConfigError(ReglabError, ValueError):
    pass


class DataUnavailableError(ReglabError, RuntimeError):
    pass


class DivergedError(ReglabError, FloatingPointError):
    """The loss or a penalty became NaN/inf: the run stops at that step (results.json: status diverged)."""


def instantiate(cfg, key: str, **kwargs):
    """hydra.utils.instantiate, but our own errors come out unwrapped (one line, not Hydra's
    InstantiationException), and a bad keyword names the config key."""
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(cfg, _convert_="all", **kwargs)
    except Exception as err:
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ReglabError):
            raise cause from None
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise ConfigError(f"{key}: {cause}") from None
        if str(err).startswith("Error locating target"):
            raise ConfigError(f"{key}._target_={cfg.get('_target_')!r}: cannot import it") from None
        raise
