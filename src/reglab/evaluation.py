"""Inference-time evaluation of a trained checkpoint, three ways (the lecture's dropout-at-inference table):

- standard inference (``std``): dropout off, i.e. weight scaling, since reglab's dropout is inverted;
- temperature scaling (``ts``, Guo et al. 2017): the standard logits divided by one temperature fitted on the
  validation split by minimising NLL; the calibration baseline any model can use;
- Monte Carlo dropout (``mc``, Gal & Ghahramani 2016): the dropout sites stay active at test time, BatchNorm
  stays in eval mode, and the softmax is averaged over ``mc_samples`` passes.

Calibration is measured with accuracy, NLL, Brier score, ECE (torchmetrics, 15 equal-width bins, L1) and mean
predictive entropy. A run trained with ``mc_samples > 0`` records them in its results.json. ``eval.py`` writes them
to ``evaluation.json`` beside it (``metrics["std/*"]``, ``["ts/*"]``, ``["mc/*"]``, with the temperature and
reliability-diagram bins under ``calibration``) and never rewrites what training measured; the report reads both,
the evaluation's numbers winning (reglab.report.collect.with_evaluation)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reglab.errors import ConfigError, DataUnavailableError, ReglabError
from reglab.results import CONFIG_KEY

log = logging.getLogger(__name__)

N_BINS = 15
EVALUATION_FILE = "evaluation.json"  # eval.py's numbers, beside the training run's results.json
KINDS = (("std", "standard"), ("ts", "temperature-scaled"), ("mc", "MC dropout"))


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The model's dropout sites as training defines them (``dropout_sites()``, which the dropout regularizer sets
    rates on): MC dropout switches on exactly these, of every site type."""
    return [module for modules in model.dropout_sites().values() for module in modules]


def set_mc_dropout(model: nn.Module) -> None:
    """Eval mode everywhere (BatchNorm uses its running statistics), except the dropout sites and the modules
    whose own mode gates a site (a model's optional ``dropout_gates()``, see HFEncoderClassifier)."""
    model.eval()
    gates = getattr(model, "dropout_gates", None)
    for module in dropout_modules(model) + (list(gates()) if callable(gates) else []):
        module.train()


def _repeat(inputs, times: int):
    """Stack ``times`` copies of a batch along the batch dimension (tensor or dict of tensors)."""
    if times == 1:
        return inputs
    if isinstance(inputs, dict):
        return {k: _repeat(v, times) for k, v in inputs.items()}
    return inputs.unsqueeze(0).expand(times, *inputs.shape).reshape(times * inputs.shape[0], *inputs.shape[1:])


def _forward(model, inputs):
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


@torch.no_grad()
def standard_logits(model: nn.Module, inputs) -> torch.Tensor:
    model.eval()
    return _forward(model, inputs).float()


