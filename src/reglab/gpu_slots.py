"""One job per GPU when a parallel launcher (hydra/launcher=gpus) runs N jobs at once on a node.

A job claims a GPU by taking an exclusive ``flock`` on that GPU's lock file and holds it until it ends. The
kernel releases the lock when the holder exits, crashes included, so jobs finishing out of order (or dying)
free exactly their own GPU, and two jobs never share one, whichever sweep they belong to. A job that finds
every GPU taken waits for one. Lock files live on the node's local disk: the claim is per node."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from reglab.errors import ConfigError


@contextlib.contextmanager
def claim_slot(n_slots: int, lock_dir: str | Path, poll_s: float = 0.5,
               timeout_s: float | None = None) -> Iterator[int]:
    """Yields the index of a free slot in [0, n_slots), held until the block exits."""
    if n_slots < 1:
        raise ConfigError(f"no GPU slots to claim (n_slots={n_slots}): hydra/launcher=gpus needs visible GPUs")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited_since = time.monotonic()
    while True:
        for slot in range(n_slots):
            handle = os.open(lock_dir / f"gpu{slot}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            try:
                os.ftruncate(handle, 0)
                os.write(handle, f"{os.getpid()}\n".encode())  # who holds it, for a curious user
                yield slot
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                os.close(handle)
            return
        if timeout_s is not None and time.monotonic() - waited_since > timeout_s:
            raise TimeoutError(f"all {n_slots} GPU slots in {lock_dir} stayed taken for {timeout_s:.0f} s")
        time.sleep(poll_s)


def launcher_choice() -> str | None:
    """The hydra/launcher config this job runs under (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("hydra/launcher")


def launcher_jobs() -> int:
    from hydra.core.hydra_config import HydraConfig

    return int(HydraConfig.get().launcher.get("n_jobs", 1))
