"""Render the notebooks, executed, to static HTML a student can read without running anything.

    python scripts/render_notebooks.py                 # quick setting, all notebooks -> site/
    python scripts/render_notebooks.py --full          # the full-size runs (about an hour on 2 quiet CPU cores)
    python scripts/render_notebooks.py --only 00 03    # some notebooks (by name prefix)

Each notebook runs top to bottom in a fresh kernel, in ``notebooks/`` (as Jupyter runs it), with
the exercise solutions filled in (``FEDPFT_LITE_SOLUTIONS=1``: the stored exercise cells stay
blank, the checks print that they pass). Figures are embedded in the HTML, so ``site/`` is
self-contained; ``site/index.html`` lists the notebooks with their titles and run times. The
stored notebooks are never modified. A notebook that fails stops the command with its error
(nothing half-rendered is written for it).
"""
from __future__ import annotations

import argparse
import html
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def title_of(nb) -> str:
    """The first Markdown heading of the notebook (its title), else ''."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def render(path: Path, out: Path, timeout: int | None) -> tuple[str, float]:
    """Execute one notebook and write ``out/<stem>.html``; return (title, seconds)."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    start = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.time() - start
    body, _ = HTMLExporter().from_notebook_node(nb)
    (out / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return title_of(nb), seconds


def write_index(out: Path, rows: list[tuple[str, str, float]], quick: bool) -> None:
    setting = "quick setting (FEDPFT_LITE_QUICK=1)" if quick else "full setting"
    items = "\n".join(f'<li><a href="{html.escape(stem)}.html">{html.escape(stem)}</a>: '
                      f"{html.escape(title)} <small>({seconds:.0f} s)</small></li>"
                      for stem, title, seconds in rows)
    (out / "index.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>fedpft_lite notebooks</title>\n"
        f"<h1>fedpft_lite notebooks</h1>\n<p>Executed in the {setting} on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; run times on the machine that "
        f"rendered them.</p>\n<ol>\n{items}\n</ol>\n", encoding="utf-8")


def cell_timeout(requested: int | None, full: bool) -> int | None:
    """Seconds one cell may run (None: no limit). The full setting's federated cells run a quarter of
    an hour on 2 quiet CPU cores and over an hour on busy ones, so a fixed per-cell limit would kill
    them; quick cells finish in minutes, and a hung quick cell should fail the build, not hold it."""
    if requested is None:
        return None if full else 3600
    if requested < 0:
        raise SystemExit(f"--timeout {requested}: give seconds > 0, or 0 for no limit")
    return requested or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="site", help="folder for the HTML files (default: site/)")
    ap.add_argument("--full", action="store_true", help="run the full-size experiments, not the quick setting")
    ap.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 03")
    ap.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="folder of the .ipynb files")
    ap.add_argument("--timeout", type=int, default=None,
                    help="seconds one cell may run; 0 for no limit (default: 3600 quick, no limit with --full)")
    args = ap.parse_args(argv)
    timeout = cell_timeout(args.timeout, args.full)

    paths = sorted(Path(args.notebooks).glob("*.ipynb"))
    if args.only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in args.only)]
    if not paths:
        ap.error(f"no notebooks in {args.notebooks}" + (f" matching {args.only}" if args.only else ""))
    # the kernels inherit these: quick unless --full, exercise checks shown passing
    if args.full:
        os.environ.pop("FEDPFT_LITE_QUICK", None)
    else:
        os.environ["FEDPFT_LITE_QUICK"] = "1"
    os.environ.setdefault("FEDPFT_LITE_SOLUTIONS", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in paths:
        print(f"rendering {path.name} ...", flush=True)
        title, seconds = render(path, out, timeout)
        print(f"  -> {out / (path.stem + '.html')} ({seconds:.0f} s)", flush=True)
        rows.append((path.stem, title, seconds))
    write_index(out, rows, quick=not args.full)
    print(f"{len(rows)} notebooks rendered; open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
