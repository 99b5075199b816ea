"""Reliability, round three (issue 26): one writer per run folder, files that are data and never code, data
checked at load in every layout, parallel sweeps that stop like a single run, full disks, and every results.json
read or named. Each test here failed on main before the issue."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, start_cli, subprocess_environment
from reglab import folder_lock
from reglab.errors import ConfigError, DataUnavailableError

DIGITS = ["data=digits", "model=cnn_small", "model.widths=[8]", "model.fc_hidden=8", "logger=csv"]


# -- one writer per run folder -----------------------------------------------------------------------------------

def hold(folder: Path) -> subprocess.Popen:
    """Another live process holding ``folder``'s lock, as a run training there would."""
    code = ("import sys, time; from reglab import folder_lock; folder_lock.acquire(sys.argv[1]); "
            "print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                              env=subprocess_environment())
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_into_a_held_folder_refuses_in_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    try:
        done = run_cli(*DIGITS, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and socket.gethostname() in lines[0], lines
    assert sorted(p.name for p in run_dir.iterdir()) == [folder_lock.LOCK_FILE]  # no .hydra/, train.log, results


def test_two_runs_started_at_once_into_one_folder_one_trains_the_other_refuses(tmp_path):
    run_dir = tmp_path / "run"
    processes = [start_cli(*DIGITS, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}") for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in processes)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert "is in use by another run" in outcomes[1][1]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["epochs"] == 3
    assert (run_dir / folder_lock.LOCK_FILE).read_text() == ""  # released at the end


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / folder_lock.LOCK_FILE).write_text(f"{socket.gethostname()} {dead.pid} 1700000000.0\n")
    with caplog.at_level(logging.WARNING):
        lock = folder_lock.acquire(folder)
    try:
        assert f"pid {dead.pid}" in caplog.text and "no longer running" in caplog.text
        assert (folder / folder_lock.LOCK_FILE).read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
        assert f"pid {os.getpid()}" in folder_lock.holder_of(folder)
    finally:
        lock.release()
    assert folder_lock.holder_of(folder) is None and (folder / folder_lock.LOCK_FILE).read_text() == ""


def test_a_sweep_job_whose_folder_is_held_is_busy_elsewhere_not_failed(tmp_path):
    sweep = tmp_path / "sweep"
    busy = sweep / "l1"
    holder = hold(busy)
    try:
        done = run_cli("-m", *DIGITS, "trainer.max_epochs=1", "reg=none,l1", f"hydra.sweep.dir={sweep}",
                       "hydra.sweep.subdir=${hydra:runtime.choices.reg}")
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep: 2 jobs: 1 done, 0 failed" in done.stdout and "1 busy elsewhere" in done.stdout, done.stdout
    assert f"busy elsewhere l1: another process writes it (host {socket.gethostname()}, pid {holder.pid}" \
        in done.stdout
    assert sorted(p.name for p in busy.iterdir()) == [folder_lock.LOCK_FILE]  # the holder's folder untouched
    assert json.loads((sweep / "none" / "results.json").read_text())["status"] == "completed"
    assert not (sweep / ".reglab-sweep").exists()
    again = run_cli("-m", *DIGITS, "trainer.max_epochs=1", "reg=none,l1", f"hydra.sweep.dir={sweep}",
                    "hydra.sweep.subdir=${hydra:runtime.choices.reg}")
    assert "sweep: 2 jobs: 1 done, 0 failed, 1 skipped (already complete)" in again.stdout, again.stdout


def test_a_symlinked_or_foreign_lock_file_is_never_written_through_and_a_reused_pid_is_no_holder(tmp_path):
    from reglab.atomic import WriteError

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / folder_lock.LOCK_FILE).symlink_to(victim)
    with pytest.raises(WriteError, match="is a symbolic link"):
        folder_lock.acquire(linked)
    assert victim.read_text() == "precious"
    reused = tmp_path / "reused"
    reused.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, holds no lock
    try:
        (reused / folder_lock.LOCK_FILE).write_text(f"{socket.gethostname()} {sleeper.pid} 1700000000.0\n")
        folder_lock.acquire(reused).release()  # the text names a live pid, but not one holding the lock
    finally:
        sleeper.kill()
        sleeper.wait()


# -- files are data, never code ----------------------------------------------------------------------------------

def test_a_checkpoint_whose_config_names_a_foreign_target_is_refused_not_called(tmp_path):
    from reglab.evaluation import run_evaluation
    from reglab.results import CONFIG_KEY

    victim = tmp_path / "written_by_the_checkpoint"
    config = {"seed": 0, "paths": {"output_dir": str(tmp_path)},
              "data": {"_target_": "pathlib.Path.write_text", "self": str(victim), "data": "owned"},
              "model": {"_target_": "reglab.models.cnn.CNN"}, "reg": {}}
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({CONFIG_KEY: config, "state_dict": {}}, ckpt)
    with pytest.raises(ConfigError) as refused:
        run_evaluation(str(ckpt), write_results=False)
    assert "data._target_='pathlib.Path.write_text' is not a target this project defines" in str(refused.value)
    assert not victim.exists()
    config["data"] = {"_target_": "reglab.data.digits.DigitsDataModule", "val_fraction": "${oc.env:HOME}"}
    torch.save({CONFIG_KEY: config, "state_dict": {}}, ckpt)
    with pytest.raises(ConfigError, match=r"data.val_fraction='\$\{oc.env:HOME\}' is an interpolation"):
        run_evaluation(str(ckpt), write_results=False)
    malformed = [({"seed": "abc"}, "seed is 'abc', not an integer"), ({"data": "digits"}, "data is 'digits'"),
                 ({"model": {"_target_": "reglab.models.cnn.CNN", "widths": "???"}}, "do not build a model here"),
                 ({"data": {"_target_": "reglab.data.digits.DigitsDataModule", "_partial_": True}}, "_partial_")]
    digits = {"_target_": "reglab.data.digits.DigitsDataModule"}
    for change, message in malformed:
        torch.save({CONFIG_KEY: {**config, "data": digits, **change}, "state_dict": {}}, ckpt)
        with pytest.raises(ConfigError, match=re.escape(message)):
            run_evaluation(str(ckpt), write_results=False)


def test_the_python_batches_unpickler_builds_only_arrays(tmp_path):
    from reglab.data.cifar10 import unpickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(DataUnavailableError, match="refused to load posix.system"):
        unpickle(path)
    assert not (tmp_path / "ran").exists()


# -- data checked at load, in every layout -----------------------------------------------------------------------

def python_batches(root: Path, train: dict, test: dict | None = None) -> Path:
    root.mkdir(parents=True)
    for name, batch in (("data_batch_1", train), ("test_batch", test)):
        if batch is not None:
            (root / name).write_bytes(pickle.dumps(batch))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root


def good_batch(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": (np.arange(n) % 10).tolist()}


@pytest.mark.parametrize("case, message", [
    ("nan", "data_batch_1: 'data' holds float32; a CIFAR batch holds uint8 pixel values"),
    ("28x28", "test_batch: 'data' is 40x2352; a CIFAR-10 batch is N x 3072"),
    ("short", "test_batch: 250 images but 300 labels"),
    ("ragged", "test_batch: 'data' is 7500000; a CIFAR-10 batch is N x 3072"),
])
def test_a_bad_python_batch_is_one_line_naming_the_file_before_training(tmp_path, case, message):
    from reglab.data.cifar10 import CIFAR10DataModule

    train, test = good_batch(100), good_batch(40, 1)
    if case == "nan":
        train[b"data"] = np.full((100, 3072), np.nan, dtype=np.float32)
    elif case == "28x28":
        test[b"data"] = np.zeros((40, 28 * 28 * 3), dtype=np.uint8)
    elif case == "short":
        test = {b"data": np.zeros((250, 3072), np.uint8), b"labels": [0] * 300}
    else:
        test[b"data"] = np.zeros(7_500_000, dtype=np.uint8)
    root = python_batches(tmp_path / "cifar-10-batches-py", train, test)
    dm = CIFAR10DataModule(path=str(root), cache_dir=str(tmp_path / "cache"), val_size=10)
    with pytest.raises(DataUnavailableError) as raised:
        dm.setup()
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not list((tmp_path / "cache").rglob("*.pt"))  # nothing cached from bad data


def test_training_data_missing_classes_warns_and_one_class_refuses(tmp_path, caplog):
    from reglab.data.cifar10 import CIFAR10DataModule

    train = good_batch(100)
    train[b"labels"] = [i % 7 for i in range(100)]  # classes 7, 8 and 9 never appear
    root = python_batches(tmp_path / "a", train, good_batch(20, 1))
    with caplog.at_level(logging.WARNING):
        CIFAR10DataModule(path=str(root), cache_dir=str(tmp_path / "cache"), val_size=10).setup()
    assert "no example of 3 of the 10 classes (c7, c8, c9)" in caplog.text
    train[b"labels"] = [4] * 100
    root = python_batches(tmp_path / "b", train, good_batch(20, 1))
    with pytest.raises(DataUnavailableError, match="holds only class 'c4' \\(100 examples\\)"):
        CIFAR10DataModule(path=str(root), cache_dir=str(tmp_path / "cache"), val_size=10).setup()


def test_a_one_class_sst2_training_file_refuses(tmp_path):
    from reglab.data.text import TextClassificationDataModule

    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"w{i} film\t1\n" for i in range(30)))
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    dm = TextClassificationDataModule(path=str(tmp_path), text_column="sentence", labels=["0", "1"],
                                      cache_dir=str(tmp_path / "cache"), tokenizer="words", val_size=5)
    with pytest.raises(DataUnavailableError, match="train.tsv: the training split holds only class '1'"):
        dm.setup()


