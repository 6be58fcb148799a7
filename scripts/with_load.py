"""Run a command while other CPU-bound processes compete for the cores: the proof that the tests
do not depend on wall-clock speed (issue 26: the CI script passes while two busy loops run).

    python scripts/with_load.py --busy 2 -- bash .ci/run
    python scripts/with_load.py --busy 2 --repeat 3 --log ci-under-load.txt -- bash .ci/run

Starts ``--busy`` processes that each spin on one core (pure Python arithmetic, no sleeping),
runs the command (``--repeat`` times, stopping at the first failure), then ends the busy loops,
also when the command fails or is interrupted. Prints each run's exit code, wall time and the
load average, and appends them to ``--log``. Exits with the first non-zero exit code.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time


def spin() -> None:
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes to run beside the command")
    ap.add_argument("--repeat", type=int, default=1, help="run the command this many times in a row")
    ap.add_argument("--log", default=None, help="append one line per run to this file")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command after --, e.g. -- bash .ci/run")
    if args.busy < 0 or args.repeat < 1:
        ap.error("--busy must be >= 0 and --repeat >= 1")
    loops = [mp.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in loops:
        p.start()
    code = 0
    try:
        for i in range(1, args.repeat + 1):
            t0 = time.time()
            code = subprocess.call(cmd)
            line = (f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} run {i}/{args.repeat} "
                    f"with {args.busy} busy loop(s): exit {code}, {time.time() - t0:.0f} s, "
                    f"load average {os.getloadavg()[0]:.1f}: {' '.join(cmd)}")
            print(line, flush=True)
            if args.log:
                with open(args.log, "a") as f:
                    f.write(line + "\n")
            if code != 0:
                break
    finally:
        for p in loops:
            p.terminate()
        for p in loops:
            p.join()
    return code


if __name__ == "__main__":
    sys.exit(main())
