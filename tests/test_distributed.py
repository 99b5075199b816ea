"""Scaling out on CPU: DDP with gloo (trainer=ddp_cpu), DDP jobs inside a multirun, torchrun, the one-job-per-GPU
launcher with simulated devices, the SLURM launcher's job script, and the batch sharding they all rely on."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_cli, subprocess_environment
from reglab.data.batching import EvalBatches, TrainBatches
from reglab.gpu_slots import claim_slot
from reglab.resolvers import launch_stamp

TINY = ["data=digits", "model=cnn_small", "model.widths=[8,16]", "model.fc_hidden=16", "trainer.max_epochs=1",
        "logger=csv"]


def results_in(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]


# -- batch sharding -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,batch_size,world", [(100, 8, 2), (101, 12, 4), (37, 6, 3)])
@pytest.mark.parametrize("bucketed", [False, True])
def test_ranks_share_exactly_the_single_process_batches(n, batch_size, world, bucketed):
    lengths = torch.randint(1, 30, (n,)) if bucketed else None
    single = TrainBatches(n, batch_size, seed=5, lengths=lengths, bucket_batches=2)
    ranks = [TrainBatches(n, batch_size, seed=5, rank=r, world_size=world, lengths=lengths, bucket_batches=2)
             for r in range(world)]
    for epoch in (0, 1):
        for sampler in [single, *ranks]:
            sampler.set_epoch(epoch)
        shares = [list(r) for r in ranks]
        assert all(len(s) == len(r) for s, r in zip(shares, ranks)) and len({len(s) for s in shares}) == 1
        # The ranks' shares, in rank order, are the single-process batches (a ragged tail trimmed; a tail
        # smaller than the number of ranks skipped).
        expected = [b[:len(b) - len(b) % world] for b in single if len(b) >= world]
        assert [sum(step, []) for step in zip(*shares)] == expected
        assert len(list(single)) == len(single)
    single.set_epoch(0)
    first = list(single)
    single.set_epoch(1)
    assert list(single) != first  # a new order every epoch ...
    single.set_epoch(0)
    assert list(single) == first  # ... that depends only on (seed, epoch)


def test_evaluation_shards_count_every_sample_once():
    order = torch.randperm(103)
    seen = [i for r in range(4) for batch in EvalBatches(103, 16, r, 4, order) for i in batch]
    assert sorted(seen) == list(range(103))


def test_global_batch_must_divide_by_devices(tmp_path):
    done = run_cli(*TINY, "trainer=ddp_cpu", "data.batch_size=33", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    assert "error: data.batch_size=33 is the global batch size and must divide by the 2 devices" in done.stderr


@pytest.mark.parametrize("override,message", [
    ("trainer.num_nodes=2", "trainer.num_nodes=2 needs a launcher"),
    ("trainer.strategy=fsdp", "trainer.strategy=fsdp: reglab runs multi-device jobs with DDP"),
])
def test_bad_distributed_settings_are_one_line_errors(tmp_path, override, message):
    done = run_cli(*TINY, "trainer=ddp_cpu", override, f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


# -- DDP ------------------------------------------------------------------------------------------------------
def test_ddp_cpu_matches_a_single_process_run(tmp_path):
    """Same seed and global batch: 2 gloo ranks with 16 rows each vs 1 process with 32. SGD, no BatchNorm, no
    dropout, no augmentation, so only floating-point reduction order differs. Tolerance: losses and weight norm
    within 1e-5 relative, accuracies within one test image (measured: 2e-6 and equal)."""
    # val_fraction=0.2005 leaves 1076 training images: an even last batch, which 2 ranks split without
    # dropping a row (an odd one loses a row per epoch under DDP, and the runs part by more than noise).
    common = ["data=digits", "data.val_fraction=0.2005", "model=cnn_small", "model.batchnorm=false", "optim=sgd",
              "optim.lr=0.05", "trainer.max_epochs=3", "reg=l2", "data.batch_size=32"]
    ddp = run_cli(*common, "trainer=ddp_cpu", "logger=default", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_cli(*common, "trainer=cpu", "logger=csv", f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    (d,), (s,) = results_in(tmp_path / "ddp"), results_in(tmp_path / "single")
    assert d["status"] == s["status"] == "completed"
    assert d["distributed"]["world_size"] == 2
    assert d["distributed"]["penalty_rank_spread"] == 0.0 and d["distributed"]["weight_l2_rank_spread"] == 0.0
    assert [r["step"] for r in d["history"]] == [r["step"] for r in s["history"]]  # the same number of steps
    for key in ("test/loss", "val/loss", "weights/l2", "train/loss"):
        assert d["metrics"][key] == pytest.approx(s["metrics"][key], rel=1e-5), key
    for key in ("test/acc", "val/acc"):
        assert abs(d["metrics"][key] - s["metrics"][key]) <= 1 / 360 + 1e-6, key
    # rank 0 alone logs to W&B and writes results
    assert len(list((tmp_path / "ddp" / "wandb").glob("offline-run-*"))) == 1


def test_ddp_jobs_in_a_multirun_exit_cleanly_ten_times(tmp_path):
    """Ten DDP jobs, twenty gloo rank processes: every one exits 0 (a rank that aborted at exit fails its job),
    and the sweep has exactly its ten job folders (no sweep re-run in a child rank)."""
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *TINY, "trainer=ddp_cpu", f"seed={','.join(map(str, range(10)))}",
                   f"hydra.sweep.dir={sweep}", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = results_in(sweep)
    assert len(results) == 10 and all(r["status"] == "completed" for r in results)
    assert all(r["distributed"]["world_size"] == 2 for r in results)
    assert sorted(p.name for p in sweep.iterdir()) == sorted([*(Path(r["output_dir"]).name for r in results),
                                                               "multirun.yaml"])


def test_ddp_spawn_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *TINY, "trainer=ddp_cpu", "trainer.strategy=ddp_spawn", "reg=none,l2",
                   f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = results_in(sweep)
    assert sorted(r["choices"]["reg"] for r in results) == ["l2", "none"]
    assert all(r["status"] == "completed" and r["distributed"]["world_size"] == 2 for r in results)
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 2


def test_torchrun_launches_the_ranks(tmp_path):
    """What trainer=ddp_multinode does on every node, here one node with two CPU processes."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    done = run_cli(*TINY, "trainer=ddp_multinode", "trainer.accelerator=cpu", "trainer.devices=2",
                   f"paths.log_dir={tmp_path}", program=[torchrun, "--standalone", "--nproc-per-node=2"])
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("torchrun-")  # both ranks picked the same folder
    (result,) = results_in(tmp_path)
    assert result["status"] == "completed" and result["distributed"]["world_size"] == 2


