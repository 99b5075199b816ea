"""Run `python train.py ...` (or eval.py, a script) as a forked child of a process that imported the heavy stack
(torch, Lightning, torchmetrics, Hydra, datasets) once, instead of as a fresh interpreter that imports it again.

A test's command still runs as its own process, from its own argv, working folder and environment, through the
real entry script's ``__main__``, with stdout and stderr of its own and its own exit code: only the third-party
imports were done before the fork (reglab itself is imported by the child, so its start-up marks are its own).
That saves the 5 to 10 seconds of imports per command that dominated the suite's time. Tests about start-up
itself (time to an error, what a fresh process prints) run a fresh interpreter (``run_cli(fresh=True)``).

Protocol: the test process writes one JSON request per line to the server's stdin; the server forks, answers
``{"pid": N, "id": request id}`` at once and ``{"pid": N, "code": C}`` when the child has ended. Several
children may run at once (a test that starts two runs into one folder, or signals a run while it trains)."""

from __future__ import annotations

import json
import os
import runpy
import sys

PRELOADED = ("torch", "pytorch_lightning", "torchmetrics", "hydra", "hydra.core.global_hydra", "omegaconf",
             "datasets", "numpy", "PIL.Image", "sklearn.datasets", "sklearn.model_selection", "pandas")


def apply_limits(umask: int | None = None, file_size_limit: int | None = None) -> None:
    """A command's process limits, set in it before it starts (here in a forked child; conftest's fresh
    commands call it as their preexec_fn): its umask, and the bytes any file may grow to, as a full disk would
    stop a write (SIGXFSZ ignored: the write fails)."""
    if umask is not None:
        os.umask(umask)
    if file_size_limit:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))


def child(request: dict) -> None:
    """In the forked child: become the requested command, then exit as it did (raising SystemExit here lets
    the interpreter end normally: non-daemon threads joined, atexit handlers run, as in a fresh process)."""
    os.chdir(request["cwd"])
    apply_limits(request.get("umask"), request.get("file_size_limit"))
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    extra = [entry for entry in request["env"].get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[1:1] = extra  # where a fresh interpreter puts PYTHONPATH
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - as an uncaught exception ends a fresh interpreter
        import traceback

        traceback.print_exc()
        raise SystemExit(1) from None
    raise SystemExit(0)


def serve() -> None:
    import logging
    import select
    import signal

    # Lightning gives its loggers a handler of their own (and stops them propagating) when it is imported before
    # anything configured logging; a fresh train.py imports it after Hydra did. A placeholder root handler
    # while importing keeps the child's logging what a fresh process's is; the root is left as it was found.
    placeholder = logging.NullHandler()
    logging.getLogger().addHandler(placeholder)
    for name in PRELOADED:
        __import__(name)
    logging.getLogger().removeHandler(placeholder)

    answers = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # nothing but the answers reaches the test process
    os.close(quiet)
    # A child's end wakes the loop through this pipe (no thread: this process forks)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def answer(message: dict) -> None:
        print(json.dumps(message), file=answers)

    print(json.dumps({"ready": True}), file=answers)
    pending = b""
    while True:
        ready, _, _ = select.select([0, wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
            while True:  # every child that ended
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                answer({"pid": pid, "code": os.waitstatus_to_exitcode(status)})
        if 0 in ready:
            chunk = os.read(0, 65536)
            if not chunk:
                return  # the test process is gone
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for fd in (wake_read, wake_write):
                        os.close(fd)
                    answers.close()
                    if request.get("new_session"):
                        os.setsid()
                    child(request)
                answer({"pid": pid, "id": request["id"]})


if __name__ == "__main__":
    serve()