def standard_probabilities(model: nn.Module, inputs) -> torch.Tensor:
    return standard_logits(model, inputs).softmax(-1)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017), by L-BFGS on log T.
    One scalar: the argmax, hence the accuracy, never changes."""
    logits, labels = logits.detach().double(), labels.detach()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp())


@torch.no_grad()
def mc_probabilities(model: nn.Module, inputs, samples: int, max_rows: int = 8192) -> torch.Tensor:
    """The mean softmax over ``samples`` stochastic passes. Vectorised: the batch is repeated along the batch
    dimension and run as one forward pass per chunk of samples (each copy draws its own dropout masks), not
    ``samples`` passes. Summed in float64, so identical samples (p=0) average back to exactly one of them."""
    if samples < 1:
        raise ConfigError(f"mc_samples={samples}: must be >= 1")
    set_mc_dropout(model)
    if not any(getattr(module, "p", 1.0) > 0 for module in dropout_modules(model)):
        samples = 1  # no site drops anything: every sample is the same pass, so one is exact and 30x cheaper
    rows = len(inputs["input_ids"]) if isinstance(inputs, dict) else len(inputs)
    per_pass = max(1, min(samples, max_rows // max(1, rows)))
    total, done = None, 0
    while done < samples:
        k = min(per_pass, samples - done)
        probs = _forward(model, _repeat(inputs, k)).float().softmax(-1).double().view(k, rows, -1).sum(0)
        total = probs if total is None else total + probs
        done += k
    model.eval()
    return (total / samples).float()


def calibration_metrics(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, float]:
    from torchmetrics.functional.classification import multiclass_calibration_error

    num_classes = probs.shape[-1]
    clipped = probs.clamp_min(1e-12)
    one_hot = F.one_hot(labels, num_classes).to(probs.dtype)
    return {
        "acc": float((probs.argmax(-1) == labels).float().mean()),
        "nll": float(-clipped.gather(1, labels[:, None]).log().mean()),
        "brier": float((probs - one_hot).pow(2).sum(-1).mean()),
        "ece": float(multiclass_calibration_error(probs, labels, num_classes, n_bins=n_bins, norm="l1")),
        "entropy": float(-(probs * clipped.log()).sum(-1).mean()),
    }


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict[str, list]:
    """Per confidence bin (equal width, as the ECE): mean confidence, accuracy and count."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).float()
    index = (confidence * n_bins).long().clamp_max(n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).float()
    conf_sum = torch.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=n_bins)
    safe = count.clamp_min(1)
    return {"edges": torch.linspace(0, 1, n_bins + 1).tolist(), "confidence": (conf_sum / safe).tolist(),
            "accuracy": (acc_sum / safe).tolist(), "count": count.long().tolist()}


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt={str(path)!r}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted, or not a torch file at all
        raise ConfigError(f"ckpt={str(path)!r}: not a readable checkpoint ({type(err).__name__}); a run resumes "
                          "from its newest readable checkpoint, or starts over with resume=false") from None
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise ConfigError(f"ckpt={str(path)!r}: carries no reglab config (not written by reglab's train.py)")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"ckpt={str(path)!r}: carries no state_dict of weights (not written by reglab's train.py)")
    return checkpoint


def check_model_config(checkpoint_config: dict, expected_model: dict | None, path) -> None:
    if expected_model is not None and dict(expected_model) != checkpoint_config["model"]:
        raise ConfigError(f"ckpt={str(path)!r} was trained with model={checkpoint_config['model']}, "
                          f"not the model={dict(expected_model)} asked for")


# The config groups evaluation builds objects from; the targets each may name are the ones conf/<group>/ declares.
BUILT_GROUPS = ("data", "model", "reg")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def project_targets(group: str) -> set[str]:
    """Every ``_target_`` the installed project's conf/<group>/ declares, and reglab's own classes."""
    import re

    found = set()
    for path in sorted((CONF_DIR / group).rglob("*.yaml")) if (CONF_DIR / group).is_dir() else []:
        found.update(re.findall(r"^\s*_target_:\s*([\w.]+)\s*$", path.read_text(), flags=re.M))
    return found


