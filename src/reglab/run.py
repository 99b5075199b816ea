"""The launcher: what happens to a job between Hydra and training.

    error policy (main) -> hold the run folder -> reglab.preflight.preflight (once) -> skip | dry run
      -> how to launch: in this process | on a claimed GPU (hydra/launcher=gpus) | one spawned rank per device
      -> reglab.job.run_job

It knows nothing of Lightning; the pre-flight imports torch and Lightning only once the config's values are
checked (reglab.values), so a bad value is reported within a second. The job (reglab.job) does the training and
never imports this module."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from reglab import profiling

profiling.mark("imports_started")

from omegaconf import DictConfig

from reglab import console, distributed, errors, folder_lock, resolvers
from reglab.errors import Interrupted, ReglabError
from reglab.gpu_slots import claim_slot, launcher_choice, launcher_jobs
from reglab.preflight import Preflight, preflight
from reglab.results import RESULTS_FILE, RunRecord, read_results

profiling.mark("imports_done")

log = logging.getLogger(__name__)


def main(cfg: DictConfig) -> float | None:
    """The CLI job: a user error is one line and exit code 2. In a multirun, a failed job is recorded in its
    results.json (status failed, with the error) and the sweep goes on with the other jobs; it returns NaN,
    which an Optuna sweep counts as a failed trial. Otherwise it returns ``optimized_metric`` to the sweeper."""
    console.configure(cfg.get("verbose", False))
    try:
        results = train(cfg)
    except Interrupted as stop:
        if stop.pass_on is not None:  # submitit's preemption handler: it requeues the job, which then resumes
            print(f"interrupted: {stop}; handing {stop.signal_name} on to the scheduler's handler (requeue)",
                  file=sys.stderr)
            stop.pass_on(int(getattr(signal, stop.signal_name)), None)
        print(f"interrupted: {stop}; re-run the same command to resume", file=sys.stderr)
        summary = console.summary_of_stopped_sweep()
        if summary:
            print("\n".join(summary), flush=True)
        sys.exit(stop.exit_code)  # non-zero, so a scheduler (and Hydra) sees the job did not finish
    except folder_lock.FolderBusy as busy:
        if console.is_multirun():
            print(f"busy elsewhere (skipped here): {busy}", file=sys.stderr)
            return float("nan")
        print(f"error: {busy}", file=sys.stderr)
        sys.exit(2)
    except ReglabError as err:
        print(f"error: {err}", file=sys.stderr)
        if console.is_multirun():
            return float("nan")
        sys.exit(2)
    except Exception:
        if console.is_multirun():
            log.exception("job failed; the sweep goes on (its results.json says status: failed)")
            return float("nan")
        raise
    return results.get("metrics", {}).get(cfg.get("optimized_metric", "val/acc"))


def adopt_legacy_folder(output_dir: Path) -> None:
    """A sweep job whose folder has an older name (every override spelled out, data.path=.._shared_data_x,
    reg=none,seed=0,trainer.max_epochs=3: reglab before job folders named the swept keys only) takes that folder
    over under its short name, so a re-run still finds the finished job and resumes the unfinished one instead of
    starting over beside it."""
    if not console.is_multirun():
        return
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        names = resolvers.legacy_folder_names(hydra_cfg.overrides.task,
                                              hydra_cfg.job.config.override_dirname.exclude_keys,
                                              hydra_cfg.job.override_dirname)
    except Exception:  # noqa: BLE001 - no Hydra (a test, a script): nothing to adopt
        return
    legacy = next((output_dir.parent / name for name in names if output_dir.parent / name != output_dir
                   and (output_dir.parent / name).is_dir() and any((output_dir.parent / name).iterdir())), None)
    if legacy is None:
        return
    if output_dir.is_dir() and any(output_dir.iterdir()):
        return  # the short folder has a run of its own: leave both
    if output_dir.is_dir():
        output_dir.rmdir()  # Hydra made it empty a moment ago
    os.replace(legacy, output_dir)
    log.info("job folder %s is now %s (shorter job folder names)", legacy.name, output_dir.name)


def hold_folder(cfg: DictConfig, output_dir: Path):
    """This process's lock on the run folder (reglab.folder_lock), or None where it takes none: a dry run writes
    nothing, and in a DDP job launched from outside (torchrun, srun) rank 0 holds it for every rank."""
    if cfg.get("dry_run", False) or distributed.global_rank() != 0:
        return None
    try:
        return folder_lock.acquire(output_dir)
    except folder_lock.FolderBusy as busy:
        if console.is_multirun():
            console.note_job(output_dir, f"busy {busy.holder}")
        raise


def train(cfg: DictConfig) -> dict:
    """Hold the run folder, pre-flight once (skip a completed run, validate, build), then train: here, on a GPU
    claimed from the node's pool (hydra/launcher=gpus), or in one process per device (DDP). The folder is
    released however the run ends."""
    output_dir = Path(cfg.paths.output_dir)
    dry_run = cfg.get("dry_run", False)
    if not dry_run and distributed.global_rank() == 0:
        adopt_legacy_folder(output_dir)
    lock = hold_folder(cfg, output_dir)
    try:
        run = preflight(cfg)
        if run.completed is not None:
            log.info("skipping %s: it already completed with this config (skip_completed=false reruns it)",
                     output_dir)
            print(f"{'[dry-run] ' if dry_run else ''}skip (completed): {output_dir}")
            if not dry_run:
                console.note_job(output_dir, "skipped")
            return run.completed
        if dry_run:
            print(f"[dry-run] would run: {run.label.wandb_name(cfg.seed, cfg.data.get('fold'))} -> {output_dir}")
            return {"status": "dry_run", "choices": run.label.choices, "seed": int(cfg.seed),
                    "output_dir": str(output_dir)}
        return launch(run)
    finally:
        if lock is not None:
            lock.release()


def launch(run: Preflight) -> dict:
    """How this job runs: on a claimed GPU slot, in spawned DDP ranks, or here."""
    if launcher_choice() == "gpus":
        return train_on_claimed_gpu(run)
    if run.processes > 1 and not distributed.launched_externally():
        return train_spawned(run)
    from reglab.job import run_job

    return run_job(run)


def train_on_claimed_gpu(run: Preflight) -> dict:
    """One of N parallel jobs on a node: hold a GPU of its own for the whole run. Without a GPU (tests,
    a CPU node) the slots stand for CPU workers and the job trains on the CPU."""
    gpu = distributed.uses_gpu(run.cfg.trainer)
    import torch

    n_slots = torch.cuda.device_count() if gpu else launcher_jobs()
    with claim_slot(n_slots, run.cfg.paths.gpu_lock_dir) as slot:
        log.info("claimed GPU slot %d of %d", slot, n_slots)
        if gpu:
            run.cfg.trainer.devices = [slot]
        from reglab.job import run_job

        return run_job(run, device_slot=slot)


# -- DDP on this node: one spawned process per device ------------------------------------------------------------
# Lightning's own ``ddp`` re-launches the command line, which under Hydra ``-m`` re-runs the whole sweep in every
# rank; its ``ddp_spawn`` spawns around each fit/test call and loses callback state and the W&B run in the
# children. Spawning the whole job avoids both.

def train_spawned(run: Preflight) -> dict:
    """One process per device, each running the job on this pre-flight; rank 0 writes results.json. A rank that
    fails with a user error leaves it in an error file, so the parent reports that one line (not a traceback)."""
    cfg, output_dir, started = run.cfg, run.output_dir, time.time()
    log.info("spawning %d DDP processes", run.processes)
    spawn = distributed.uses_gpu(cfg.trainer) or cfg.trainer.get("strategy") == "ddp_spawn"
    with tempfile.TemporaryDirectory(prefix="reglab-ranks-") as error_dir:
        try:
            received = spawn_ranks(run.resolved(), Path(error_dir), start_method="spawn" if spawn else "fork")
        except Exception as err:
            reported = rank_error(Path(error_dir)) or err
            path = output_dir / RESULTS_FILE
            if not path.exists() or path.stat().st_mtime < started:  # no rank 0 left to say so
                RunRecord.failed(cfg, run.label, reported, started).write()
            raise reported from None
    results = read_results(output_dir / RESULTS_FILE)
    if results.get("status") == "interrupted":  # the ranks stopped together and saved; say so as a run does
        raise Interrupted(received.name or "SIGTERM", received.pass_on)
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_ranks(run: Preflight, error_dir: Path, start_method: str = "spawn") -> "ForwardedSignals":
    """Run the job on ``run`` (its config resolved) in ``run.processes`` processes and wait; any rank failing
    stops the others and raises here. ``fork`` skips re-importing the stack in every rank (seconds on CPU); CUDA
    cannot be used in a forked child, so GPU jobs always spawn (and pickle the pre-flight to each rank)."""
    import pickle

    import torch.multiprocessing as mp

    # pickled here, unpickled by each rank once its rank is in the environment: unpickling the datamodule
    # imports Lightning, whose rank_zero_only reads the rank when it is imported
    payload = pickle.dumps(run)
    context = mp.start_processes(_rank_main, args=(payload, run.processes, free_port(), str(error_dir)),
                                 nprocs=run.processes, join=False, start_method=start_method)
    with ForwardedSignals(context.processes) as received:
        while not context.join():
            pass
    return received


class ForwardedSignals(errors.StopSignalHandlers):
    """While the ranks run, a stop signal that reaches this (parent) process is passed to each of them, which
    stop together at the next step (callbacks.GracefulStop); the parent waits for them. A second Ctrl+C kills
    them at once. Records the first signal and, for a preemption signal someone else was waiting for
    (submitit), their handler (``pass_on``), to be called once the ranks have saved."""

    def __init__(self, processes):
        self.processes, self.name, self.pass_on, self._previous = processes, None, None, {}

    def forward(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        hard = name == "SIGINT" and self.name == "SIGINT"
        self.name = self.name or name
        self.pass_on = errors.preemption_handler(name, self._previous.get(signum)) or self.pass_on
        for process in self.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL if hard else signum)



def _rank_main(local_rank: int, payload: bytes, nprocs: int, port: int, error_dir: str) -> None:
    # The environment torchrun would give; set before Lightning is imported so its rank_zero_only agrees.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(nprocs),
                      RANK=str(local_rank), LOCAL_RANK=str(local_rank), NODE_RANK="0")
    import pickle

    run: Preflight = pickle.loads(payload)  # the parent's own pre-flight (reglab.preflight), not a file
    if local_rank == 0:
        _log_to_job_file(run.output_dir)
    else:  # one voice per job: the other ranks report only problems
        logging.getLogger().setLevel(logging.WARNING)
    run.cfg.trainer.strategy = "ddp"  # the processes exist now: Lightning must not start more
    try:
        from reglab.job import run_job

        run_job(run)
    except Interrupted:
        return  # every rank saved at the same step; rank 0's results.json says interrupted, the parent reports it
    except ReglabError as err:
        (Path(error_dir) / f"rank{local_rank}").write_text(f"{type(err).__name__}\n{err}")
        raise


def rank_error(error_dir: Path) -> ReglabError | None:
    """The user error the lowest failing rank recorded, as its own class, or None."""
    for path in sorted(error_dir.glob("rank*")):
        name, _, message = path.read_text().partition("\n")
        cls = getattr(errors, name, ReglabError)
        return (cls if isinstance(cls, type) and issubclass(cls, ReglabError) else ReglabError)(message)
    return None


def _log_to_job_file(output_dir: Path) -> None:
    """A spawned rank 0 has no logging set up (Hydra configured the parent); it appends to the job's train.log
    as the parent would. A forked one inherited the parent's handlers, and basicConfig leaves them."""
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler()])
