"""Write-then-rename, so a crash never leaves a half-written cache or results file. What is written gets the mode
any ordinary file (or folder) would get under the user's umask: mkstemp / mkdtemp make theirs private (0600 /
0700), and a rename keeps that, so colleagues on a shared cluster could not read results."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, IO

from reglab.errors import ReglabError


def current_umask() -> int:
    mask = os.umask(0)  # the only way to read it: set and restore
    os.umask(mask)
    return mask


def with_umask_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a new file (0666) or folder (0777) gets under the current umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


NO_SPACE = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is exceeded",
            errno.EFBIG: "the file is larger than this process may write (ulimit -f)"}


class WriteError(ReglabError, OSError):
    """A file reglab writes could not be written (a full disk, a quota, a read-only folder): one line naming the
    path and the cause. Nothing torn is left behind: the write went to a temporary file, now removed."""


def write_error(path: Path, err: OSError) -> WriteError:
    cause = NO_SPACE.get(err.errno) or err.strerror or str(err)
    advice = ("; free some space and re-run the same command (a run resumes from its last checkpoint)"
              if err.errno in NO_SPACE else "")
    return WriteError(f"cannot write {path}: {cause}{advice}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(handle)`` into a temporary file in the same folder, then rename it over
    ``path`` (atomic on one filesystem): a crash, a signal or a full disk leaves the old file or the new one,
    never a torn one. A failed write is a WriteError naming the path and the cause."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        with_umask_mode(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, WriteError):
            raise
        raise write_error(path, err) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(path: str | os.PathLike, obj) -> Path:
    """``torch.save`` through atomic_write. Serialised in memory first: torch's own file writer reports a failed
    write as ``RuntimeError: [enforce fail at inline_container.cc ...]``, which names neither file nor cause."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def check_writable_dir(path: str | os.PathLike, key: str, why: str) -> None:
    """``path`` is (or can be made as) a folder this user may write in; else one line naming the key, the folder
    and ``why`` it is written, so a permission problem is not reported as a fault of whatever is read next."""
    from reglab.errors import ConfigError

    folder = Path(path).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{key}={str(path)!r}: {existing} is a file, not a folder ({why})")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        what = "is" if existing == folder else f"would be created in {existing}, which is"
        raise ConfigError(f"{key}={str(path)!r}: {what} not writable by this user ({why}); "
                          f"point {key} at a writable folder")