def check_checkpoint_config(config, path, trusted: tuple = ()) -> None:
    """A checkpoint is data: the config it carries may only name targets the project defines for that group
    (a crafted ``data._target_: pathlib.Path.write_text`` is refused, never called), and holds no
    interpolations (a stored config is resolved), since those would be evaluated on access."""
    def walk(value, key: str, allowed: set[str] | None):
        if isinstance(value, dict):
            for name, inner in value.items():
                dotted = f"{key}.{name}"
                if name == "_target_" and allowed is not None and str(inner) not in allowed:
                    raise ConfigError(f"ckpt={str(path)!r}: {dotted}={inner!r} is not a target this project defines "
                                      f"for {key.split('.')[0]} (allowed: {', '.join(sorted(allowed)) or 'none'}); "
                                      "a checkpoint's config is data, never code (a class of your own: add its yaml to conf/, or "
                                      "name it in trusted_targets=[...])")
                walk(inner, dotted, allowed)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(inner, f"{key}[{i}]", allowed)
        elif isinstance(value, str) and "${" in value:
            raise ConfigError(f"ckpt={str(path)!r}: {key}={value!r} is an interpolation; a checkpoint's config is "
                              "stored resolved, so this one was not written by reglab")

    if not isinstance(config, dict):
        raise ConfigError(f"ckpt={str(path)!r}: its reglab config is a {type(config).__name__}, not a mapping")
    for group in BUILT_GROUPS:
        if not isinstance(config.get(group), dict) and not (group == "reg" and config.get(group) is None):
            raise ConfigError(f"ckpt={str(path)!r}: its config's {group} is {config.get(group)!r}, not a mapping")
        walk(config.get(group), group, project_targets(group) | set(trusted))
        if "_partial_" in str(config.get(group)):
            raise ConfigError(f"ckpt={str(path)!r}: its config's {group} uses _partial_; reglab never writes one")
    if isinstance(config.get("seed"), bool) or not isinstance(config.get("seed"), int):
        raise ConfigError(f"ckpt={str(path)!r}: its config's seed is {config.get('seed')!r}, not an integer")
    for key, value in config.items():  # not built here (trainer, callbacks): only read
        if key not in BUILT_GROUPS:
            walk(value, str(key), None)


def build_from_checkpoint(checkpoint: dict, data_overrides: dict | None = None, path: str | Path = "checkpoint",
                          trusted_targets: tuple = ()):
    """The datamodule and the model with the checkpoint's weights, from the config the checkpoint carries, once
    that config is checked to build only what the project defines (check_checkpoint_config)."""
    from omegaconf import OmegaConf

    check_checkpoint_config(checkpoint[CONFIG_KEY], path, tuple(trusted_targets))
    try:
        return built_from(checkpoint, OmegaConf.create(checkpoint[CONFIG_KEY]), data_overrides)
    except ReglabError:
        raise
    except Exception as err:  # a config or weights that are well-formed data but do not build this run
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(f"ckpt={str(path)!r}: its config and weights do not build a model here "
                          f"({type(err).__name__}: {first})") from None


def built_from(checkpoint: dict, config, data_overrides: dict | None):
    """build_from_checkpoint's work, on a config already checked."""
    from omegaconf import OmegaConf

    from reglab.contracts import check_model_class
    from reglab.errors import import_target, instantiate
    from reglab.models import build_model
    from reglab.regularizers import build_regularizers

    if data_overrides:
        config.data = OmegaConf.merge(config.data, data_overrides)
    # no pre-flight here (the checkpoint's run passed one): the model class's contract is checked as a run's is
    check_model_class(import_target(str(config.model._target_)))
    datamodule = instantiate(config.data, "data", seed=int(config.seed))
    datamodule.setup()
    model = build_model(config.model, datamodule)
    for regularizer in build_regularizers(config.reg):  # sets the dropout rates the model was trained with
        if not regularizer.overrides("penalty"):
            regularizer.configure(model)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return config, datamodule, model


def split_loader(datamodule, split: str):
    loaders = {"test": datamodule.test_dataloader, "validation": lambda: datamodule.val_dataloader()[0]}
    if split not in loaders:
        raise ConfigError(f"split={split!r}: allowed {sorted(loaders)}")
    return loaders[split]()


def evaluate(model: nn.Module, datamodule, split: str, mc_samples: int, seed: int, device: torch.device,
             max_rows: int = 8192) -> dict:
    from lightning_fabric.utilities.apply_func import move_data_to_device

    model.to(device)

    def batches(name: str):
        for batch in split_loader(datamodule, name):
            yield datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0)

    # The temperature is fitted on validation, never on the split it is scored on (unless that is validation).
    fit = [(standard_logits(model, inputs).cpu(), labels.cpu()) for inputs, labels in batches("validation")]
    temperature = fit_temperature(torch.cat([f[0] for f in fit]), torch.cat([f[1] for f in fit]))
    torch.manual_seed(seed)
    logits, mc, labels = [], [], []
    for inputs, batch_labels in batches(split):
        logits.append(standard_logits(model, inputs).cpu())
        mc.append(mc_probabilities(model, inputs, mc_samples, max_rows).cpu())
        labels.append(batch_labels.cpu())
    logits, labels = torch.cat(logits), torch.cat(labels)
    probabilities = {"std": logits.softmax(-1), "ts": (logits / temperature).softmax(-1), "mc": torch.cat(mc)}
    return {**{kind: calibration_metrics(p, labels) for kind, p in probabilities.items()},
            "bins": {kind: reliability_bins(p, labels) for kind, p in probabilities.items()},
            "temperature": temperature, "temperature_fit_split": "validation", "n": len(labels)}


