"""A study's report section, declared in its experiment yaml under ``report:``; no code names the study.

    report:
      title: Dropout rate vs performance
      command: python train.py -m experiment=dropout_rate      # how the section's runs are made
      rows: reg.dropout.p           # the row variable (reglab-report --by); default reg
      baseline: 0.0                 # the row every row is compared with; default none
      metrics: [test/acc, val/acc, gen_gap]                    # default: the report's default columns
      goals: {weights/zero_frac: max}                          # give a descriptive column a direction
      figures:                      # names from reglab.report.paper.FIGURES, each with its options
        metric_vs_parameter: {metrics: [test/acc, gen_gap], xlabel: dropout rate p}
      order: 50                     # where the section sits in report.md (lower first); default 100
      studies: [dropout_rate]       # whose runs it reads; default: the study itself

The declaration is data: titles, metric names and figure names from a fixed list; nothing in it is imported or
run. ``reglab-report --paper`` reads it from the project's conf/experiment/<study>.yaml when that file declares
one (so an edit shows in the next report), else from the runs' own results.json (a study kept elsewhere, via
hydra.searchpath). A declaration is checked at train time, before any heavy work, and again when read."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from reglab.errors import ConfigError

CONF_EXPERIMENTS = Path(__file__).resolve().parents[3] / "conf" / "experiment"
FIELDS = {"title": str, "command": str, "rows": str, "baseline": (str, int, float, type(None)),
          "metrics": list, "goals": dict, "figures": (dict, list), "order": (int, float), "studies": list,
          "row_keys": list}
KIND_NAMES = {"title": "text", "command": "text", "rows": "a choice or config path", "baseline": "a value or null",
              "metrics": "a list of metric names", "goals": "a mapping of metric to max, min or zero",
              "figures": "a list or mapping of figure names", "order": "a number", "studies": "a list of study names",
              "row_keys": "a list of config keys"}
# Each figure a section may draw, with the options it takes (reglab.report.paper.figure_makers draws them).
FIGURE_OPTIONS = {"curves": ("name",), "weight_histograms": ("name",),
                  "metric_vs_parameter": ("metrics", "xlabel", "log_x", "name"),
                  "learning_curves": ("metrics", "name"), "reliability": ("name",), "tradeoff": ("x", "y", "name")}


@dataclass
class Declaration:
    study: str
    title: str
    command: str = ""
    rows: str = "reg"
    baseline: object = "none"
    metrics: list[str] | None = None
    goals: dict = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)
    order: float = 100
    studies: list[str] = field(default_factory=list)
    row_keys: list[str] | None = None
    source: str = ""  # where it was read: a yaml path, or the runs


def check_declaration(study: str | None, report, where: str) -> Declaration:
    """``report`` (a mapping) as a Declaration; ConfigError naming the key and what is allowed otherwise."""
    if not isinstance(report, dict):
        raise ConfigError(f"{where}: report must be a mapping of {', '.join(FIELDS)}, got {type(report).__name__}")
    unknown = [k for k in report if k not in FIELDS]
    if unknown:
        raise ConfigError(f"{where}: report.{unknown[0]} is not a report key; allowed: {', '.join(FIELDS)}")
    for key, kinds in FIELDS.items():
        if key in report and not isinstance(report[key], kinds) or isinstance(report.get(key), bool):
            raise ConfigError(f"{where}: report.{key}={report[key]!r} must be {KIND_NAMES[key]}")
    if not report.get("title"):
        raise ConfigError(f"{where}: report.title is required (the section's heading)")
    if not study and not report.get("studies"):
        raise ConfigError(f"{where}: a report section needs the runs' study (set study: NAME) or report.studies")
    for key in ("metrics", "studies", "row_keys"):
        if any(not isinstance(v, str) for v in report.get(key) or []):
            raise ConfigError(f"{where}: report.{key} must be a list of names, got {report[key]!r}")
    goals = report.get("goals") or {}
    bad = {k: v for k, v in goals.items() if v not in ("max", "min", "zero")}
    if bad:
        raise ConfigError(f"{where}: report.goals {bad}: each goal must be max, min or zero")
    figures = report.get("figures") or {}
    if isinstance(figures, list):
        if any(not isinstance(name, str) for name in figures):
            raise ConfigError(f"{where}: report.figures={figures!r}: a list holds figure names only; give options "
                              "as a mapping, e.g. figures: {curves: {}, reliability: {name: calib}}")
        figures = {name: {} for name in figures}
    order = report.get("order", 100)
    if not math.isfinite(float(order)):
        raise ConfigError(f"{where}: report.order={order!r} must be a finite number")
    for name, options in dict(figures).items():
        if name not in FIGURE_OPTIONS:
            raise ConfigError(f"{where}: report.figures.{name} is not a figure; allowed: {', '.join(FIGURE_OPTIONS)}")
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"{where}: report.figures.{name} must map option names to values, got {options!r}")
        unknown = [k for k in options or {} if k not in FIGURE_OPTIONS[name]]
        if unknown:
            raise ConfigError(f"{where}: report.figures.{name}.{unknown[0]} is not an option of {name}; allowed: "
                              f"{', '.join(FIGURE_OPTIONS[name])}")
        for option, value in (options or {}).items():
            check_option(f"{where}: report.figures.{name}.{option}", option, value)
    return Declaration(study=study or report["studies"][0], title=report["title"],
                       command=report.get("command") or "", rows=report.get("rows") or "reg",
                       baseline=report.get("baseline", "none"), metrics=report.get("metrics"),
                       goals=dict(goals), figures={k: dict(v or {}) for k, v in figures.items()},
                       order=report.get("order", 100), studies=list(report.get("studies") or [study]),
                       row_keys=report.get("row_keys"), source=where)


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_option(key: str, option: str, value) -> None:
    """A figure option's type: metric lists are lists of names, flags are booleans, a file name stays in figures/."""
    if option == "metrics" and (not isinstance(value, list) or any(not isinstance(v, str) for v in value)):
        raise ConfigError(f"{key}={value!r} must be a list of metric names, e.g. [test/acc, gen_gap]")
    if option == "log_x" and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    if option in ("xlabel", "x", "y") and not isinstance(value, str):
        raise ConfigError(f"{key}={value!r} must be text")
    if option == "name" and not (isinstance(value, str) and SAFE_NAME.match(value)):
        raise ConfigError(f"{key}={value!r} must be a plain file name (letters, digits, _ . -), no folders")


