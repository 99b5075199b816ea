"""How a command's console reads in a pipe: its lines, each with the seconds since the start, then the line
count and the longest silence (the console must never be silent for much more than a minute on slow work).

    python scripts/console_gaps.py -- python train.py data=digits trainer.max_epochs=2
    python scripts/console_gaps.py --quiet -- python train.py experiment=sst2_baseline data.path=DIR

Prints a summary; writes console_gaps.json (--out): lines, longest_silence_s and where it was, wall_s, exit code."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print only the summary, not every line")
    parser.add_argument("--out", type=Path, default=Path("console_gaps.json"))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")

    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines, last, longest, after = 0, started, 0.0, "(the start)"
    previous = "(the start)"
    for line in process.stdout:
        now = time.monotonic()
        if now - last > longest:
            longest, after = now - last, previous
        lines, last, previous = lines + 1, now, line.rstrip()[:120]
        if not args.quiet:
            print(f"{now - started:7.1f}s  {line.rstrip()}", flush=True)
    code = process.wait()
    end = time.monotonic()
    if end - last > longest:
        longest, after = end - last, previous
    summary = {"command": command, "lines": lines, "longest_silence_s": round(longest, 1), "silent_after": after,
               "wall_s": round(end - started, 1), "exit_code": code}
    print(f"\n{lines} lines in {summary['wall_s']} s; longest silence {summary['longest_silence_s']} s, after: "
          f"{after}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from reglab.atomic import atomic_write

    atomic_write(args.out, lambda handle: handle.write((json.dumps(summary, indent=2) + "\n").encode()))
    sys.exit(code)


if __name__ == "__main__":
    main()
