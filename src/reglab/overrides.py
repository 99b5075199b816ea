"""A check on the command line before Hydra composes anything: an unknown group choice (``reg=l3``) becomes one
line naming the key, the value and the allowed choices (Hydra's own report spans several lines)."""

from __future__ import annotations

import re
from pathlib import Path

GROUP_CHOICE = re.compile(r"^\+{0,2}(?P<group>[a-z_]+)=(?P<value>[^=]*)$")


def choices(value: str) -> list[str]:
    """'l1' -> [l1]; '[l1,dropout]' (a list) or 'l1,l2' (a sweep) -> both; sweep functions are left to Hydra."""
    if "(" in value:
        return []
    return [v.strip() for v in value.strip("[]").split(",") if v.strip() and v.strip() != "null"]


def search_dirs(arguments: list[str], conf_dir: str | Path) -> list[Path] | None:
    """conf/ plus the file:// folders of a ``hydra.searchpath=[...]`` argument (a study kept outside the project);
    None when the search path has entries this check cannot list (pkg://): Hydra then checks the choice itself."""
    folders = [Path(conf_dir)]
    for argument in arguments:
        if argument.lstrip("+").startswith("hydra.searchpath="):
            for entry in choices(argument.split("=", 1)[1]):
                if not entry.startswith("file://"):
                    return None
                folders.append(Path(entry[len("file://"):]))
    return folders


def unknown_choice(arguments: list[str], conf_dir: str | Path) -> str | None:
    folders = search_dirs(arguments, conf_dir)
    if folders is None:
        return None
    for argument in arguments:
        match = GROUP_CHOICE.match(argument)
        if match is None or not any((folder / match["group"]).is_dir() for folder in folders):
            continue  # not a group (seed=1, reg.l1.strength=..., hydra/launcher=...: plugins add choices)
        allowed = sorted({p.stem for folder in folders for p in (folder / match["group"]).glob("*.yaml")})
        for value in choices(match["value"]):
            if value not in allowed:
                return f"{match['group']}={value}: unknown choice; allowed {allowed}"
    return None


def hydra_value(text: str) -> str:
    """``text`` as a Hydra override value that reads back as exactly ``text``: as it is where Hydra's grammar
    takes it (most paths), else single-quoted (a path with ',', '=', brackets or quotes: a sweep job's folder)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([f"k={text}"])[0]
        if not parsed.is_sweep_override() and parsed.value() == text and "${" not in text:
            return text
    except Exception:  # noqa: BLE001 - any parse failure means: quote it
        pass
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("${", "\\${") + "'"


def quote_path_values(arguments: list[str], keys: tuple[str, ...]) -> list[str]:
    """Command-line ``key=value`` arguments for ``keys`` (e.g. ckpt) with the value quoted where Hydra would not
    read it as the path it is: ``ckpt=logs/multiruns/demo/reg=dropout,seed=0/checkpoints/last.ckpt`` works as
    typed. A value already in quotes is left alone."""
    out = []
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if sep and key.lstrip("+") in keys and value and value[0] not in "'\"":
            argument = f"{key}={hydra_value(value)}"
        out.append(argument)
    return out


def paste_ready(key: str, value: str) -> str:
    """``key=value`` for a shell command line (shell-quoted where needed). For keys whose values reglab's entry
    points quote for Hydra themselves (quote_path_values: ckpt), this is all a pasted command needs."""
    import shlex

    return shlex.quote(f"{key}={value}")


def unknown_key(arguments: list[str], conf_dir: str | Path) -> str | None:
    """A single run whose ``a.b.c=value`` names no key of the composed config: one line naming the key and the
    nearest valid ones (Hydra's own message spans lines and suggests '+a.b.c', which adds a key nothing reads).
    Sweeps (-m) are left to Hydra: a key may exist for some of their choices only."""
    import difflib
    import re as regex

    if any(a in ("-m", "--multirun") or a.startswith("-") for a in arguments):
        return None
    dotted = [a for a in arguments if regex.match(r"^[A-Za-z_][\w]*(\.[\w]+)+=", a)]
    if not dotted:
        return None
    if not any(a.startswith(("experiment=", "hparams_search=", "debug=")) for a in arguments):
        known = known_key_paths(conf_dir)
        if all(a.split("=")[0] in known for a in dotted):
            return None  # every key is one a config file of its group sets: no trial composition needed
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    job = [a for a in arguments if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            try:
                compose(config_name="train", overrides=job)
                return None
            except ConfigCompositionException as err:
                match = regex.match(r"Could not override '([^']+)'", str(err))
                if match is None:
                    return None  # another problem: Hydra's own message says it
                key = match[1]
                base = compose(config_name="train", overrides=[a for a in job if a.split("=")[0] != key])
    except Exception:  # noqa: BLE001 - the check must never stop a run Hydra would accept
        return None
    finally:
        GlobalHydra.instance().clear()
    keys = [k for k in flat_keys(OmegaConf.to_container(base, resolve=False)) if not k.startswith("hydra")]
    parent = key.rpartition(".")[0]
    near = difflib.get_close_matches(key, [k for k in keys if not k.endswith("_target_")], n=2, cutoff=0.8)
    siblings = sorted(k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent
                      and not k.endswith("_target_"))
    if key.startswith("trainer.") and key.count(".") == 1 and is_trainer_argument(key.split(".")[1]):
        return (f"{key}: a Lightning Trainer argument that conf/trainer does not set; add it with "
                f"+{key}=VALUE")
    text = f"{key}: not a config key"
    if near:
        text += f"; did you mean {' or '.join(near)}?"
    if siblings:
        text += f" (keys under {parent}: {', '.join(siblings)})"
    return text


def flat_keys(tree, prefix: str = "") -> list[str]:
    keys = []
    for name, value in (tree or {}).items():
        path = f"{prefix}{name}"
        keys.append(path)
        if isinstance(value, dict):
            keys += flat_keys(value, f"{path}.")
    return keys


def is_trainer_argument(name: str) -> bool:
    import inspect

    from pytorch_lightning import Trainer

    return name in inspect.signature(Trainer.__init__).parameters


def known_key_paths(conf_dir: str | Path) -> set[str]:
    """Every dotted key path that a file of a config group (or train.yaml) sets, experiments and other opt-in
    groups aside: a command line whose keys are all among them needs no trial composition, so a correct command
    line pays nothing for the typo check. A key that only some choice or an experiment sets is composed."""
    import yaml

    paths = set()
    root = Path(conf_dir)
    for path in root.rglob("*.yaml"):
        group = path.parent.relative_to(root).as_posix()
        if group.split("/")[0] in ("experiment", "hparams_search", "debug", "hydra"):
            continue
        text = path.read_text()
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            continue
        if not isinstance(tree, dict):
            continue
        prefix = "" if group == "." or "@package _global_" in text else group.replace("/", ".") + "."
        paths.update(prefix + key for key in flat_keys(tree))
    return paths
