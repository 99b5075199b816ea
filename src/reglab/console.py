"""What a person sees on the terminal. Quiet by default: a header line, a live progress bar on a terminal (one
line per epoch in a pipe), and a closing block with the key metrics, where the results are and what to run
next; a sweep ends with a summary. Everything else still goes to each run's ``train.log``, and ``verbose=true``
puts it all back on the console (Lightning's info lines, W&B's banners, every warning).

Noise is removed by exact message, not by silencing a library: a new warning still shows."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

from hydra.experimental.callback import Callback

from reglab.fit import NOT_MEANINGFUL, underfit_reason
from reglab.overrides import paste_ready

VERBOSE = False  # set from the config's ``verbose`` by reglab.run before anything is logged

# Warnings known to be harmless here, each with why.
HARMLESS_WARNINGS = (
    # torch's notice that sparse invariant checks are off: bag-of-words batches are built valid (coalesced).
    r"Sparse invariant checks are implicitly disabled",
    # Lightning 2.6 calling a torch API deprecated in 2.13; nothing a user can change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Small data sets: reglab logs epoch-level metrics, so a logging interval longer than an epoch loses nothing.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # A resumed run writes into its own checkpoint folder on purpose.
    r"Checkpoint directory .* exists and is not empty",
    # reglab's CSV logger keeps the file across resumes itself (loggers.CSVHistoryLogger).
    r"Experiment logs directory .* exists and is not empty",
)


def configure(verbose: bool) -> None:
    """Called once per job before training: the console policy for this process."""
    global VERBOSE
    VERBOSE = bool(verbose)
    # Lightning logs "Received SIGTERM" from inside its signal handler. A second signal arriving while that line
    # is being written (a sweep's workers relay a stop to the launcher, which signals them back) re-enters the
    # log file's writer, and logging prints a traceback for it. reglab says itself how a run stopped.
    logging.getLogger("pytorch_lightning.trainer.connectors.signal_connector").setLevel(logging.WARNING)
    if VERBOSE:
        return
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's banners; its offline path is in the closing block


class QuietConsole(logging.Filter):
    """The console handler's filter (conf/hydra/default.yaml): reglab's own lines, and warnings or errors from
    anyone. The file handler (train.log) has no filter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if VERBOSE or record.levelno >= logging.WARNING:
            return True
        return record.name.startswith("reglab")  # Lightning's info lines (GPU available, tips) stay in train.log


class ConsoleFormatter(logging.Formatter):
    """Plain messages for reglab's lines; a level prefix for warnings and errors; the full format when verbose."""

    FULL = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if VERBOSE:
            return self.FULL.format(record)
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_terminal() -> bool:
    return sys.stdout.isatty()


def fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


MAIN_GROUPS = ("data", "model", "reg", "optim")


def shown(path) -> str:
    """A path as a user would type it: relative to the working directory when it is under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def header(choices: dict, seed: int, output_dir: Path) -> str:
    """The run's folder and what it runs: the four main choices, and any other group not at its default."""
    picked = [f"{k}={choices[k]}" for k in MAIN_GROUPS if choices.get(k) is not None]
    picked += [f"{k}={v}" for k, v in choices.items()
               if k not in MAIN_GROUPS and v not in (None, "default") and not k.startswith("hydra")]
    return f"reglab: {' '.join(picked)} seed={seed} -> {shown(output_dir)}"


def test_split_note(test_split: str | None) -> str:
    if test_split == "validation":
        return "this data has no labelled test split, so test/* is measured on the validation split (= val/*)"
    if test_split and test_split.startswith("fold"):
        return f"test/* is measured on the held-out {test_split}"
    if test_split and test_split != "test":
        return f"test/* is measured on the {test_split} split"
    return "test/* is measured on the held-out test split"


def time_left(seconds: float) -> str:
    """An ETA as progress lines say it: 'about 9 min left' from 90 s on, else 'about 40 s left'."""
    return f"about {seconds / 60:.0f} min left" if seconds >= 90 else f"about {seconds:.0f} s left"


