"""Shared fixtures. Everything here is offline and uses data the tests make themselves."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

for _var, _value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"), ("WANDB_MODE", "offline"),
                     ("WANDB_SILENT", "true")):
    os.environ.setdefault(_var, _value)
# A pytest-xdist worker gets its share of the cores for torch's intra-op threads (inherited by every command it
# starts): under -n N, N workers training at once with a thread per core apiece spin-waited on each other, which
# cost the suite a sixth of its time (444 s -> 369 s on 2 cores). The cores are those this process may run on
# (its affinity, as -n auto counts them). A value set by the user is kept; the controller, which trains
# nothing, sets none.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny_cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent colour blobs on noise, so a tiny CNN can learn something real in 2 epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 32, 32, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 8:24, 8:24, label % 3] = 120 + 12 * label
    return images, labels


def write_parquet_split(path: Path, n: int, seed: int) -> None:
    import io

    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    images, labels = tiny_cifar_arrays(n, seed)
    encoded = []
    for array in images:
        buffer = io.BytesIO()
        PILImage.fromarray(array).save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    features = Features({"img": Image(), "label": ClassLabel(names=CLASSES)})
    Dataset.from_dict({"img": encoded, "label": labels.tolist()}, features=features).to_parquet(str(path))


@pytest.fixture(scope="session")
def cifar_parquet(tmp_path_factory) -> Path:
    """Hub schema (img + label ClassLabel), named by split; no test split, like ../shared/data."""
    root = tmp_path_factory.mktemp("cifar_parquet")
    write_parquet_split(root / "train.parquet", 80, seed=0)
    write_parquet_split(root / "validation.parquet", 30, seed=1)
    return root


@pytest.fixture(scope="session")
def cifar_imagefolder(tmp_path_factory) -> Path:
    from PIL import Image as PILImage

    root = tmp_path_factory.mktemp("cifar_imagefolder")
    for split, n, seed in (("train", 80, 0), ("test", 30, 2)):
        images, labels = tiny_cifar_arrays(n, seed)
        for i, (array, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(array).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def cifar_python_batches(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar_batches") / "cifar-10-batches-py"
    root.mkdir()

    def dump(name: str, n: int, seed: int) -> None:
        images, labels = tiny_cifar_arrays(n, seed)
        batch = {b"data": images.transpose(0, 3, 1, 2).reshape(n, -1), b"labels": labels.tolist()}
        with open(root / name, "wb") as handle:
            pickle.dump(batch, handle)

    dump("data_batch_1", 50, 0)
    dump("data_batch_2", 50, 1)
    dump("test_batch", 30, 2)
    with open(root / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, handle)
    return root.parent


def compose_config(tmp_path: Path, overrides: list[str]):
    """Compose conf/train.yaml in-process as `python train.py <overrides>` would, with outputs in tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from reglab import resolvers

    resolvers.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        del cfg.hydra
    return cfg


def data_settings(name: str, *overrides: str, model: str | None = None) -> dict:
    """What ``data=<name>`` (with ``model``, else the model it picks) hands its datamodule, as a run composes it:
    interpolations resolved, without ``_target_`` and ``cache_dir``."""
    import tempfile

    from omegaconf import OmegaConf

    cfg = compose_config(Path(tempfile.gettempdir()), [f"data={name}", *([f"model={model}"] if model else []),
                                                       *overrides])
    settings = OmegaConf.to_container(cfg.data, resolve=True)
    del settings["_target_"], settings["cache_dir"]
    return settings


