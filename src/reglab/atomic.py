"""Write-then-rename, so a crash never leaves a half-written cache or results file. What is written gets the mode
any ordinary file (or folder) would get under the user's umask: mkstemp / mkdtemp make theirs private (0600 /
0700), and a rename keeps that, so colleagues on a shared cluster could not read results."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it: set and restore
    os.umask(mask)
    return mask


def with_umask_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a new file (0666) or folder (0777) gets under the current umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        with_umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