def test_16_bit_images_are_refused_not_clipped(tmp_path):
    from PIL import Image

    from reglab.data.images import ImageDataModule

    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "data" / label / f"{i}.png")
    with pytest.raises(DataUnavailableError, match="0.png: is a I;16 image \\(16-bit or float pixels\\)"):
        ImageDataModule(path=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), val_size=1).setup()


def test_a_zero_row_image_parquet_and_a_symlink_loop_get_their_own_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reglab.data.images import ImageDataModule

    schema = pa.schema([("img", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("label", pa.int64())])
    (tmp_path / "empty").mkdir()
    pq.write_table(pa.Table.from_pylist([], schema=schema), tmp_path / "empty" / "train.parquet")
    with pytest.raises(DataUnavailableError, match="train.parquet: holds no rows \\(an empty train split\\)"):
        ImageDataModule(path=str(tmp_path / "empty"), cache_dir=str(tmp_path / "cache")).setup()
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    with pytest.raises(ConfigError, match="is a symlink loop"):
        ImageDataModule(path=str(tmp_path / "loop_a"), cache_dir=str(tmp_path / "cache"))


# -- config errors that are recorded -----------------------------------------------------------------------------

def test_a_bad_seed_is_one_line_and_recorded(tmp_path):
    done = run_cli(*DIGITS, "seed=abc", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: seed='abc': must be an integer in [0, 2**32)"]
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed" and record["seed"] == "abc"


def test_a_negative_checkpoint_interval_is_refused(make_config):
    from reglab.values import check_early

    with pytest.raises(ConfigError, match=r"checkpoint_every_n_steps=-5: must be an integer >= 0"):
        check_early(make_config("data=digits", "checkpoint_every_n_steps=-5"))


# -- moving aside, resuming ----------------------------------------------------------------------------------------

def completed_run(run_dir: Path, *extra: str) -> dict:
    done = run_cli(*DIGITS, "trainer.max_epochs=1", *extra, f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def test_resume_true_with_another_config_refuses_and_moves_nothing_and_a_move_takes_the_logs(tmp_path):
    run_dir = tmp_path / "run"
    first = completed_run(run_dir)
    (run_dir / "wandb").mkdir()
    before = sorted(p.name for p in run_dir.iterdir())
    refused = run_cli(*DIGITS, "trainer.max_epochs=1", "seed=1", "resume=true", f"hydra.run.dir={run_dir}")
    assert refused.returncode == 2 and "holds a completed run of another config" in refused.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before and not (run_dir / "replaced").exists()
    second = completed_run(run_dir, "seed=1")
    moved = next((run_dir / "replaced").iterdir())
    assert {"results.json", "checkpoints", "csv", "train.log", ".hydra", "wandb"} <= {p.name for p in moved.iterdir()}
    assert json.loads((moved / "results.json").read_text())["started_at"] == first["started_at"]
    assert "seed: 0" in (moved / ".hydra" / "config.yaml").read_text()
    assert "seed: 1" in (run_dir / ".hydra" / "config.yaml").read_text() and second["seed"] == 1
    assert "reglab: data=digits" in (run_dir / "train.log").read_text()


def test_a_copied_run_folder_resumes_from_its_own_checkpoint(make_config, tmp_path):
    from omegaconf import OmegaConf

    from reglab.job import resume_checkpoint
    from reglab.run import train

    cfg = make_config("data=digits", "trainer.max_epochs=1")
    train(cfg)
    original = Path(cfg.paths.output_dir)
    (original / "results.json").unlink()  # as a run killed before it finished
    copy = tmp_path / "elsewhere" / "copied"
    shutil.copytree(original, copy)
    cfg.paths.output_dir = str(copy)
    found = resume_checkpoint(cfg, copy, OmegaConf.to_container(cfg, resolve=True))
    assert found == copy / "checkpoints" / "last.ckpt"


# -- reports read every results.json --------------------------------------------------------------------------

def test_the_report_migrates_an_older_schema_and_names_a_newer_one(tmp_path, capsys):
    from reglab.report.collect import load_results, runs_frame

    template = {"status": "completed", "seed": 0, "config": {
        "seed": 0, "data": {"_target_": "reglab.data.digits.DigitsDataModule"},
        "model": {"_target_": "reglab.models.cnn.CNN"}, "reg": {"l1": {"strength": 1e-3}},
        "optim": {"_target_": "torch.optim.AdamW", "lr": 1e-3}}, "metrics": {"test/acc": 0.9}}
    for name, version in (("old", 1), ("new", 99)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**template, "schema_version": version}))
    for name, change in (("v0", {"schema_version": 0}), ("vstr", {"schema_version": "2"}),
                         ("listed", {"schema_version": 2, "choices": {}, "metrics": [1, 2]})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**template, **change}))
    records = {Path(r["run_dir"]).name: r for r in load_results([tmp_path])}
    assert records["v0"]["error"] == "schema_version 0 is not a schema version (an integer from 1 to 2)"
    assert records["vstr"]["error"].startswith("schema_version '2' is not a schema version")
    assert records["listed"]["error"] == "its metrics is a list, not a dict"
    assert records["old"]["choices"] == {"data": "digits", "model": "cnn", "reg": "l1", "optim": "adamw"}
    assert records["old"]["migrated_from"] == 1 and records["old"]["condition_id"]
    assert records["new"]["status"] == "unreadable" and "schema_version 99" in records["new"]["error"]
    assert list(runs_frame([records["old"]])["reg"]) == ["l1"]
    runs_frame(list(records.values()))  # the unreadable ones do not break the table
    from reglab.report.cli import main as report_main

    report_main([str(tmp_path)])
    err = capsys.readouterr().err
    assert f"skipping {tmp_path}/new/results.json: written by a newer reglab (schema_version 99" in err


