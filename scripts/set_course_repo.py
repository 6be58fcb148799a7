"""Point every notebook's Colab install at the course's repository, as set in course.toml.

    python scripts/set_course_repo.py            # rewrite the notebooks that disagree with course.toml
    python scripts/set_course_repo.py --check    # only report them (exit status 1 if any)

The first code cell of each notebook installs the package on Colab from ``REPO``; this rewrites
that one line, ``REPO = "<[course] repository>"   # <its comment, kept>``, and nothing else: the
notebook is read and checked with nbformat, the line is replaced in the file's own text (so its
formatting, key order and the absence of outputs stay exactly as they were), and the result is
read back with nbformat to make sure only that line of that cell changed.
``tests/test_render.py`` fails while a notebook's line disagrees with course.toml.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO_LINE = re.compile(r"""^(?P<head>REPO\s*=\s*)(?P<quote>["'])(?P<url>[^"'\\]*)(?P=quote)(?P<tail>.*)$""")


def _render_module():
    spec = importlib.util.spec_from_file_location("render_notebooks", Path(__file__).with_name("render_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_course(path: Path | str = ROOT / "course.toml") -> dict:
    """course.toml's [course] table, as the site builder reads it."""
    return _render_module().load_course(path)


def repo_line(nb) -> tuple[int, int, str]:
    """(cell index, line index, line) of the ``REPO = "..."`` line in the notebook's first code cell."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for j, line in enumerate(cell.source.split("\n")):
                if REPO_LINE.match(line):
                    return i, j, line
            raise ValueError(f"its first code cell has no line REPO = \"...\"")
    raise ValueError("it has no code cell")


def notebook_repo(path: Path) -> str:
    """The repository URL the notebook's first code cell installs from."""
    import nbformat
    return REPO_LINE.match(repo_line(nbformat.read(path, as_version=4))[2]).group("url")


def set_repo(path: Path, repository: str) -> bool:
    """Rewrite the notebook's REPO line to ``repository``; True if the file changed."""
    import nbformat

    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    i, j, old = repo_line(nb)
    m = REPO_LINE.match(old)
    if m.group("url") == repository:
        return False
    new = f'{m.group("head")}"{repository}"{m.group("tail")}'
    lines = nb.cells[i].source.split("\n")
    ending = "\n" if j + 1 < len(lines) else ""          # how the line is stored in the JSON list
    old_json, new_json = (json.dumps(line + ending, ensure_ascii=False) for line in (old, new))
    if text.count(old_json) != 1:
        raise ValueError(f"{path}: the line {old!r} is stored {text.count(old_json)} times in the file's "
                         "text, not once; edit it by hand")
    new_text = text.replace(old_json, new_json)
    # read back: exactly that line of that cell differs, everything else is as it was
    lines[j] = new
    expected = copy.deepcopy(nb)
    expected.cells[i].source = "\n".join(lines)
    if nbformat.reads(new_text, as_version=4) != expected:
        raise ValueError(f"{path}: rewriting the REPO line would change more than that line")
    path.write_text(new_text, encoding="utf-8")
    return True


def mismatches(notebooks: Path, repository: str) -> list[str]:
    """One line per notebook whose REPO line is not ``repository`` (or that has none)."""
    problems = []
    for path in sorted(Path(notebooks).glob("*.ipynb")):
        try:
            found = notebook_repo(path)
        except ValueError as err:
            problems.append(f"{path.name}: {err}")
            continue
        if found != repository:
            problems.append(f"{path.name}: REPO = {found!r}, course.toml says {repository!r}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook disagrees")
    ap.add_argument("--course", default=str(ROOT / "course.toml"), help="the course settings (default: course.toml)")
    ap.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="folder of the .ipynb files")
    args = ap.parse_args(argv)
    repository = load_course(args.course)["repository"]
    if args.check:
        problems = mismatches(Path(args.notebooks), repository)
        for line in problems:
            print(line)
        if problems:
            print("run: python scripts/set_course_repo.py")
        return 1 if problems else 0
    paths = sorted(Path(args.notebooks).glob("*.ipynb"))
    if not paths:
        ap.error(f"no notebooks in {args.notebooks}")
    changed = [p.name for p in paths if set_repo(p, repository)]
    print(f"REPO = {repository!r}: " + (f"set in {', '.join(changed)}" if changed
                                          else f"all {len(paths)} notebooks had it already"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