def from_conf(study: str) -> dict | None:
    """The ``report:`` mapping of the project's conf/experiment/<study>.yaml, if it has one (read as plain YAML)."""
    import yaml

    path = CONF_EXPERIMENTS / f"{study}.yaml"
    if "/" in study or not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read its report section ({type(err).__name__}: "
                          f"{str(err).splitlines()[0]})") from None
    report = loaded.get("report") if isinstance(loaded, dict) else None
    return report if report else None


def declarations(records: list[dict]) -> tuple[list[Declaration], list[str]]:
    """One declaration per study of ``records`` that declares a section (conf first, else the runs' config),
    and warnings for declarations that do not check out (the section is then left out, and the warning says so)."""
    found, warnings = {}, []
    for record in records:
        study = record.get("study")
        if not isinstance(study, str) or study in found or record.get("status") == "unreadable":
            continue
        try:
            declared, where = from_conf(study), str(CONF_EXPERIMENTS / f"{study}.yaml")
            if declared is None:
                declared = (record.get("config") or {}).get("report")
                where = f"{record['run_dir']}/results.json"
            if not declared:
                continue
            found[study] = check_declaration(study, declared, where)
        except ConfigError as err:
            warnings.append(f"{err} (section left out)")
            found[study] = None
    return [d for d in found.values() if d is not None], warnings
