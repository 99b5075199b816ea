class ReglabError(Exception):
    """A problem the user can fix (bad config, missing data). Reported as one line, no traceback."""


class ConfigError(ReglabError, ValueError):
    pass


class DataUnavailableError(ReglabError, RuntimeError):
    pass


class DivergedError(ReglabError, FloatingPointError):
    """The loss or a penalty became NaN/inf: the run stops at that step (results.json: status diverged)."""


def preemption_handler(signal_name: str, previous):
    """The handler that held a preemption signal (SIGUSR1, SIGUSR2) before reglab's, when it is one to hand the
    signal on to once the state is saved (submitit's: it requeues the job); else None."""
    if getattr(previous, "reglab_relay", False):  # a parallel sweep's worker relay: the sweep stops on its own
        return None
    return previous if signal_name in ("SIGUSR1", "SIGUSR2") and callable(previous) else None


class StopSignalHandlers:
    """While a launching process waits for the processes doing the work (DDP ranks, a sweep's workers), the stop
    signals reaching it go to ``forward(signum, frame)``, and the handlers before are put back afterwards."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")

    def forward(self, signum, frame) -> None:
        raise NotImplementedError

    def __enter__(self):
        import signal

        self._previous = {}
        for name in self.SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self.forward)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


class Interrupted(BaseException):
    """Training stopped on a signal (``signal_name``) with its state checkpointed: the run is ``interrupted`` and
    re-running the same command resumes it. Not an error of the user's: the CLI exits with 128 + the signal."""

    def __init__(self, signal_name: str, pass_on=None):
        super().__init__(f"stopped by {signal_name}; last.ckpt holds the state at that step")
        self.signal_name = signal_name
        # The handler that held the signal before reglab's (submitit's preemption handler: it requeues the job),
        # called once the run's state is saved.
        self.pass_on = pass_on

    @property
    def exit_code(self) -> int:
        import signal

        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))


def import_target(target: str):
    """The class or function a ``_target_`` string names ('torch.optim.AdamW'), imported; raises what importing
    raises (callers turn it into a ConfigError naming their key)."""
    import importlib

    module, _, name = str(target).rpartition(".")
    return getattr(importlib.import_module(module), name)


def is_number(value) -> bool:
    """An int or float from a config (a bool is neither, though Python says it is an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
