"""How fast the command line answers: the time to refuse bad input, print --help and print
``info``'s first line, each as a ratio over a bare interpreter start (``python -c pass``),
measured side by side (interleaved rounds, medians), because a 2-core machine's load drifts.

    python benchmarks/cli_startup.py                 # 7 rounds
    python benchmarks/cli_startup.py --rounds 11

Each command runs in a fresh interpreter, as a user types it. ``import torch`` alone is timed
beside them: it is what every command paid before the heavy imports moved behind validation
(the goal: an error, --help and info's first line in under 2 s on the slow 2-core machine, where
importing torch, transformers and datasets took 12-16 s).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def commands(tmp: Path) -> dict[str, list[str]]:
    (tmp / "empty.csv").write_text("text,label\n")
    cli = [PY, "-m", "fedpft_lite"]
    return {
        "python -c pass (the reference)": [PY, "-c", "pass"],
        "fedpft-lite run --set foo=1 (unknown key)": cli + ["run", "--set", "foo=1"],
        "fedpft-lite run --set fraction=1.5": cli + ["run", "--set", "fraction=1.5", "num_clients=4"],
        "fedpft-lite run --set task=empty.csv": cli + ["run", "--set", f"task={tmp / 'empty.csv'}"],
        "fedpft-lite run --set task=sst2 (offline)": cli + ["run", "--set", "task=sst2"],
        "fedpft-lite --help": cli + ["--help"],
        "fedpft-lite info (first line)": cli + ["info"],
        "python -c 'import torch' (for scale)": [PY, "-c", "import torch"],
    }


def first_line_seconds(cmd: list[str], env: dict) -> float:
    """Seconds until the command prints its first line (or exits, if it prints none)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    p.stdout.readline()
    seconds = time.perf_counter() - t0
    p.kill() if "info" in cmd else None
    p.wait()
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as d:
        cmds = commands(Path(d))
        names = list(cmds)
        times = {n: [] for n in names}
        for n in names:                            # warm the file cache once
            first_line_seconds(cmds[n], env)
        for r in range(args.rounds):               # interleaved, order rotated every round
            for n in names[r % len(names):] + names[:r % len(names)]:
                times[n].append(first_line_seconds(cmds[n], env))
    ref = statistics.median(times[names[0]])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}; {args.rounds} interleaved rounds")
    print(f"{'command':45s} {'median s':>9s} {'max s':>7s} {'x python -c pass':>17s}")
    for n in names:
        med = statistics.median(times[n])
        print(f"{n:45s} {med:9.3f} {max(times[n]):7.3f} {med / ref:17.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