def typed_overrides(record) -> list[str]:
    """The run's overrides as typed (experiment=... included), for a command that repeats them; the run's
    condition overrides where Hydra did not compose it."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return [str(o) for o in HydraConfig.get().overrides.task]
    return list(record.overrides)


def closing_block(record, output_dir: Path, wandb_dir: Path | None, in_sweep: bool) -> list[str]:
    """The lines a finished run ends with. In a sweep, one line per job (the sweep's summary says the rest)."""
    metrics = record.metrics
    keys = [k for k in ("test/acc", "val/acc", "gen_gap", "mc/ece") if k in metrics]
    numbers = " ".join(f"{k}={fmt(metrics[k])}" for k in keys)
    took = f"{record.wall_time_s:.1f} s" if record.wall_time_s else ""
    underfit = underfit_reason(metrics, record.history)
    if in_sweep:
        return [f"done ({took}): {numbers}" + (f"  UNDERFITS: {underfit}" if underfit else "")]
    lines = [f"done in {took}: {numbers}", f"  {test_split_note(record.test_split)}"]
    if underfit:
        lines.append(f"  this run underfits: {underfit}; {NOT_MEANINGFUL} (train longer, raise optim.lr, or "
                     "use a larger model)")
    lines.append(f"  results: {shown(output_dir / 'results.json')}")
    if wandb_dir is not None:
        lines.append(f"  W&B run logged offline; to upload it: wandb sync {shown(wandb_dir)}")
    checkpoint = output_dir / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        lines.append(f"  evaluate: python eval.py {paste_ready('ckpt', shown(checkpoint))} mc_samples=30")
    kept = [o for o in typed_overrides(record) if o.split("=")[0].lstrip("+~") not in ("reg", "seed")]
    lines.append(f"  next: reglab-report {shown(output_dir)}   (or an ablation: python train.py -m "
                 f"{' '.join(map(shlex.quote, kept)) + ' ' if kept else ''}reg=none,l1,l2 seed=0,1,2)")
    return lines


class SweepSummary(Callback):
    """Hydra callback: after a multirun, how many jobs finished, failed (with their one-line errors) or were
    skipped as already complete, where the sweep is, and the report command for it."""

    def __init__(self):
        self.started = time.time()

    def on_multirun_start(self, config, **kwargs) -> None:
        self.started = time.time()
        # This sweep's id: its jobs (in this process, loky workers, or submitit jobs, which inherit the
        # environment) note under it the folders another process held, so the summary counts them.
        os.environ[SWEEP_ID] = f"{os.getpid()}-{time.time_ns()}"
        os.environ[SWEEP_STARTED] = repr(self.started)
        from reglab.resolvers import sweep_started

        sweep_started(config)

    def on_multirun_end(self, config, **kwargs) -> None:
        if config.get("dry_run", False):
            return
        sweep = Path(str(config.hydra.sweep.dir))
        print("\n".join(sweep_summary(sweep, self.started)), flush=True)


SWEEP_ID = "REGLAB_SWEEP_ID"
SWEEP_STARTED = "REGLAB_SWEEP_STARTED"


def summary_of_stopped_sweep() -> list[str]:
    """The summary of a sweep whose jobs run in this process (Hydra's basic launcher), when a signal stopped one:
    the process then exits without Hydra's end-of-sweep callback. Empty outside such a sweep (a parallel
    launcher's workers leave the summary to the launching process)."""
    from hydra.core.hydra_config import HydraConfig

    from hydra_plugins.reglab_launcher.stoppable_joblib import STOP_DIR

    if not is_multirun() or os.environ.get(STOP_DIR) or os.getpid() != int(
            os.environ.get(SWEEP_ID, "0-0").split("-")[0]):
        return []
    started = float(os.environ.get(SWEEP_STARTED, "0"))
    return sweep_summary(Path(str(HydraConfig.get().sweep.dir)), started) + [
        "  the sweep's later jobs did not start; re-run the same command to run them and resume this one"]


NOTES_FOLDER = ".reglab-sweep"  # in a sweep folder: <sweep id>/<job folder name>, what a job did that its folder
# cannot say: "busy <holder>" (another process held it) or "skipped" (it had completed already)


def note_job(output_dir: Path, note: str) -> None:
    """In a sweep, note what this job did for the sweep's summary (a completed results.json written during the
    sweep does not tell whether this sweep's job wrote it or skipped it)."""
    from reglab.atomic import atomic_write

    sweep_id = os.environ.get(SWEEP_ID)
    if sweep_id and is_multirun():
        path = output_dir.parent / NOTES_FOLDER / sweep_id / output_dir.name
        atomic_write(path, lambda handle: handle.write(note.encode()))


def job_notes(sweep: Path) -> dict[str, str] | None:
    """{job folder name: note} of this sweep's jobs (None: this process started no sweep, so there are no
    notes to read); the notes are removed once read."""
    import shutil

    if SWEEP_ID not in os.environ:
        return None
    folder = sweep / NOTES_FOLDER / os.environ[SWEEP_ID]
    notes = {note.name: note.read_text() for note in sorted(folder.glob("*"))} if folder.is_dir() else {}
    shutil.rmtree(folder, ignore_errors=True)
    if (sweep / NOTES_FOLDER).is_dir() and not any((sweep / NOTES_FOLDER).iterdir()):
        (sweep / NOTES_FOLDER).rmdir()
    return notes


def sweep_summary(sweep: Path, started: float) -> list[str]:
    from reglab.results import read_results

    done, skipped, failed, unfinished, underfit = [], [], [], [], []
    notes = job_notes(sweep)
    busy = {name: note.split(" ", 1)[1] for name, note in (notes or {}).items() if note.startswith("busy ")}
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir()) if sweep.is_dir() else []
    for job in [job for job in jobs if job.name not in busy]:
        results = job / "results.json"
        try:
            record = read_results(results)
        except (OSError, ValueError):
            unfinished.append(job.name)
            continue
        status = record.get("status")
        if status == "completed":
            was_skipped = notes.get(job.name) == "skipped" if notes is not None else results.stat().st_mtime < started
            (skipped if was_skipped else done).append(job.name)
            if reason := underfit_reason(record.get("metrics"), record.get("history")):
                underfit.append(f"{job.name}: {reason}")
        elif status == "interrupted":
            unfinished.append(job.name)
        else:
            error = str(record.get("error") or status).splitlines()[0]
            failed.append(f"{job.name}: {re.sub(r'^[A-Za-z]+Error: ', '', error)}")
    total = len(done) + len(skipped) + len(failed) + len(unfinished) + len(busy)
    lines = [f"sweep: {total} jobs: {len(done)} done, {len(failed)} failed, {len(skipped)} skipped (already "
             f"complete), {len(unfinished)} unfinished" + (f", {len(busy)} busy elsewhere" if busy else "") +
             f" -> {shown(sweep)}"]
    lines += [f"  failed {line}" for line in failed]
    lines += [f"  busy elsewhere {name}: another process writes it ({holder}); re-run this command once it is "
              "done to pick up its results" for name, holder in busy.items()]
    lines += [f"  unfinished {name} (re-run the same command to resume it)" for name in unfinished]
    lines += [f"  underfits {line}" for line in underfit]
    if underfit:
        lines.append(f"  {len(underfit)} of {len(done) + len(skipped)} completed jobs underfit; {NOT_MEANINGFUL} "
                     "(train longer, raise optim.lr, or use a larger model)")
    lines.append(f"next: reglab-report {shown(sweep)}")
    return lines


def EpochBar():  # noqa: N802 - a class made on first use: importing Lightning's rich bar costs an import of rich
    """Lightning's rich progress bar, counting epochs from 1 as the epoch lines do ("Epoch 1/30", not "0/29")."""
    from pytorch_lightning.callbacks import RichProgressBar

    class CountingFromOne(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            text = f"Epoch {current_epoch + 1}" + (f"/{self.trainer.max_epochs}" if self.trainer.max_epochs
                                                    and self.trainer.max_epochs > 0 else "")
            width = len(self.validation_description)
            return f"{text:{width}}" if width > len(text) else text

    return CountingFromOne()