def run_evaluation(ckpt: str, mc_samples: int = 30, split: str = "test", seed: int = 0, device: str = "auto",
                   write_results: bool = True, expected_model: dict | None = None, max_rows: int = 8192,
                   trusted_targets: tuple = ()) -> dict:
    from reglab.results import RESULTS_FILE

    started = time.time()
    checkpoint = load_checkpoint(ckpt)
    check_model_config(checkpoint[CONFIG_KEY], expected_model, ckpt)
    config, datamodule, model = build_from_checkpoint(checkpoint, path=ckpt, trusted_targets=trusted_targets)
    if not dropout_modules(model) or all(m.p == 0 for m in dropout_modules(model)):
        log.warning("the model has no active dropout: MC dropout equals standard inference")
    target = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    outcome = evaluate(model, datamodule, split, mc_samples, seed, target, max_rows)
    # The run folder: the checkpoint's (<run>/checkpoints/x.ckpt), else where the config says it wrote.
    candidates = [Path(ckpt).resolve().parents[1], Path(config.paths.output_dir)]
    run_dir = next((c for c in candidates if (c / RESULTS_FILE).is_file()), candidates[0])
    evaluation_path = run_dir / EVALUATION_FILE
    results = {}
    if not write_results:
        record = record_evaluation(results, outcome, str(ckpt), split, mc_samples, seed, started, None)
    elif not (run_dir / RESULTS_FILE).is_file():
        raise DataUnavailableError(f"{run_dir / RESULTS_FILE}: no results.json, so no run folder to put "
                                   f"{EVALUATION_FILE} in (write_results=false prints the numbers only)")
    else:
        from reglab import folder_lock
        from reglab.atomic import atomic_write

        lock = folder_lock.acquire(run_dir)  # one writer per run folder: never beside a run still training there
        try:
            # Beside the training run's results.json, never inside it: what training measured stays as it was.
            record = record_evaluation(results, outcome, str(ckpt), split, mc_samples, seed, started, run_dir)
            document = {"schema_version": 1, "metrics": results["metrics"], "calibration": results["calibration"]}
            text = json.dumps(document, indent=2, allow_nan=True)
            atomic_write(evaluation_path, lambda handle: handle.write(text.encode()))
        finally:
            lock.release()
    metrics = {k: v for k, v in results["metrics"].items() if k.startswith(("std/", "ts/", "mc/"))}
    return {"metrics": metrics, **record, "results": str(evaluation_path)}


def read_evaluation(run_dir: Path) -> dict | None:
    """``<run_dir>/evaluation.json`` (written by eval.py) as {metrics, calibration}, None if there is none;
    ValueError naming the problem if it is not one."""
    path = Path(run_dir) / EVALUATION_FILE
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    if (not isinstance(document, dict) or not isinstance(document.get("metrics"), dict)
            or not isinstance(document.get("calibration"), dict)):
        raise ValueError(f"{path}: not an evaluation record (expected metrics and calibration mappings)")
    ours = {k: v for k, v in document["metrics"].items() if k.startswith(("std/", "ts/", "mc/"))}
    metrics = {k: v for k, v in ours.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v)}
    return {"metrics": metrics, "calibration": document["calibration"],
            "dropped": sorted(k for k in ours if k not in metrics)}