def test_launch_stamp_is_shared_by_the_ranks_of_a_launch(monkeypatch):
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_ID", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert launch_stamp()[:4].isdigit()  # a plain run: the time
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert launch_stamp() == "slurm-4242-0"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert launch_stamp() == "torchrun-abc"


# -- one job per GPU ------------------------------------------------------------------------------------------
def _claiming_job(job: int, n_slots: int, lock_dir: str, log) -> None:
    with claim_slot(n_slots, lock_dir, poll_s=0.01) as slot:
        started = time.monotonic()
        time.sleep(random.Random(job).uniform(0.05, 0.4))  # jobs end out of order
        log.put((job, slot, started, time.monotonic()))


def test_gpu_slots_are_never_shared_with_out_of_order_completion(tmp_path):
    """12 jobs, 5 workers racing for 3 simulated GPUs: no GPU ever holds two jobs at once, all are used."""
    context = mp.get_context("spawn")
    log = context.Manager().Queue()
    jobs = list(range(12))
    with context.Pool(5) as pool:
        pool.starmap(_claiming_job, [(job, 3, str(tmp_path), log) for job in jobs])
    records = [log.get() for _ in jobs]
    assert sorted(r[0] for r in records) == jobs and {r[1] for r in records} == {0, 1, 2}
    for slot in range(3):
        spans = sorted((start, end) for _, s, start, end in records if s == slot)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans


