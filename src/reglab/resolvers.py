"""OmegaConf resolvers the configs use. Registered by train.py before Hydra composes anything."""

from omegaconf import OmegaConf


def path_safe(text: str) -> str:
    """A job folder is named by its overrides; a '/' in a value (data.path=../data/x) must not nest folders."""
    return text.replace("/", "_")


def register() -> None:
    OmegaConf.register_new_resolver("path_safe", path_safe, replace=True)
