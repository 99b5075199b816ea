"""One writer per run folder. A live run holds an exclusive ``flock`` on ``<run folder>/.reglab.lock``, whose
text names the holder (host, pid, start time). The kernel drops the lock when the holder dies, however it dies,
so a lock left by a killed run is taken over (with a warning naming the dead holder) and never blocks a re-run.
A second process that finds the lock held refuses (``FolderBusy``): a single run exits with one line naming the
holder, a sweep job is counted *busy elsewhere* by the sweep summary. The file is emptied, never deleted, on
release: deleting it would let a third process lock a fresh file while a second still holds the old one.

A folder on a filesystem without working ``flock`` (some network mounts) still refuses a holder that is alive
on this host, read from the file's text."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
import time
from pathlib import Path

from reglab.atomic import WriteError, write_error
from reglab.errors import ReglabError

log = logging.getLogger(__name__)

LOCK_FILE = ".reglab.lock"
_held: dict[Path, "FolderLock"] = {}  # folders this process holds, so a second acquire in it is a no-op


class FolderBusy(ReglabError):
    """Another live process writes into this run folder."""

    def __init__(self, folder: Path, holder: str):
        super().__init__(f"{folder} is in use by another run ({holder}); wait for it to finish, or write this run "
                         "elsewhere (hydra.run.dir / hydra.sweep.dir)")
        self.folder, self.holder = folder, holder


def describe(text: str) -> str:
    """'host 1234 1700000000.0' -> 'host h, pid 1234, since 14:02:07'."""
    parts = text.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return "holder unknown: the lock file's text is not reglab's"
    since = ""
    if len(parts) > 2:
        try:
            since = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(parts[2])))}"
        except ValueError:
            pass
    return f"host {parts[0]}, pid {parts[1]}{since}"


def alive_here(text: str, path: Path | None = None) -> bool:
    """The holder the text names is a live process on this host, other than this one, and (where /proc shows
    it) one that has ``path`` open: a pid reused by an unrelated process since is not a holder."""
    parts = text.split()
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return path is None or has_open(pid, path)


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (True where /proc cannot tell)."""
    try:
        target = os.path.realpath(path)
        return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return True


class FolderLock:
    def __init__(self, folder: Path, fd: int):
        self.folder, self.fd = folder, fd

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = -1
        _held.pop(self.folder, None)


def acquire(folder: str | os.PathLike) -> FolderLock:
    """Hold ``folder`` for this process (created if missing), or raise FolderBusy naming the live holder."""
    folder = Path(folder).absolute()
    if folder in _held:
        return _held[folder]
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # never through a link: truncating and writing would reach whatever file it points at
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise WriteError(f"{path} is a symbolic link; a run folder's lock must be a plain file (remove the "
                             "link)") from None
        raise write_error(path, err) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WriteError(f"{path} is not a plain file; a run folder's lock must be one (remove it)")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderBusy(folder, describe(read_holder(fd))) from None
        previous = read_holder(fd)
        if alive_here(previous, path):  # flock is not enforced on this filesystem, but the holder is alive
            raise FolderBusy(folder, describe(previous))
        if previous.strip():
            log.warning("%s: took over the lock left by a run that is no longer running (%s)", folder,
                        describe(previous))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} {os.getpid()} {time.time():.1f}\n".encode(), 0)
            os.fsync(fd)
        except OSError as err:
            raise write_error(path, err) from None
    except BaseException:
        os.close(fd)
        raise
    lock = _held[folder] = FolderLock(folder, fd)
    return lock


def read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode(errors="replace")
    except OSError:
        return ""


def holder_of(folder: str | os.PathLike) -> str | None:
    """Who holds ``folder`` now ('host h, pid p, since t'), or None when no live process does."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return describe(read_holder(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        text = read_holder(fd)
        return describe(text) if alive_here(text, path) else None
    finally:
        os.close(fd)