def subprocess_environment() -> dict:
    """Offline, and without this pytest process's W&B service: in-process tests start one and export
    WANDB_SERVICE, and a child that joined it would share its runs (a killed child's run would stay open)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def run_cli(*args: str, timeout=300, **how) -> subprocess.CompletedProcess:
    """`python <script> <args>` run to its end in a process of its own, offline (see ``start_cli`` for ``how``);
    on a timeout it is killed and subprocess.TimeoutExpired raised, as subprocess.run does."""
    process = start_cli(*args, **how)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=60)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def start_cli(*args: str, script="train.py", cwd=ROOT, env=None, program=None, new_session=False, fresh=False,
              umask: int | None = None, file_size_limit: int | None = None):
    """`python <script> <args>` (train.py; or under ``program``, e.g. torchrun) started in a process of its own,
    offline, and returned running, as subprocess.Popen would: ``pid``, ``poll()``, ``wait()``, ``communicate()``,
    ``send_signal()``, and ``stdout`` / ``stderr`` to read once it has ended. It is forked from a server that
    imported torch and Lightning once (tests/warm_cli.py), unless ``fresh``: a test of start-up itself (time to
    an error, everything a new process prints) gets a new interpreter, as does every command when
    REGLAB_TEST_FRESH_CLI=1. ``env`` adds to the test's environment (a value of None removes the variable).
    ``new_session``: its own process group. ``umask`` and ``file_size_limit`` (bytes any file may grow to, as a
    full disk stops a write) are set in the process before the command starts."""
    env = {k: v for k, v in {**subprocess_environment(), **(env or {})}.items() if v is not None}
    argv = [str(ROOT / script), *args]
    if program is None and WarmCLI.serves(env, fresh):
        return WarmCLI.shared().start(argv, cwd, env, new_session,
                                      limits={"umask": umask, "file_size_limit": file_size_limit})

    from functools import partial

    from warm_cli import apply_limits

    limited = umask is not None or bool(file_size_limit)  # preexec_fn only when needed: this process has threads
    return subprocess.Popen([*(program or [sys.executable]), *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=new_session,
                            preexec_fn=partial(apply_limits, umask, file_size_limit) if limited else None)


class WarmCLI:
    """This test process's client of tests/warm_cli.py (one server per pytest worker, started on first use)."""

    _shared: WarmCLI | None = None
    # read when an interpreter starts or when torch / datasets are imported: a command that sets them differently
    # from the server gets a fresh interpreter (PYTHONPATH is applied by the child itself)
    START_UP_VARIABLES = ("PYTHON", "HF_", "TORCH", "OMP_", "MKL_", "CUDA", "TMPDIR")
    # what Lightning's rank_zero_only reads when it is imported
    RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")

    @classmethod
    def shared(cls) -> WarmCLI:
        if cls._shared is None or cls._shared.process.poll() is not None:
            cls._shared = cls()
        return cls._shared

    @classmethod
    def serves(cls, env: dict, fresh: bool) -> bool:
        if fresh or os.environ.get("REGLAB_TEST_FRESH_CLI") == "1":
            return False
        # the environment the server imported torch under (or will, when it starts)
        alive = cls._shared is not None and cls._shared.process.poll() is None
        server = cls._shared.environment if alive else subprocess_environment()
        keys = {k for k in set(env) | set(server)
                if (k.startswith(cls.START_UP_VARIABLES) or k in cls.RANK_VARIABLES) and k != "PYTHONPATH"}
        return all(env.get(k) == server.get(k) for k in keys)

    def __init__(self):
        import atexit
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="reglab-warm-cli-"))
        self.log = self.folder / "server.log"  # what the server itself says
        self.environment = subprocess_environment()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "warm_cli.py")], cwd=ROOT,
                                            env=self.environment, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=log, bufsize=0)
        self.buffer, self.started, self.ended, self.requests = b"", {}, {}, 0
        atexit.register(self.process.kill)
        if self.read_answer(timeout=300) is None:  # {"ready": true}
            raise RuntimeError(f"the warm CLI server did not start: {self.log.read_text()[-2000:]}")

    def read_answer(self, timeout: float) -> dict | None:
        """The server's next answer, filed (started: request id -> pid; ended: pid -> exit code), or None when
        none came within ``timeout`` seconds."""
        import json
        import select
        import time

        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the warm CLI server ended: {self.log.read_text()[-2000:]}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        if "code" in message:
            self.ended[message["pid"]] = message["code"]
        elif "id" in message:
            self.started[message["id"]] = message["pid"]
        return message

    def start(self, argv: list[str], cwd, env: dict, new_session: bool = False, limits: dict | None = None
              ) -> WarmProcess:
        import json

        self.requests += 1
        name = self.requests
        out, err = self.folder / f"{name}.out", self.folder / f"{name}.err"
        out.touch()
        err.touch()
        request = {"id": name, "argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err),
                   "new_session": new_session, **(limits or {})}
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        while name not in self.started:
            if self.read_answer(timeout=60) is None:
                raise RuntimeError(f"the warm CLI server did not fork: {self.log.read_text()[-2000:]}")
        return WarmProcess(self, [sys.executable, *argv], self.started.pop(name), out, err)

    def exit_code(self, pid: int, timeout: float) -> int | None:
        import time

        deadline = time.monotonic() + timeout
        while pid not in self.ended:
            if self.read_answer(timeout=max(0.0, deadline - time.monotonic())) is None:
                return None
        return self.ended[pid]


class WarmProcess:
    """A command the warm server forked, with the part of subprocess.Popen's interface the tests use."""

    class Output:
        def __init__(self, path: Path):
            self.path = path

        def read(self) -> str:
            return self.path.read_text(errors="replace")

    def __init__(self, server: WarmCLI, args: list[str], pid: int, out: Path, err: Path):
        self.server, self.args, self.pid, self.returncode = server, args, pid, None
        self.stdout, self.stderr = self.Output(out), self.Output(err)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout=10 ** 6 if timeout is None else timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        return self.stdout.read(), self.stderr.read()

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        import signal

        self.send_signal(signal.SIGTERM)


# Small and fast: a tiny CNN, a couple of epochs, CPU, no W&B unless a test asks for it.
FAST = ["trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=csv", "data.batch_size=16", "optim.lr=1e-2"]
SMALL_CNN = ["model.widths=[8,16]", "model.convs_per_stage=1", "model.fc_hidden=16"]


@pytest.fixture
def make_config(tmp_path):
    def make(*overrides: str, fast: bool = True):
        other_model = any(o.startswith("model=") and o != "model=cnn" for o in overrides)
        small = FAST + ([] if other_model else SMALL_CNN)
        return compose_config(tmp_path, (small if fast else []) + list(overrides))

    return make


def wandb_offline_records(path: Path) -> dict:
    """The run, config and summary of an offline ``run-*.wandb`` file (wandb 0.31 writes no config.yaml or
    summary file offline). The file is a LevelDB-style log of ``Record`` protobufs: 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) after a 7-byte file header."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending = Path(path).read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B", f"{path}: not a W&B offline log"
    out = {"run": None, "config": {}, "summary": {}}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        which = record.WhichOneof("record_type")
        if which == "run":
            out["run"] = record.run
            out["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif which == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif which == "summary":
            out["summary"].update({u.key: json.loads(u.value_json) for u in record.summary.update if u.key})
    return out

