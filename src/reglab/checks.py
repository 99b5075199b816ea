"""The checks a run passes before any data is read or any model is built, so a typo fails in the first second
with the key's name. The launcher (reglab.run) runs them once per job."""

from __future__ import annotations

from omegaconf import DictConfig

from reglab import distributed
from reglab.contracts import check_data_class, check_model_class
from reglab.data.batching import check_divisible
from reglab.errors import ConfigError, import_target, instantiate
from reglab.gpu_slots import launcher_choice
from reglab.identity import RunLabel
from reglab.optim import check_decoupled_decay, check_optim_config
from reglab.regularizers import build_regularizers
from reglab.values import check_early


def target_class(cfg, key: str):
    """What ``{key}._target_`` names (a class or a factory), imported, or a one-line error."""
    target = str(cfg.get("_target_"))
    try:
        return import_target(target)
    except Exception as err:
        raise ConfigError(f"{key}._target_={target!r}: cannot import it ({type(err).__name__})") from None


def check_values(cfg: DictConfig) -> None:
    """The config's values, before Lightning is imported: reglab.values' early pass, then the optimizer and the
    batch split (these import torch)."""
    check_early(cfg)
    check_optim_config(cfg.optim)
    processes = distributed.processes_per_job(cfg.trainer)
    if cfg.data.get("batch_size", 1) != "full":
        check_divisible(int(cfg.data.get("batch_size", 1)), processes * int(cfg.trainer.get("num_nodes", 1)))
    if launcher_choice() == "gpus" and processes > 1:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices}: hydra/launcher=gpus runs one single-GPU job "
                          "per GPU; use trainer=gpu with it, or trainer=ddp without it")


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` importable (this imports Lightning), and the model's input what the data gives."""
    for key, entry in (cfg.get("logger") or {}).items():
        if entry is not None and "_target_" in entry:
            target_class(entry, f"logger.{key}")
    data_class, model_class = target_class(cfg.data, "data"), target_class(cfg.model, "model")
    check_data_class(data_class)
    check_model_class(model_class)
    if data_class.input_kind != model_class.input_kind:
        names = RunLabel.of(cfg).choices
        fitting = models_taking(data_class.input_kind)
        raise ConfigError(f"model={names['model']} takes {model_class.input_kind} input but data={names['data']} "
                          f"gives {data_class.input_kind} input; models that take it: {fitting}")


def models_taking(input_kind: str) -> list[str]:
    """The model choices (conf/model/*.yaml) whose class takes ``input_kind`` input."""
    from omegaconf import OmegaConf

    def target(path, seen=()):
        """The option's _target_, or the one of the option it extends (``defaults: [cnn]``, as cnn_small does)."""
        option = OmegaConf.load(path)
        if option.get("_target_") is not None or path in seen:
            return option.get("_target_")
        for parent in option.get("defaults") or []:
            if isinstance(parent, str) and parent != "_self_" and (path.parent / f"{parent}.yaml").is_file():
                found = target(path.parent / f"{parent}.yaml", (*seen, path))
                if found is not None:
                    return found
        return None

    fitting = []
    for path in sorted(config_dir().glob("model/*.yaml")):
        try:
            if import_target(str(target(path))).input_kind == input_kind:
                fitting.append(path.stem)
        except Exception:
            continue
    return fitting


def config_dir():
    """The primary config folder Hydra composed from (conf/), or the repository's."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.path.startswith("file://"):
                return Path(source.path[len("file://"):])
    return Path(__file__).resolve().parents[2] / "conf"


def check_config(cfg: DictConfig) -> None:
    """Cheap checks that need no data and no model."""
    check_values(cfg)
    check_targets(cfg)


def validate(cfg: DictConfig):
    """Everything that can be checked without data or a model: the config, the regularizers' values and the
    datamodule's arguments (paths, sizes). Returns the regularizers and the (not yet loaded) datamodule."""
    check_values(cfg)
    regularizers = build_regularizers(cfg.reg)
    if any(getattr(r, "needs_decoupled_optimizer", False) for r in regularizers):
        check_decoupled_decay(cfg.optim)
    check_targets(cfg)
    return regularizers, instantiate(cfg.data, "data", seed=int(cfg.seed))
