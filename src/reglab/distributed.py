"""One job on several devices. Every rank runs the same ``train()`` under Lightning's DDP strategy; what
differs is who starts the rank processes:

- a cluster launcher (``torchrun``, or ``srun`` under SLURM) starts one process per device on every node;
  Lightning reads the ranks from the environment (trainer=ddp_multinode);
- otherwise the job spawns one process per device itself (trainer=ddp, ddp_cpu, or strategy=ddp_spawn), in
  single runs and multiruns alike. Lightning's own ``ddp`` re-launches the command line, which under Hydra
  ``-m`` re-runs the whole sweep in every rank; its ``ddp_spawn`` spawns around each fit/test call and loses
  callback state and the W&B run in the children. Spawning the whole job avoids both.

Rank 0 alone writes results.json and logs to W&B. Every rank destroys its process group at the end (gloo
otherwise aborts at exit about one run in four)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from reglab.errors import ConfigError

DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
STRATEGIES = ("auto",) + DDP_STRATEGIES
# Set by torchrun / a SLURM step with several tasks: the processes exist already.
EXTERNAL_RANK_VARIABLES = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def launched_externally() -> bool:
    if any(name in os.environ for name in EXTERNAL_RANK_VARIABLES):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_JOB_NAME") not in ("bash",
                                                                                                  "interactive")


def global_rank() -> int:
    """This process's rank from the environment (valid before any Trainer exists)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def uses_gpu(trainer_cfg) -> bool:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def devices_per_node(trainer_cfg) -> int:
    """How many processes one node runs for this trainer config (Lightning's ``devices`` semantics)."""
    devices = trainer_cfg.get("devices", "auto")
    if isinstance(devices, str) and devices not in ("auto", "-1"):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if not isinstance(devices, (str, int)):  # a list of GPU indices (a ListConfig from YAML)
        return len(devices)
    gpu = uses_gpu(trainer_cfg)
    if devices in ("auto", -1, "-1"):
        if not gpu:
            return 1
        import torch

        return max(1, torch.cuda.device_count())
    if int(devices) < 1:
        raise ConfigError(f"trainer.devices={devices}: allowed a positive count, -1 (all GPUs), a list of "
                          "GPU indices, or 'auto'")
    return int(devices)


def processes_per_job(trainer_cfg) -> int:
    """Validates the strategy against the devices; returns the processes this node runs for one job."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    per_node = devices_per_node(trainer_cfg)
    nodes = int(trainer_cfg.get("num_nodes", 1))
    if per_node * nodes > 1 and strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={strategy}: reglab runs multi-device jobs with DDP; "
                          f"allowed {list(STRATEGIES)}")
    if nodes > 1 and not launched_externally():
        raise ConfigError(f"trainer.num_nodes={nodes} needs a launcher that starts one process per device on "
                          "every node: srun (see scripts/slurm_ddp.sbatch) or torchrun")
    return per_node


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_job(config: dict, label, nprocs: int, start_method: str = "spawn") -> None:
    """Run ``reglab.run.train_in_process`` on ``config`` (resolved, plain) in ``nprocs`` processes, one per
    device, and wait. Any rank failing stops the others and raises here.

    ``fork`` skips re-importing the stack in every rank (seconds on CPU); CUDA cannot be used in a forked
    child, so GPU jobs always spawn."""
    import torch.multiprocessing as mp

    mp.start_processes(_rank_main, args=(config, label, nprocs, free_port()), nprocs=nprocs, join=True,
                       start_method=start_method)


def _rank_main(local_rank: int, config: dict, label, nprocs: int, port: int) -> None:
    # The environment torchrun would give; set before Lightning is imported so its rank_zero_only agrees.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(nprocs),
                      RANK=str(local_rank), LOCAL_RANK=str(local_rank), NODE_RANK="0")
    import logging

    if local_rank == 0:
        _log_to_job_file(Path(config["paths"]["output_dir"]))
    else:  # one voice per job: the other ranks report only problems
        logging.getLogger().setLevel(logging.WARNING)
    from omegaconf import OmegaConf

    from reglab.run import train_in_process

    config["trainer"]["strategy"] = "ddp"  # the processes exist now: Lightning must not start more
    train_in_process(OmegaConf.create(config), label)


def _log_to_job_file(output_dir: Path) -> None:
    """A spawned rank 0 has no logging set up (Hydra configured the parent); it appends to the job's train.log
    as the parent would. A forked one inherited the parent's handlers, and basicConfig leaves them."""
    import logging

    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler()])


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_spread(value, device) -> float:
    """max - min of a scalar across ranks: the penalty and the weight norm must agree on every rank, since
    DDP keeps the parameters identical and each rank adds the same penalty."""
    import torch
    import torch.distributed as dist

    high = torch.tensor(float(value), dtype=torch.float64, device=device)
    low = -high
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MAX)
    return float(high + low)
