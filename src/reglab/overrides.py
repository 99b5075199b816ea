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