def record_evaluation(results: dict, outcome: dict, source: str, split: str, mc_samples: int, seed: int,
                      started: float, figure_dir: Path | None) -> dict:
    """Put an ``evaluate()`` outcome into a results dict (``metrics["std/*"]``, ``["ts/*"]``, ``["mc/*"]`` and the
    ``calibration`` record) and draw the reliability diagram into ``figure_dir``; returns the record."""
    results.setdefault("metrics", {}).update(
        {f"{kind}/{k}": v for kind, _ in KINDS for k, v in outcome[kind].items()})
    results["metrics"]["ts/temperature"] = outcome["temperature"]
    record = {"checkpoint": source, "split": split, "mc_samples": mc_samples, "seed": seed, "n": outcome["n"],
              "temperature": outcome["temperature"], "temperature_fit_split": outcome["temperature_fit_split"],
              "n_bins": N_BINS, "reliability": outcome["bins"], "wall_time_s": time.time() - started}
    if figure_dir is not None:
        title = f"{results.get('choices', {}).get('reg', '')}: {mc_samples} MC samples"
        record["figure"] = str(reliability_figure(outcome["bins"], figure_dir / "reliability.png", title))
    results["calibration"] = record
    return record


def reliability_figure(bins: dict, path: Path, title: str = "") -> Path:
    """Reliability diagram, standard vs temperature-scaled vs MC dropout: accuracy per confidence bin against the
    diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reglab.atomic import atomic_write

    from reglab.report.figures import SPARSE_BIN, bin_colours

    figure, axis = plt.subplots(figsize=(4.2, 4.6))
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for (kind, label), marker, colour in zip(KINDS, ("o", "^", "s"), ("#000000", "#E69F00", "#56B4E9")):
        if kind not in bins:
            continue
        b = bins[kind]
        points = [(c, a, n) for c, a, n in zip(b["confidence"], b["accuracy"], b["count"]) if n > 0]
        if points:
            x, y, n = zip(*points)
            axis.plot(x, y, color=colour, linewidth=1, alpha=0.5, label=label)
            axis.scatter(x, y, marker=marker, s=16, color=bin_colours(colour, n), zorder=3)
    if "std" in bins:  # examples per bin: a bin of 2 says little about calibration
        count = bins["std"]["count"]
        for i, n in enumerate(count):
            if n:
                axis.text((i + 0.5) / len(count), 0.01, str(int(n)), fontsize=5, ha="center", va="bottom",
                          rotation=90, color="0.35")
    axis.set(xlabel=f"confidence (numbers: test examples per bin; faded: < {SPARSE_BIN})", ylabel="accuracy",
             xlim=(0, 1), ylim=(0, 1), title=title)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=120))
    plt.close(figure)
    return path


def main(cfg) -> dict:
    """The Hydra entry (eval.py)."""
    import sys

    from reglab.errors import ReglabError

    try:
        outcome = run_evaluation(str(cfg.ckpt), int(cfg.mc_samples), str(cfg.split), int(cfg.seed), str(cfg.device),
                                 bool(cfg.write_results), cfg.get("model"), int(cfg.max_rows),
                                 tuple(cfg.get("trusted_targets") or ()))
    except ReglabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    metrics = outcome["metrics"]
    print(f"{'':20s} {'acc':>7s} {'nll':>7s} {'brier':>7s} {'ece':>7s} {'entropy':>8s}")
    labels = {"std": "standard", "ts": f"temperature {outcome['temperature']:.3f}", "mc": f"MC ({cfg.mc_samples})"}
    for kind, _ in KINDS:
        row = [metrics[f"{kind}/{k}"] for k in ("acc", "nll", "brier", "ece", "entropy")]
        print(f"{labels[kind]:20s} " + " ".join(f"{v:7.4f}" for v in row[:4]) + f" {row[4]:8.4f}")
    if cfg.write_results:
        print(f"wrote {outcome['results']} (metrics std/*, ts/*, mc/*; beside results.json, which keeps what "
              f"training measured; reglab-report reads both); reliability diagram: {outcome.get('figure')}")
    return outcome

