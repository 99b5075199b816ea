"""The checks of a config that import torch or Lightning, run once per job by the pre-flight (reglab.preflight)
after the import-free ones (reglab.values) and before any data is read or any model is built."""

from __future__ import annotations

from omegaconf import DictConfig

from reglab import distributed
from reglab.contracts import check_data_class, check_model_class
from reglab.data.batching import check_divisible
from reglab.errors import ConfigError, import_target
from reglab.gpu_slots import launcher_choice
from reglab.identity import RunLabel
from reglab.optim import check_decoupled_decay, check_optim_config


def target_class(cfg, key: str):
    """What ``{key}._target_`` names (a class or a factory), imported, or a one-line error."""
    target = str(cfg.get("_target_"))
    try:
        return import_target(target)
    except Exception as err:
        raise ConfigError(f"{key}._target_={target!r}: cannot import it ({type(err).__name__})") from None


def check_launch(cfg: DictConfig, regularizers: list) -> int:
    """The optimizer (and that it decouples decay where a regularizer needs it), the training batch's split over
    the ranks, and the launcher's fit; returns the number of DDP ranks per job on this node. (The training
    sampler keeps its own divisibility guard: it is built per loader, also outside a run.)"""
    check_optim_config(cfg.optim)
    if any(r.needs_decoupled_optimizer for r in regularizers):
        check_decoupled_decay(cfg.optim)
    processes = distributed.processes_per_job(cfg.trainer)
    ranks = processes * int(cfg.trainer.get("num_nodes", 1))
    if cfg.data.get("batch_size", 1) != "full":
        check_divisible(int(cfg.data.get("batch_size", 1)), ranks)
    if launcher_choice() == "gpus" and processes > 1:
        raise ConfigError(f"trainer.devices={cfg.trainer.devices}: hydra/launcher=gpus runs one single-GPU job "
                          "per GPU; use trainer=gpu with it, or trainer=ddp without it")
    return processes


def check_targets(cfg: DictConfig, label: RunLabel) -> None:
    """Every ``_target_`` importable (this imports Lightning), and the model's input what the data gives."""
    for key, entry in (cfg.get("logger") or {}).items():
        if entry is not None and "_target_" in entry:
            target_class(entry, f"logger.{key}")
    data_class, model_class = target_class(cfg.data, "data"), target_class(cfg.model, "model")
    check_data_class(data_class)
    check_model_class(model_class)
    if data_class.input_kind != model_class.input_kind:
        names = label.choices
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
