"""reglab's speed against its baselines, each measured in the same process run so machine noise cancels:

  (a) framework overhead: reglab's training step (the real Trainer, module, datamodule, callbacks and loggers of
      `python train.py`) against a hand-written PyTorch loop on the same model, data tensors, batch size,
      optimizer and augmentation;  framework_throughput_ratio = reglab steps/s / raw loop steps/s
  (b) penalty overhead: reglab steps with each regularizer against reg=none;  penalty_time_ratio[reg] =
      step time / reg=none step time
  (c) the time from `python train.py` to the first training step, phase by phase, with a cold and a warm
      data cache (separate processes)
  (d) peak memory: a reglab run against the raw loop (separate processes; on a GPU also in process)
  (f) time to error: `python train.py` with a bad value (reg.l1.strength=-1), an unknown choice (reg=l3) and a
      data/model mismatch, wall seconds until it exits with its one-line error (median of --error-repeats)
  (e) MC dropout inference against training, the same model with dropout on: image-samples per second of
      reglab.evaluation.mc_probabilities (--mc-samples passes over an eval batch) over training images per second
      of the raw loop;  mc_throughput_ratio (target >= 2: no backward, no autograd state, large batches)

    python scripts/bench.py                        # CPU, the default CNN and batch size, random images
    python scripts/bench.py --device cuda          # the same on a GPU (trainer=gpu: the device-resident path)
    python scripts/bench.py --data DIR             # real CIFAR-10 (any layout data.path takes)
    python scripts/bench.py -- experiment=cifar_fast    # any train.py overrides after --

(a) and (b) time every reglab step paired with a raw-loop step run right after it (paired_clock), over several
rounds of reg=none, reg1, reg2, ...: this machine's drift (+-20% over minutes) cancels in each pair. On a GPU
both are synchronized at each step boundary, which exposes host overhead the GPU would otherwise hide: the GPU
ratio is a conservative one. Prints a table; writes bench.json (--out)."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
os.environ.update({k: os.environ.get(k, v) for k, v in OFFLINE.items()})

PENALTY_REGS = {"elasticnet": "reg=elasticnet", "elasticnet+maxnorm": "reg=[elasticnet,maxnorm]",
                "prox_l1": "reg=prox_l1"}


def write_random_cifar(folder: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random CIFAR-shaped images in the cifar-10-batches-py layout: no download, and the step time of a conv
    net does not depend on what the pixels show."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return folder


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from reglab import resolvers

    resolvers.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RawLoop:
    """A hand-written training loop: what reglab's step does (gather a batch, crop, flip, normalise, forward,
    cross-entropy, backward, optimizer step, schedule) with nothing around it. On a GPU its data sits on the
    device, as reglab's does there."""

    def __init__(self, cfg, splits: dict, total_steps: int):
        import torch

        from reglab.models import build_model

        self.device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
        self.model = build_model(cfg.model, splits["datamodule"]).to(self.device)
        if cfg.get("compile", False):
            self.model.compile()
        self.model.train()
        self.optimizer, self.schedule = raw_optimizer(cfg.optim, self.model.parameters(), total_steps)
        images, labels = splits["train"]
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.mean, self.std = splits["mean"].to(self.device), splits["std"].to(self.device)
        self.batch_size, self.padding, self.hflip = int(cfg.data.batch_size), int(cfg.data.crop_padding), \
            bool(cfg.data.hflip)
        self.bf16 = str(cfg.trainer.precision).startswith("bf16")
        self.order = torch.randperm(len(self.labels), device=self.device)
        self.position = 0

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        from reglab.data.augment import normalize, random_crop, random_hflip

        if self.position + self.batch_size > len(self.order):
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        x, y = self.images[index], self.labels[index]
        x = random_crop(x, self.padding)
        x = normalize(random_hflip(x) if self.hflip else x, self.mean, self.std)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()


def paired_clock(raw: RawLoop, warmup: int, steps: int):
    """A callback that runs one raw-loop step at the start of every reglab step and times both: step j of
    reglab is paired with the raw step right after it, so drift of a noisy machine (minutes-long, +-20% here)
    cancels in each pair's ratio. Both are synchronized at every boundary on a GPU."""
    import pytorch_lightning as pl

    class PairedClock(pl.Callback):
        def __init__(self):
            self.reglab: list[float] = []
            self.raw: list[float] = []
            self.last_end = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            step = trainer.global_step
            if step < warmup or step > warmup + steps:
                return
            synchronize(raw.device)
            started = time.perf_counter()
            if self.last_end is not None:
                self.reglab.append(started - self.last_end)
            if step < warmup + steps:
                raw.step()
                synchronize(raw.device)
                self.last_end = time.perf_counter()
                self.raw.append(self.last_end - started)

    return PairedClock()