def test_a_crashed_job_frees_its_gpu(tmp_path):
    holder = mp.get_context("spawn").Process(target=_hold_forever, args=(str(tmp_path),))
    holder.start()
    deadline = time.monotonic() + 60
    while True:  # until the holder has claimed the only slot
        try:
            with claim_slot(1, tmp_path, poll_s=0.01, timeout_s=0):
                pass
        except TimeoutError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
    holder.join()
    with claim_slot(1, tmp_path, poll_s=0.01, timeout_s=5) as slot:
        assert slot == 0


def _hold_forever(lock_dir: str) -> None:
    with claim_slot(1, lock_dir):
        time.sleep(600)


def test_gpus_launcher_runs_n_jobs_at_once_on_distinct_slots(tmp_path):
    """hydra/launcher=gpus with 2 simulated GPUs (CPU training) running an ablation experiment: 4 jobs, never two
    on one slot at a time."""
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "experiment=ablation_digits", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", "trainer=cpu",
                   *TINY, "reg=none,l1", "seed=0,1",
                   f"paths.gpu_lock_dir={tmp_path / 'locks'}", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = results_in(sweep)
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    assert {r["device_slot"] for r in results} == {0, 1}
    for slot in (0, 1):
        spans = sorted((r["started_at"], r["started_at"] + r["wall_time_s"]) for r in results
                       if r["device_slot"] == slot)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans


