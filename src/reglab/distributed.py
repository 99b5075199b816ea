"""Where a process stands in a multi-device job: its rank, how many processes a job runs, who started them, and
the end-of-job teardown. Every rank runs the same job (reglab.job) under Lightning's DDP strategy; what differs is
who starts the rank processes:

- a cluster launcher (``torchrun``, or ``srun`` under SLURM) starts one process per device on every node;
  Lightning reads the ranks from the environment (trainer=ddp_multinode);
- otherwise the launcher (reglab.run) spawns one process per device (trainer=ddp, ddp_cpu, strategy=ddp_spawn), in
  single runs and multiruns alike. Lightning's own ``ddp`` re-launches the command line, which under Hydra
  ``-m`` re-runs the whole sweep in every rank; its ``ddp_spawn`` spawns around each fit/test call and loses
  callback state and the W&B run in the children. Spawning the whole job avoids both.

Rank 0 alone writes results.json and logs to W&B. Every rank destroys its process group at the end (gloo
otherwise aborts at exit about one run in four)."""

from __future__ import annotations

import os

from reglab.errors import ConfigError

DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
STRATEGIES = ("auto",) + DDP_STRATEGIES


def launched_externally() -> bool:
    """Whether the rank processes exist already: torchrun (Lightning's torchelastic detection), or a SLURM step
    with several tasks (Lightning's SLURM detection; a one-task allocation spawns its own ranks)."""
    if not {"RANK", "LOCAL_RANK", "SLURM_NTASKS"} & set(os.environ):
        return False  # answered without importing Lightning (seconds): neither detection can say yes
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect() or "LOCAL_RANK" in os.environ:
        return True
    return SLURMEnvironment.detect() and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def global_rank() -> int:
    """This process's rank, valid before any Trainer exists: set by torchrun or reglab's own spawn (RANK), else
    by SLURM (Lightning's SLURMEnvironment reads SLURM_PROCID), else 0."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if "SLURM_NTASKS" in os.environ:  # only then can Lightning's detection say yes (importing it takes seconds)
        from lightning_fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():
            return SLURMEnvironment().global_rank()
    return int(os.environ.get("LOCAL_RANK", 0))


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