def time_reglab(cfg, splits: dict, output_dir: Path, warmup: int, steps: int) -> dict:
    """Step times of the real reglab run built from ``cfg`` (build_run: what train.py trains with), each paired
    with a raw-loop step."""
    from omegaconf import open_dict

    from reglab.job import build_run
    from reglab.loggers import finish_wandb
    from reglab.preflight import validate
    from reglab.results import RunRecord

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + steps + 1
        cfg.paths.output_dir = str(output_dir)
    run = validate(cfg)
    raw = RawLoop(cfg, splits, warmup + steps)
    clock = paired_clock(raw, warmup, steps)
    parts = build_run(run, RunRecord.start(cfg, run.label), extra_callbacks=(clock,))
    try:
        parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    finally:
        finish_wandb()
    return {"reglab": clock.reglab, "raw": clock.raw[:len(clock.reglab)]}


def raw_optimizer(cfg_optim, params, total_steps: int):
    """The hand-written loop's optimizer (the config's, no decay) and a plain cosine schedule."""
    import math

    import torch

    from reglab.optim import build_optimizer

    optimizer = build_optimizer(cfg_optim, [{"params": list(params)}])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / total_steps))))
    return optimizer, schedule


def load_splits(cfg) -> dict:
    """The training tensors, normalisation statistics and model arguments, from the datamodule reglab trains with."""
    from reglab.errors import instantiate

    datamodule = instantiate(cfg.data, "data", seed=int(cfg.seed))
    datamodule.setup()
    return {"train": datamodule.splits.train, "mean": datamodule.mean, "std": datamodule.std,
            "datamodule": datamodule}


def throughput_rounds(base: list[str], scratch: Path, args) -> dict:
    """(a) and (b): reglab runs with reg=none and each penalty reg, once per round, every step paired with a
    raw-loop step. (a) = median over pairs of raw / reglab(none); (b) = median of reglab(reg) / raw over median
    of reglab(none) / raw: the raw loop is the common yardstick that cancels the machine's drift."""
    configs = {"none": compose(base + ["reg=none"])}
    configs.update({name: compose(base + [override]) for name, override in PENALTY_REGS.items()})
    splits = load_splits(configs["none"])
    pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    for round_index in range(args.rounds):
        line = []
        for name, cfg in configs.items():
            timed = time_reglab(cfg, splits, scratch / f"round{round_index}-{name}", args.warmup, args.steps)
            pairs[name] += list(zip(timed["reglab"], timed["raw"]))
            line.append(f"{name} {1000 * statistics.median(timed['reglab']):.1f} ms "
                        f"(raw {1000 * statistics.median(timed['raw']):.1f})")
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(line), flush=True)
    relative = {name: statistics.median(reglab / raw for reglab, raw in values) for name, values in pairs.items()}
    return {
        "framework_throughput_ratio": 1 / relative["none"],
        "penalty_time_ratio": {name: relative[name] / relative["none"] for name in PENALTY_REGS},
        "step_time_over_raw": relative,
        "ms_per_step": {name: 1000 * statistics.median(r for r, _ in values) for name, values in pairs.items()},
        "raw_ms_per_step": 1000 * statistics.median(raw for values in pairs.values() for _, raw in values),
        "pairs_per_config": len(pairs["none"]),
    }