def test_cpus_launcher_runs_jobs_side_by_side_with_one_thread_each(tmp_path):
    """hydra/launcher=cpus: 2 jobs at a time, each limited to cores // n_jobs torch threads, and both overlap."""
    sweep = tmp_path / "sweep"
    # 4 epochs: jobs long enough that two workers overlap even when one of them imports the stack seconds later.
    # Without the OMP_NUM_THREADS conftest gives each pytest worker (loky keeps a parent's value): the launcher's
    # own limit is what is tested.
    done = run_cli("-m", "experiment=ablation_digits", "hydra/launcher=cpus", "hydra.launcher.n_jobs=2", *TINY,
                   "trainer.max_epochs=4", "reg=none,l1", "seed=0", f"hydra.sweep.dir={sweep}",
                   env={"OMP_NUM_THREADS": None})
    assert done.returncode == 0, done.stderr[-3000:]
    results = results_in(sweep)
    assert len(results) == 2 and all(r["status"] == "completed" for r in results)
    from joblib import cpu_count

    assert {r["torch_threads"] for r in results} == {max(1, cpu_count() // 2)}  # what loky gives a worker
    (a_start, a_end), (b_start, b_end) = sorted((r["started_at"], r["started_at"] + r["wall_time_s"]) for r in results)
    assert b_start < a_end  # side by side, not one after the other


def test_gpus_launcher_refuses_multi_device_jobs(tmp_path):
    done = run_cli("-m", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", "trainer=ddp_cpu", *TINY,
                   f"hydra.sweep.dir={tmp_path}")
    assert "hydra/launcher=gpus runs one single-GPU job per GPU" in done.stderr


# -- SLURM ----------------------------------------------------------------------------------------------------
FAKE_SBATCH = r"""#!/bin/bash
# Starts every array task of the submitted script in the background, here, as SLURM would on a node.
script="$1"; [ "$1" = "--parsable" ] && script="$2"
cp "$script" "$FAKE_SLURM_DIR/submitted.sh"
id=4242
tasks=$(sed -n 's/^#SBATCH --array=0-\([0-9]*\).*/\1/p' "$script"); tasks=${tasks:-0}
echo "$tasks" > "$FAKE_SLURM_DIR/$id.tasks"
(
  sleep 1  # submitit moves the job pickles into place once sbatch has answered
  for i in $(seq 0 "$tasks"); do
    SLURM_JOB_ID=$((id + 1 + i)) SLURM_ARRAY_JOB_ID=$id SLURM_ARRAY_TASK_ID=$i SLURM_NTASKS=1 SLURM_PROCID=0 \
    SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=localhost SLURM_JOB_NAME=train \
      bash "$script"
    touch "$FAKE_SLURM_DIR/${id}_$i.done"
  done
) > /dev/null 2>&1 &
echo "Submitted batch job $id"
"""
FAKE_SRUN = r"""#!/bin/bash
# Runs the command; --output names its log (%A/%a/%j/%t as SLURM expands them).
out=/dev/null
while [[ "$1" == -* ]]; do
  case "$1" in --output|-o) out="$2"; shift 2;; --error|-e) shift 2;; *) shift;; esac
done
out=${out//%A/$SLURM_ARRAY_JOB_ID}; out=${out//%a/$SLURM_ARRAY_TASK_ID}; out=${out//%j/$SLURM_JOB_ID}
out=${out//%t/0}
"$@" > "$out" 2>&1
"""
FAKE_SACCT = r"""#!/bin/bash
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then
    for i in $(seq 0 "$(cat "$FAKE_SLURM_DIR/$2.tasks")"); do
      state=RUNNING; [ -e "$FAKE_SLURM_DIR/$2_$i.done" ] && state=COMPLETED
      echo "$2_$i|$state|localhost"
    done; shift
  fi
  shift
done
"""


def fake_slurm(folder: Path) -> dict:
    """sbatch / srun / sacct / scancel stand-ins that run the jobs on this machine."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("sacct", FAKE_SACCT),
                       ("scancel", "#!/bin/bash\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SLURM_DIR": str(folder)}


FAKE_SRUN_TASKS = r"""#!/bin/bash
# srun inside an allocation: SLURM_NTASKS copies of the command, each with its task's variables.
while [[ "$1" == -* ]]; do shift; done
port=$(( 20000 + RANDOM % 20000 ))
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 MASTER_PORT=$port "$@" &
done
status=0; for job in $(jobs -p); do wait "$job" || status=1; done; exit $status
"""


def test_sbatch_example_runs_ddp_multinode_under_srun(tmp_path):
    """scripts/slurm_ddp.sbatch as SLURM would run it on one node with 2 tasks (CPU instead of GPUs)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN_TASKS)
    (bin_dir / "srun").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}", "SLURM_JOB_ID": "777",
           "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_NODELIST": "localhost", "SLURM_JOB_NAME": "reglab-ddp", "SLURM_SUBMIT_DIR": str(ROOT),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_ddp.sbatch"), *TINY, "trainer.accelerator=cpu",
                           "trainer.devices=2", f"paths.log_dir={tmp_path / 'logs'}"],
                          env={**subprocess_environment(), **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (tmp_path / "logs" / "runs").iterdir()] == ["slurm-777-0"]  # one folder for both
    (result,) = results_in(tmp_path / "logs")
    assert result["status"] == "completed" and result["distributed"]["world_size"] == 2
    assert result["config"]["trainer"]["num_nodes"] == 1  # from SLURM_NNODES


def test_slurm_launcher_runs_an_ablation_as_a_job_array(tmp_path):
    """hydra/launcher=slurm through hydra-submitit-launcher, against stand-ins for the SLURM commands: the
    experiment's sweep becomes one job array with the configured resources, and every job completes."""
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "experiment=demo", "hydra/launcher=slurm", "hydra.launcher.partition=gpu-a100",
                   "hydra.launcher.timeout_min=90", "hydra.launcher.array_parallelism=2",
                   "hydra.launcher.gpus_per_node=0", "trainer=cpu", "reg=none,l1", "trainer.max_epochs=1",
                   "logger=csv", f"hydra.sweep.dir={sweep}", env=fake_slurm(tmp_path / "slurm"))
    assert done.returncode == 0, done.stderr[-3000:]
    script = (tmp_path / "slurm" / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu-a100", "#SBATCH --time=90", "#SBATCH --array=0-1%2",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB"):
        assert line in script, script
    results = results_in(sweep)
    assert sorted(r["choices"]["reg"] for r in results) == ["l1", "none"]
    assert all(r["status"] == "completed" and r["study"] == "demo" for r in results)
