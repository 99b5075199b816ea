class ReglabError(Exception):
    """A problem the user can fix (bad config, missing data). Reported as one line, no traceback."""


class ConfigError(ReglabError, ValueError):
    pass


class DataUnavailableError(ReglabError, RuntimeError):
    pass