def mc_throughput(base: list[str], args) -> dict:
    """(e): MC dropout's image-samples per second over the raw training loop's images per second, same model (with
    reg=dropout's rates), same process; the two alternate, so the machine's drift cancels in each pair."""
    from reglab.data.augment import normalize
    from reglab.evaluation import mc_probabilities
    from reglab.preflight import validate

    cfg = compose(base + ["reg=dropout"])
    run = validate(cfg)
    splits = load_splits(cfg)
    raw = RawLoop(cfg, splits, total_steps=10 ** 6)
    for regularizer in run.regularizers:
        regularizer.configure(raw.model)
    images, _ = splits["train"]
    eval_batch = int(cfg.data.eval_batch_size)
    inputs = normalize(images[:eval_batch].to(raw.device), raw.mean, raw.std)
    for _ in range(args.warmup):
        raw.step()
        mc_probabilities(raw.model, inputs, args.mc_samples)
        raw.model.train()
    train_rates, mc_rates = [], []
    for _ in range(max(3, args.steps // 5)):
        synchronize(raw.device)
        started = time.perf_counter()
        for _ in range(5):
            raw.step()
        synchronize(raw.device)
        train_rates.append(5 * raw.batch_size / (time.perf_counter() - started))
        started = time.perf_counter()
        mc_probabilities(raw.model, inputs, args.mc_samples)
        synchronize(raw.device)
        mc_rates.append(len(inputs) * args.mc_samples / (time.perf_counter() - started))
        raw.model.train()
    return {"mc_throughput_ratio": statistics.median(m / t for m, t in zip(mc_rates, train_rates)),
            "mc_image_samples_per_s": statistics.median(mc_rates), "train_images_per_s": statistics.median(train_rates),
            "mc_samples": args.mc_samples, "mc_eval_batch": len(inputs)}


def first_step_runs(base: list[str], scratch: Path, data_path: str) -> dict:
    """(c) and (d): `python train.py` in a fresh process, with an empty data cache and again with it filled."""
    env = {**os.environ, "REGLAB_CACHE_DIR": str(scratch / "first_step_cache")}  # empty: the first run is cold
    env.pop("WANDB_SERVICE", None)
    runs = {}
    for name in ("cold_cache", "warm_cache"):
        run_dir = scratch / f"first_step_{name}"
        command = [sys.executable, str(ROOT / "train.py"), *base, "++trainer.limit_train_batches=5",
                   "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2", f"hydra.run.dir={run_dir}"]
        started = time.time()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"error: {' '.join(command[1:])} failed:\n{done.stderr[-3000:]}")
        results = json.loads((run_dir / "results.json").read_text())
        runs[name] = {"wall_s": time.time() - started, "timing": results["timing"],
                      "peak_memory": results["peak_memory"]}
    child = subprocess.run([sys.executable, __file__, "--raw-child", json.dumps(base)], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(f"error: raw-loop child failed:\n{child.stderr[-3000:]}")
    raw_peak = json.loads(child.stdout.strip().splitlines()[-1])
    reglab_peak = runs["warm_cache"]["peak_memory"]["cpu_peak_rss_mb"]
    return {"first_step": runs, "peak_memory": {"raw_loop": raw_peak, "reglab": runs["warm_cache"]["peak_memory"],
                                                "cpu_peak_rss_ratio": reglab_peak / raw_peak["cpu_peak_rss_mb"]}}


ERROR_CASES = {  # name: (train.py arguments, what the one-line error must say)
    "bad value": (["data=digits", "reg=l1", "reg.l1.strength=-1"], "reg.l1.strength=-1"),
    "unknown choice": (["reg=l3"], "reg=l3: unknown choice"),
    "data/model mismatch": (["data=digits", "model=transformer"], "takes tokens input"),
}


def time_to_error(repeats: int) -> dict:
    """(f): each bad command in a fresh process, as a user types it; the median wall time to its error."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    timings = {}
    with tempfile.TemporaryDirectory(prefix="reglab-bench-errors-") as tmp:
        for name, (arguments, expected) in ERROR_CASES.items():
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                command = [sys.executable, str(ROOT / "train.py"), *arguments, f"hydra.run.dir={tmp}/run"]
                done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
                seconds.append(time.perf_counter() - started)
                if done.returncode != 2 or expected not in done.stderr:
                    raise SystemExit(f"error: train.py {' '.join(arguments)}: expected exit 2 and {expected!r}, got "
                                     f"{done.returncode}:\n{done.stderr[-2000:]}")
            timings[name] = statistics.median(seconds)
    return {"time_to_error_s": timings}


def raw_child(base: list[str]) -> None:
    """The raw loop alone in a fresh process, for its peak memory (printed as JSON on the last line)."""
    from reglab.profiling import peak_rss_mb

    import torch

    cfg = compose(base)
    raw = RawLoop(cfg, load_splits(cfg), total_steps=6)
    for _ in range(6):
        raw.step()
    cuda = torch.cuda.max_memory_allocated(raw.device) / 2**20 if raw.device.type == "cuda" else None
    print(json.dumps({"cpu_peak_rss_mb": peak_rss_mb(), "cuda_peak_allocated_mb": cuda}))


def print_table(bench: dict) -> None:
    print(f"\nreglab benchmark on {bench['device_name']} ({bench['date']})")
    print(f"{'measure':42s} {'value':>10s}  target")
    if "framework_throughput_ratio" in bench:
        print(f"{'(a) framework_throughput_ratio':42s} {bench['framework_throughput_ratio']:10.3f}  >= 0.95")
        for name, ratio in bench["penalty_time_ratio"].items():
            print(f"{'(b) penalty_time_ratio ' + name:42s} {ratio:10.3f}  <= 1.03")
        print(f"{'    ms/step raw loop':42s} {bench['raw_ms_per_step']:10.1f}")
        for name, ms in bench["ms_per_step"].items():
            print(f"{'    ms/step reglab ' + name:42s} {ms:10.1f}")
    if "mc_throughput_ratio" in bench:
        print(f"{'(e) mc_throughput_ratio':42s} {bench['mc_throughput_ratio']:10.2f}  >= 2")
        print(f"{'    MC image-samples/s':42s} {bench['mc_image_samples_per_s']:10.0f}")
        print(f"{'    training images/s (raw loop)':42s} {bench['train_images_per_s']:10.0f}")
    for name, seconds in bench.get("time_to_error_s", {}).items():
        target = "(imports the classes)" if name == "data/model mismatch" else "<= 2"
        print(f"{'(f) time to error, ' + name + ' (s)':42s} {seconds:10.2f}  {target}")
    if "first_step" not in bench:
        return
    for run, record in bench["first_step"].items():
        total = record["timing"].get("to_first_step_s", float("nan"))
        print(f"{'(c) to first step, ' + run + ' (s)':42s} {total:10.2f}")
        for phase, seconds in record["timing"].items():
            if phase != "to_first_step_s":
                print(f"{'      ' + phase:42s} {seconds:10.2f}")
    memory = bench["peak_memory"]
    print(f"{'(d) peak RSS raw loop (MB)':42s} {memory['raw_loop']['cpu_peak_rss_mb']:10.0f}")
    print(f"{'(d) peak RSS reglab run (MB)':42s} {memory['reglab']['cpu_peak_rss_mb']:10.0f}")
    print(f"{'(d) peak RSS ratio':42s} {memory['cpu_peak_rss_ratio']:10.2f}")
    for name in ("raw_loop", "reglab"):
        mb = memory[name].get("cuda_peak_allocated_mb")
        if mb is not None:
            print(f"{'(d) cuda peak allocated ' + name + ' (MB)':42s} {mb:10.0f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data", help="a CIFAR-10 folder (any layout data.path takes); default: random images")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--skip-startup", action="store_true", help="only (a), (b) and (e): no (c), (d), (f)")
    parser.add_argument("--startup-only", action="store_true", help="only (c), (d) and (f): start-up, memory, errors")
    parser.add_argument("--mc-samples", type=int, default=30, help="(e): MC dropout passes per eval batch")
    parser.add_argument("--error-repeats", type=int, default=3, help="(f): runs of each bad command (median)")
    parser.add_argument("--raw-child", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="train.py overrides (after --), e.g. experiment=cifar_fast")
    args = parser.parse_args(argv)
    if args.raw_child:
        raw_child(json.loads(args.raw_child))
        return 0
    import logging

    import torch

    import warnings

    import pytorch_lightning  # noqa: F401  (sets its loggers' levels on import; ours come after)

    for name in ("pytorch_lightning", "lightning_fabric", "reglab"):
        logging.getLogger(name).setLevel(logging.ERROR)  # a Trainer per measurement: keep the table readable
    warnings.filterwarnings("ignore")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is visible", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="reglab-bench-") as tmp:
        scratch = Path(tmp)
        trainer = ["trainer=gpu"] if args.device == "cuda" else ["trainer=cpu"]
        probe = compose(trainer + args.overrides + ["paths.output_dir=."])
        batch = int(probe.data.batch_size)
        if args.data:
            data_path = str(Path(args.data).resolve())
        else:  # every timed step inside one epoch, plus the carved validation split
            data_path = str(write_random_cifar(scratch / "data", batch * (args.warmup + args.steps + 2) + 512, 512))
        base = [*trainer, f"data.path={data_path}", "data.val_size=512", "data.train_eval_size=512",
                *args.overrides]
        os.environ["REGLAB_CACHE_DIR"] = str(scratch / "cache")
        print(f"bench: {' '.join(base)}; {args.rounds} rounds x {args.steps} steps (+{args.warmup} warmup)",
              flush=True)
        bench = {"device": args.device, "date": time.strftime("%Y-%m-%d"),
                 "device_name": torch.cuda.get_device_name() if args.device == "cuda" else
                 f"CPU ({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads)",
                 "overrides": base, "batch_size": batch, "steps": args.steps, "warmup": args.warmup,
                 "rounds": args.rounds, "data": args.data or "random CIFAR-shaped uint8 images"}
        if not args.startup_only:
            bench.update(throughput_rounds(base + ["paths.output_dir=."], scratch, args))
            bench.update(mc_throughput(base + ["paths.output_dir=."], args))
        if not args.skip_startup:
            bench.update(first_step_runs(base, scratch, data_path))
            bench.update(time_to_error(args.error_repeats))
    print_table(bench)
    from reglab.atomic import atomic_write

    atomic_write(args.out, lambda handle: handle.write((json.dumps(bench, indent=2) + "\n").encode()))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
