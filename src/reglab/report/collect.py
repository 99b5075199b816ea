"""Find results.json files under run/multirun folders and flatten them into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from reglab.fit import underfit_reason
from reglab.identity import SCHEMA_VERSION, condition, condition_id, config_choices, flat_config
from reglab.results import RESULTS_FILE


def find_results(paths) -> list[Path]:
    found = []
    for path in map(Path, paths):
        if path.is_file() and path.name == RESULTS_FILE:
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob(RESULTS_FILE)))
    return found


def find_unfinished(paths) -> list[Path]:
    """Multirun job folders (they hold .hydra/) with no results.json: jobs that never got to write one."""
    unfinished = []
    for path in map(Path, paths):
        if path.is_dir():
            for hydra_dir in sorted(path.rglob(".hydra")):
                job = hydra_dir.parent
                if not (job / RESULTS_FILE).exists() and not (job / "multirun.yaml").exists():
                    unfinished.append(job)
    return unfinished


def load_results(paths) -> list[dict]:
    """Every results.json under ``paths``; an unreadable one becomes a record with status 'unreadable'."""
    records = []
    for file in find_results(paths):
        try:
            record = json.loads(file.read_text())
        except OSError as err:
            record = {"status": "unreadable", "error": f"cannot read: {err.strerror or err}"}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            record = {"status": "unreadable", "error": f"not valid JSON ({err})"}
        if not isinstance(record, dict):
            record = {"status": "unreadable", "error": f"not a results record (a JSON {type(record).__name__})"}
        elif record.get("status") != "unreadable":
            record = with_evaluation(migrated(record), file.parent)
        record["run_dir"] = str(file.parent)
        records.append(record)
    return records


def with_evaluation(record: dict, run_dir: Path) -> dict:
    """The record with eval.py's numbers (evaluation.json beside it) in its metrics and calibration: they are
    later than, and so replace, any std/ts/mc numbers the training run measured. A broken evaluation.json leaves
    the record as it was, with a warning."""
    from reglab.evaluation import read_evaluation

    if record.get("status") != "completed":
        return record
    try:
        evaluation = read_evaluation(run_dir)
    except (OSError, ValueError) as err:
        return {**record, "warnings": [*record.get("warnings", []), f"{err}: its evaluation is left out"]}
    if evaluation is None:
        return record
    if evaluation.get("dropped"):
        record = {**record, "warnings": [*record.get("warnings", []), f"{run_dir}/evaluation.json: "
                                         f"{', '.join(evaluation['dropped'])} not numbers; left out"]}
    return {**record, "metrics": {**(record.get("metrics") or {}), **evaluation["metrics"]},
            "calibration": evaluation["calibration"], "evaluation_file": str(run_dir / "evaluation.json")}


# The fields a report reads, with the types they must have when present.
FIELD_TYPES = {"metrics": (dict,), "history": (list,), "split_sizes": (dict,), "choices": (dict,),
               "weight_histogram": (dict,), "calibration": (dict,), "features": (dict,), "test_predictions": (dict,)}


def migrated(record: dict) -> dict:
    """A results.json of an older schema in the current one, or an 'unreadable' record saying why it cannot be
    read (a newer schema, or no config), so the report lists it rather than leaving it out in silence.
    Schema 1 had no Hydra choices, overrides or condition_id: the choices are read off its config (as for a
    run without Hydra), the overrides are taken as none, and the condition is computed from the config."""
    version = record.get("schema_version", 1)
    if type(version) is not int or version < 1:
        return {"status": "unreadable", "error": f"schema_version {version!r} is not a schema version (an integer "
                                                  f"from 1 to {SCHEMA_VERSION})"}
    if version > SCHEMA_VERSION:
        return {"status": "unreadable", "error": f"written by a newer reglab (schema_version {version}; this "
                                                  f"reglab reads up to {SCHEMA_VERSION}): upgrade reglab to read it"}
    config = record.get("config")
    if not isinstance(config, dict) or not config:
        return {"status": "unreadable", "error": "has no config, so its condition cannot be known"}
    for key, kinds in FIELD_TYPES.items():
        if record.get(key) is not None and not isinstance(record[key], kinds):
            return {"status": "unreadable", "error": f"its {key} is a {type(record[key]).__name__}, not a "
                                                      f"{' or '.join(k.__name__ for k in kinds)}"}
    for key, value in config.items():
        if key in ("data", "model", "reg", "optim", "trainer") and value is not None and not isinstance(value, dict):
            return {"status": "unreadable", "error": f"its config.{key} is a {type(value).__name__}, not a mapping"}
    if version < SCHEMA_VERSION or not isinstance(record.get("choices"), dict):
        from omegaconf import OmegaConf

        record = dict(record)
        if not isinstance(record.get("choices"), dict):
            try:
                record["choices"] = config_choices(OmegaConf.create(config))
            except Exception as err:
                return {"status": "unreadable", "error": f"schema_version {version}: its config names no data, "
                                                          f"model or optimizer target to read its choices from ({err})"}
        record.setdefault("overrides", [])
        record["condition_id"] = condition_id(config)
        record["migrated_from"] = version
        record["schema_version"] = SCHEMA_VERSION
    return record


def input_kind_of(config: dict) -> str:
    """For records written before results.json named the input kind: text datamodules are the ones with a
    tokenizer."""
    return "tokens" if (config.get("data") or {}).get("tokenizer") else "image"


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: run_dir, status, error, study, seed, started_at, its condition (``condition``: the id,
    ``condition_keys``: the flat dict, see reglab.identity), each choice, each final metric, and every config
    leaf under its dotted path (``reg.l1.strength``), so any of them can be a table's row variable."""
    rows = []
    for record in records:
        config = record.get("config") or {}
        keys = condition(config)
        row = {"run_dir": record["run_dir"], "status": record.get("status"), "error": record.get("error"),
               "study": record.get("study"), "seed": record.get("seed"), "started_at": record.get("started_at"),
               "fold": -1 if (config.get("data") or {}).get("fold") is None else config["data"]["fold"],
               "underfit": underfit_reason(record.get("metrics"), record.get("history")),
               "condition": condition_id(config, keys), "condition_keys": keys,
               "input_kind": record.get("input_kind") or input_kind_of(config)}
        row.update(flat_config(config))
        row.update({f"split_sizes.{k}": v for k, v in (record.get("split_sizes") or {}).items()})
        row.update(record.get("choices", {}))
        row.update({k: v for k, v in (record.get("metrics") or {}).items()  # numbers only: a table averages them
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
        rows.append(row)
    return pd.DataFrame(rows)


def completed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "completed"] if "status" in runs else runs
