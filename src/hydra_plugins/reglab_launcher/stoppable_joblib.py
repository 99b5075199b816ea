"""Parallel sweeps (``hydra/launcher=cpus`` / ``gpus``) that stop like a single run.

Hydra's joblib launcher runs jobs in loky worker processes. On its own, a SIGTERM kills the launching process at
once: the running jobs go on as orphans and finish, the queued ones never start, and no summary is printed. This
launcher is the same joblib launcher with a stop path:

- while the sweep runs, SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 to the launching process (or SIGTERM and
  SIGHUP to any worker, which passes them on; in training a worker's SIGUSR1/2 stop its own job, as in a single
  run) are caught there and passed to each worker that is running a job (SIGINT and SIGHUP as
  SIGTERM: a Ctrl+C on a terminal already reached the workers, and a second SIGINT would stop them at once,
  unsaved). Each running job then stops at its next step, writes
  ``last.ckpt`` and records ``interrupted``, as a single run does;
- a job that had not started when the signal came does not start;
- the launcher then prints the sweep summary and exits with 128 + the signal; re-running the command resumes.

A second Ctrl+C kills the running jobs at once. Workers note themselves in a per-sweep folder once their job is
training (``<tmp>/reglab-sweep-*/running/<pid>``), so only they are signalled, never loky's idle workers nor a
job still starting up (which sees the stop flag when its training starts, and stops at its first step)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from reglab.errors import StopSignalHandlers

log = logging.getLogger(__name__)

STOP_DIR = "REGLAB_SWEEP_STOP_DIR"  # set in the workers' environment: where the stop flag and running pids live


class NotStarted:
    """What a job that the stop signal kept from starting returns to the launcher."""


def run_unless_stopped(stop_dir: str, *job_args):
    """In a worker: the job, unless the sweep was stopped before it began. A job's own ``sys.exit`` (an
    interrupted run exits 128 + the signal) is returned as a value: raised, it would break the worker pool."""
    from hydra_plugins.hydra_joblib_launcher import _core

    folder = Path(stop_dir)
    if (folder / "stop").exists():
        return NotStarted()
    os.environ[STOP_DIR] = stop_dir
    # A Ctrl+C on a terminal reaches every worker too. While the job starts up it must not raise here (a
    # KeyboardInterrupt would break the pool): the launcher has the signal as well, and the job sees its stop flag
    # once training starts. During training, reglab's own handler (GracefulStop) takes SIGINT over.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    relay_to_launcher()
    job = folder / "jobs" / str(os.getpid())
    job.touch()
    try:
        return _core.execute_job(*job_args)
    except SystemExit as exit_:
        return exit_.code
    finally:
        job.unlink(missing_ok=True)
        (folder / "running" / str(os.getpid())).unlink(missing_ok=True)


RELAYED = ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")


def relay_to_launcher() -> None:
    """In a worker: a stop signal sent to the worker itself (a scheduler signalling every process of the job,
    ``kill`` of one pid, a closed terminal) is passed, once, to the launching process, which stops the whole
    sweep as if it had been signalled. Without this, a worker still starting up would die of it, and loky would
    then end every other worker's job, unsaved. In training, Lightning's SIGTERM handler runs beside this one."""
    relayed = []

    def relay(signum, frame):
        if not relayed:
            relayed.append(signum)
            os.kill(os.getppid(), signum)

    relay.reglab_relay = True  # not a scheduler's handler to hand a preemption on to (errors.preemption_handler)
    for name in RELAYED:
        signal.signal(getattr(signal, name), relay)


def entering_training() -> bool:
    """Called by the job once training has its signal handlers (reglab.callbacks.GracefulStop): in a worker of a
    stoppable sweep, note this process as one to signal, and say whether the sweep was stopped already (while the
    job was starting up). Only such workers are signalled: before training, a SIGTERM would kill the worker,
    and loky would then end every other worker's job, unsaved. Note first, then look: the launcher raises the
    flag first, then reads the notes, so a job either sees the flag or is signalled."""
    folder = os.environ.get(STOP_DIR)
    if not folder or not Path(folder).is_dir():
        return False
    (Path(folder) / "running" / str(os.getpid())).touch()
    return (Path(folder) / "stop").exists()


class StopSignals(StopSignalHandlers):
    """The launching process's handlers while the jobs run (see the module docstring). SIGHUP too: a closed
    terminal must not leave the workers training on as orphans."""

    SIGNALS = (*StopSignalHandlers.SIGNALS, "SIGHUP")

    def __init__(self, folder: Path):
        self.folder, self.received, self._previous = folder, None, {}

    def forward(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        hard = name == "SIGINT" and self.received == "SIGINT"
        if self.received is None:
            self.received = name
            (self.folder / "stop").touch()
            print(f"\n{name}: stopping the sweep; running jobs save their state and end, queued ones do not "
                  "start (Ctrl+C again: stop at once, unsaved)", file=sys.stderr, flush=True)
        forwarded = signal.SIGKILL if hard else signal.SIGTERM if name in ("SIGINT", "SIGHUP") else signum
        for mark in (self.folder / ("jobs" if hard else "running")).glob("*"):
            try:
                os.kill(int(mark.name), forwarded)
            except (ProcessLookupError, ValueError):
                pass


class StoppableJoblibLauncher(JoblibLauncher):
    def launch(self, job_overrides, initial_job_idx: int):
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, filter_overrides, setup_globals
        from joblib import Parallel, delayed

        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        options = dict(self.joblib, backend="loky")  # as Hydra's launcher: threads are incompatible with Hydra
        process_joblib_cfg(options)
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="reglab-sweep-") as stop_dir, \
                StopSignals(Path(stop_dir)) as stop:
            (Path(stop_dir) / "running").mkdir()
            (Path(stop_dir) / "jobs").mkdir()
            singleton_state = Singleton.get_state()
            log.info("Joblib.Parallel(%s) is launching %d jobs", ",".join(f"{k}={v}" for k, v in options.items()),
                     len(job_overrides))
            log.info("Launching jobs, sweep output dir : %s", sweep_dir)
            for idx, overrides in enumerate(job_overrides):
                log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
            try:
                runs = Parallel(**options)(
                    delayed(run_unless_stopped)(stop_dir, initial_job_idx + idx, overrides, self.hydra_context,
                                                self.config, self.task_function, singleton_state)
                    for idx, overrides in enumerate(job_overrides))
            except Exception:
                if stop.received is None:
                    raise
                runs = []  # a second Ctrl+C killed the workers: the pool is gone, the summary says what is left
        if stop.received is None:
            return [run if isinstance(run, JobReturn) else ended_early(run) for run in runs]
        from reglab.console import sweep_summary

        not_started = sum(isinstance(run, NotStarted) for run in runs)
        print("\n".join(sweep_summary(sweep_dir, started)), flush=True)
        print(f"{stop.received}: sweep stopped; {not_started} job(s) had not started. Re-run the same command to "
              "resume it (finished jobs are skipped, interrupted ones resume from their last.ckpt).",
              file=sys.stderr, flush=True)
        sys.exit(128 + int(getattr(signal, stop.received)))


def ended_early(outcome) -> JobReturn:
    """A job that exited (a signal to its worker alone: it saved and recorded ``interrupted``) as Hydra's record
    of a job with no result: NaN, which a sweeper such as Optuna counts as a failed trial."""
    run = JobReturn()
    run.status, run._return_value = JobStatus.COMPLETED, float("nan")
    return run
