"""The README's results blocks, computed from the committed summaries (never typed by hand).

A block in README.md is an HTML comment naming a committed lite experiment, its generated
Markdown (a table and the same-seed comparisons in words: ``fedpft_lite.results.results_markdown``),
and a closing comment::

    <!-- results lite/table1 -->
    | lite/table1 (test) | ours % (95 % CI) | seeds | per seed | ...
    ...
    <!-- /results -->

``<!-- results lite/neuron-steps fm_val_accuracy -->`` reports validation accuracy instead.

    python scripts/readme_results.py            # rewrite every block from data/results/
    python scripts/readme_results.py --check    # exit 1, naming each block that differs

``tests/test_readme_results.py`` runs the check: a number changed by hand in a block fails it,
and so does a committed summary that changed without the README.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- results (?P<name>\S+)(?: (?P<metric>\S+))? -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def generated(name: str, metric: str | None = None) -> str:
    sys.path.insert(0, str(ROOT))
    from fedpft_lite.results import results_markdown
    return results_markdown(name, metric=metric)   # None: the experiment's own (Experiment.metric)


def blocks(text: str) -> list[tuple[str, str]]:
    """(experiment, body) of every results block, in order."""
    return [(m["name"], m["body"]) for m in BLOCK.finditer(text)]


def differences(text: str) -> list[str]:
    """One message per block whose body is not what the committed data give (with a diff)."""
    out = []
    for m in BLOCK.finditer(text):
        name, body = m["name"], m["body"]
        try:
            want = generated(name, m["metric"])
        except FileNotFoundError as e:
            out.append(f"results block {name}: {e}")
            continue
        if body != want:
            diff = "".join(difflib.unified_diff(body.splitlines(True), want.splitlines(True),
                                                "README.md", "committed data", n=0))
            out.append(f"results block {name} differs from the committed data:\n{diff}")
    return out


def rewrite(text: str) -> str:
    """Every block from the committed data; a block whose experiment has no committed summary yet
    is left as it is (and named on stderr: ``--check`` fails on it)."""
    def one(m):
        try:
            return m.group(1) + generated(m["name"], m["metric"]) + m.group(5)
        except FileNotFoundError as e:
            print(f"left as it is: {e}", file=sys.stderr)
            return m.group(0)
    return BLOCK.sub(one, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on any difference")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    if args.check:
        problems = differences(text)
        for p in problems:
            print(p)
        print(f"{len(blocks(text))} results blocks, {len(problems)} differ")
        return 1 if problems else 0
    new = rewrite(text)
    args.readme.write_text(new)
    print(f"{len(blocks(new))} results blocks written ({'changed' if new != text else 'unchanged'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
