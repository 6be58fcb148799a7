"""Where the test suite's time goes, as the Markdown tables of tests/README.md: the slowest tests
and the total per file, from pytest's JUnit XML (setup + call + teardown of each test).

    pytest tests/ --nbmake notebooks/ --junitxml=fast.xml
    pytest tests/ -m slow --junitxml=slow.xml
    python scripts/test_durations.py fast.xml slow.xml --top 25

Several files are read as one suite (e.g. the fast and the slow tier); each test is labelled with
its tier when more than one file is given (the file's name without .xml).
"""
from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET
from pathlib import Path


def read(path: Path) -> list[tuple[str, str, float]]:
    """(file, test id, seconds) per test case of a JUnit XML file."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        if cls.startswith("notebooks."):           # nbmake: notebooks.<name>.ipynb
            file = "notebooks/" + cls.removeprefix("notebooks.")
            test = file
        else:
            file = cls.replace(".", "/") + ".py"
            test = f"{file}::{name}"
        rows.append((file, test, float(case.get("time", 0.0))))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("xml", nargs="+", type=Path, help="pytest --junitxml files")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    tests, per_file, count = [], collections.Counter(), collections.Counter()
    for path in args.xml:
        tier = f" ({path.stem})" if len(args.xml) > 1 else ""
        for file, test, seconds in read(path):
            tests.append((seconds, test + tier))
            per_file[file + tier] += seconds
            count[file + tier] += 1
    total = sum(s for s, _ in tests)
    print(f"{len(tests)} tests, {total:.0f} s in tests (the wall time adds collection and start-up)\n")
    print(f"| # | slowest {args.top} tests | s |\n|---|---|---|")
    for i, (seconds, test) in enumerate(sorted(tests, reverse=True)[:args.top], 1):
        print(f"| {i} | `{test}` | {seconds:.1f} |")
    print("\n| file | tests | s | share |\n|---|---|---|---|")
    for file, seconds in per_file.most_common():
        print(f"| `{file}` | {count[file]} | {seconds:.1f} | {100 * seconds / total:.0f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