# -- full disks ----------------------------------------------------------------------------------------------------

def test_a_failed_write_is_one_line_and_keeps_the_old_file(tmp_path):
    from reglab.atomic import WriteError, atomic_torch_save, atomic_write

    target = tmp_path / "results.json"
    target.write_text("old")

    def full_disk(handle):
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as raised:
        atomic_write(target, full_disk)
    assert str(raised.value).startswith(f"cannot write {target}: no space left on the disk; free some space")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    with pytest.raises(WriteError, match="cannot write .*a_file/cache.pt: Not a directory"):
        atomic_torch_save(tmp_path / "results.json" / "a_file" / "cache.pt", {"x": 1})


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_torn_file(tmp_path):
    run_dir = tmp_path / "run"  # every file the run writes stops at 100 kB, as a full disk would stop it
    done = run_cli("data=digits", "trainer.max_epochs=1", "logger=csv", f"hydra.run.dir={run_dir}",
                   file_size_limit=100_000)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"error: cannot write {run_dir}/checkpoints/last.ckpt: the file is larger than this process may write "
        "(ulimit -f); free some space and re-run the same command (a run resumes from its last checkpoint)"]
    assert list((run_dir / "checkpoints").iterdir()) == []  # no torn or temporary checkpoint
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"
    again = run_cli("data=digits", "trainer.max_epochs=1", "logger=csv", f"hydra.run.dir={run_dir}")
    assert again.returncode == 0, again.stderr[-3000:]  # space is back: the run goes through


