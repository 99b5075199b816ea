"""What a run is, in three senses:

- its **identity** (Dora's idea): the config minus where it writes and how it is launched. Two runs with the same
  identity are the same run: a re-run skips it, a resume continues it.
- its **condition**: the identity minus the seed and what only labels it (study, tags) or only changes how fast
  or where it runs (workers, accelerator, compile) or what is evaluated after training (MC dropout samples).
  Runs of one condition are seeds of one experiment, and a report pools exactly those.
- its **label**: the group choices Hydra made and the overrides that set the job apart, for people: W&B group
  and run names, the choices in results.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

SCHEMA_VERSION = 2  # of results.json; 2: Hydra's own choices, overrides and condition_id

# Every top-level key of conf/train.yaml (its groups and its plain keys), declared once with what it is to a run;
# the tuples below and reglab.values' typo check derive from it, and a test checks it against conf/train.yaml.
#   condition: what is trained and measured; runs that differ in it are different experiments
#   replicate: one repeat of a condition (the seed): part of a run's identity, not of its condition
#   label:     names or tags a run, or changes only how fast it runs or what is evaluated after training
#   launch:    where a run writes and how it is launched: not even part of its identity
TOP_LEVEL_KEYS = {
    "data": "condition", "model": "condition", "reg": "condition", "optim": "condition", "trainer": "condition",
    "callbacks": "condition", "test_ckpt": "condition", "small_weight_eps": "condition",
    "seed": "replicate",
    "study": "label", "tags": "label", "logger": "label", "mc_samples": "label", "compile": "label",
    "paths": "launch", "dry_run": "launch", "skip_completed": "launch", "resume": "launch",
    "checkpoint_every_n_steps": "launch", "optimized_metric": "launch", "verbose": "launch",
    "report": "launch",  # how a study's runs are reported (reglab.report.declared), not how they run
}
LAUNCH_KEYS = tuple(key for key, role in TOP_LEVEL_KEYS.items() if role == "launch")
# the global batch fixes the science, not these; the progress bar is only what the console shows
TRAINER_LAUNCH_KEYS = ("devices", "strategy", "num_nodes", "enable_progress_bar")
# Dotted keys (and everything under them) that never tell two conditions apart.
# A cross-validation fold (data.fold) is a replicate, as a seed is: runs of every fold pool into one condition.
NOT_CONDITION = (*(key for key, role in TOP_LEVEL_KEYS.items() if role != "condition"), "data.fold",
                 "data.num_workers", "data.device_resident", "data.eval_batch_size", "trainer.accelerator",
                 "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
                 "trainer.default_root_dir", *(f"trainer.{k}" for k in TRAINER_LAUNCH_KEYS))
# Command-line keys that select or label a study rather than set one of its values.
NOT_LABEL = ("experiment", "debug", "hparams_search", "hydra")


def run_identity(config: dict) -> dict:
    """The config without where it writes and how it is launched (a nested dict, as in results.json). A value
    inside the run's own folder (a checkpoint dirpath, a logger's save_dir) counts relative to it, so a run folder
    copied or moved elsewhere is still the same run and resumes."""
    identity = {k: v for k, v in config.items() if k not in LAUNCH_KEYS}
    if isinstance(identity.get("trainer"), dict):
        identity["trainer"] = {k: v for k, v in identity["trainer"].items() if k not in TRAINER_LAUNCH_KEYS}
    own = (config.get("paths") or {}).get("output_dir") if isinstance(config.get("paths"), dict) else None
    return relative_to_run(identity, str(own).rstrip("/")) if own else identity


def relative_to_run(value, own: str):
    if isinstance(value, dict):
        return {k: relative_to_run(v, own) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_to_run(v, own) for v in value]
    if isinstance(value, str) and (value == own or value.startswith(own + "/")):
        return "<run folder>" + value[len(own):]
    return value


def flat_config(mapping: dict, prefix: str = "") -> dict:
    """{'reg': {'l1': {'strength': 1e-3}}} -> {'reg.l1.strength': 1e-3}; lists become JSON text."""
    flat = {}
    for key, value in (mapping or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return flat


def under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def condition(config: dict) -> dict:
    """The run's condition as a flat {dotted key: value} dict. Values that name this run's own output folder
    (a checkpoint dirpath) are paths, not science, and are left out; so are null settings, so that a knob added
    later with a null default (data.train_size) leaves the runs made before it in their old condition."""
    paths = (config or {}).get("paths") or {}
    own = [str(paths[k]) for k in ("output_dir",) if paths.get(k)]
    return {k: v for k, v in flat_config(config).items()
            if v is not None and not under(k, NOT_CONDITION)
            and not (isinstance(v, str) and any(v.startswith(p) for p in own))}


def condition_id(config: dict, keys: dict | None = None) -> str:
    """A short stable hash of the condition (``keys``: ``condition(config)`` when already at hand): equal for
    seeds of one experiment, different otherwise."""
    text = json.dumps(condition(config) if keys is None else keys, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def override_key(override: str) -> str:
    """'+reg.l1.strength=1e-3' -> 'reg.l1.strength'; 'hydra/launcher=gpus' -> 'hydra.launcher'."""
    return override.split("=", 1)[0].lstrip("+~").replace("/", ".")


@dataclass(frozen=True)
class RunLabel:
    """The choices Hydra made for the job's config groups, and the job's own overrides (a sweep's values and the
    command line's settings), minus the seed and keys that do not change the condition."""

    choices: dict
    overrides: tuple[str, ...] = ()

    @classmethod
    def of(cls, cfg) -> RunLabel:
        """Recorded where the job is composed, from Hydra's runtime (``model=cnn_small`` stays cnn_small). Without
        Hydra (a checkpoint's config, a script), the choices are read off the config."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return cls(config_choices(cfg))
        hydra = HydraConfig.get()
        choices = {k: v for k, v in hydra.runtime.choices.items() if not under(k.replace("/", "."), ["hydra"])}
        if "reg" not in choices:  # a list (reg=[l1,dropout]) has no single choice in Hydra's record
            choices["reg"] = config_choices(cfg)["reg"]
        overrides = tuple(o for o in hydra.overrides.task
                          if not under(override_key(o), NOT_CONDITION + NOT_LABEL))
        return cls(dict(choices), overrides)

    def swept(self, without=()) -> list[str]:
        return [o for o in self.overrides if override_key(o) not in without]

    def wandb_group(self, study: str | None) -> str:
        """One group per condition of a sweep: the study (else data/model/reg) and every override but the
        seed, so each λ of a sweep is its own group and W&B averages only seeds."""
        prefix = [study] if study else [self.choices.get(k) or "?" for k in ("data", "model", "reg")]
        swept = self.swept() if study else self.swept(without=("data", "model", "reg"))
        return bounded("/".join(prefix + ([",".join(swept)] if swept else [])), 128)

    def wandb_name(self, seed: int, fold: int | None = None) -> str:
        """data/model/reg, the swept values, the seed and any cross-validation fold:
        'digits/cnn_small/l1 reg.l1.strength=0.001 seed=2'."""
        choices = "/".join(str(self.choices.get(k) or "?") for k in ("data", "model", "reg"))
        replicate = [f"seed={seed}"] + ([] if fold is None else [f"fold={fold}"])
        return bounded(" ".join([choices, *self.swept(without=("data", "model", "reg")), *replicate]), 128)


def bounded(text: str, limit: int) -> str:
    """W&B caps names at 128 characters: a longer one keeps its start and a hash of the whole."""
    if len(text) <= limit:
        return text
    return text[:limit - 11] + "~" + hashlib.sha1(text.encode()).hexdigest()[:10]


def config_choices(cfg) -> dict:
    """Choices read off a composed config, where Hydra's record is missing: the module names of data and model,
    the regularizers' keys joined by '+', the optimizer's class name in lower case."""
    def module_name(target: str) -> str:  # 'reglab.data.cifar10.CIFAR10DataModule' -> 'cifar10'
        return target.rsplit(".", 2)[-2]

    return {"data": module_name(cfg.data._target_), "model": module_name(cfg.model._target_),
            "reg": "+".join(cfg.reg or {}) or "none", "optim": str(cfg.optim._target_).rsplit(".", 1)[-1].lower()}