def test_a_full_disk_during_the_data_cache_write_is_one_line_and_caches_nothing(tmp_path, cifar_parquet):
    cache = tmp_path / "cache"  # the source's Arrow copy (about 220 kB) fits, the decoded tensors (340 kB) do not
    done = run_cli("data=images", f"data.path={cifar_parquet}", "data.val_size=10", "trainer.max_epochs=1",
                   "logger=csv", f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}",
                   file_size_limit=300_000)
    assert done.returncode == 2, done.stderr[-3000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and error[0].startswith(f"error: cannot write {cache}/images/parquet-") and \
        "larger than this process may write" in error[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr and not [p for p in cache.rglob("*") if p.is_file()]


# -- a parallel sweep stops like a single run ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("when, signal_name", [("training", "SIGTERM"), ("starting", "SIGINT"),
                                               ("worker", "SIGTERM")])
def test_a_signal_to_a_parallel_sweep_saves_running_jobs_starts_no_more_and_summarises(tmp_path, when, signal_name):
    """SIGTERM to the sweep while both workers train; a terminal's Ctrl+C (SIGINT to the whole process group)
    while the jobs are still starting up; SIGTERM to one worker alone while its job starts up (a scheduler's
    signal to every process of the job; it would have broken the worker pool): each way every started job ends
    interrupted and resumable."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=cpus", *DIGITS, "trainer.max_epochs=60", "reg=none,l1,l2,dropout",
            f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra:runtime.choices.reg}"]
    process = start_cli(*args, new_session=True)
    started = {"training": "*/checkpoints/last.ckpt", "starting": "*/.hydra/config.yaml",
               "worker": f"*/{folder_lock.LOCK_FILE}"}[when]
    deadline = time.monotonic() + 240
    while len([p for p in sweep.glob(started) if p.stat().st_size]) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.02)
    number = getattr(signal, signal_name)
    if when == "training":
        process.send_signal(number)
    elif when == "starting":
        os.killpg(process.pid, number)  # what a terminal sends on Ctrl+C: every process of the sweep
    else:
        worker = int(next(sweep.glob(started)).read_text().split()[1])  # the lock names the job's process
        os.kill(worker, number)
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 128 + number, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep.glob("*/results.json")}
    assert sorted(statuses.values()) == ["interrupted", "interrupted"], statuses
    assert "2 unfinished" in stdout and "2 job(s) had not started" in stderr
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 2  # the queued jobs never started
    for job in (p for p in sweep.iterdir() if p.is_dir()):  # no worker outlived the sweep: none holds a job folder
        assert folder_lock.holder_of(job) is None
        assert (job / "checkpoints" / "last.ckpt").is_file()
    if when == "training":
        resumed = run_cli(*args)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert resumed.stdout.count("resuming from") == 2 and "4 jobs: 4 done" in resumed.stdout
