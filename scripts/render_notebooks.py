"""Render the notebooks, executed, to a static course site a student can read without running anything.

    python scripts/render_notebooks.py                 # quick setting, all notebooks -> site/
    python scripts/render_notebooks.py --full          # the full-size runs (about an hour on 2 quiet CPU cores)
    python scripts/render_notebooks.py --only 00 03    # some notebooks (by name prefix)
    python scripts/render_notebooks.py --executed test-reports/fast.xml   # CI: nothing runs again

With ``--executed REPORT`` the notebooks are rendered as they are, already executed (CI runs the
README's test command with nbmake's ``--overwrite``, which stores each notebook's outputs in the
throw-away clone), and each one's run time is read from the JUnit report of that run; nothing is
executed a second time (this saved CI about 6 minutes on 2 cores). A notebook with a code cell
that did not run is refused.

Each notebook runs top to bottom in a fresh kernel, in ``notebooks/`` (as Jupyter runs it), with
the exercise solutions filled in (``FEDPFT_LITE_SOLUTIONS=1``: the stored exercise cells stay
blank, the checks print that they pass). The stored notebooks are never modified. A notebook that
fails stops the command with its error (nothing half-rendered is written for it).

The site (``site/``, open ``site/index.html``; it works offline, from a folder or any web server):

* ``index.html``: the course's home page, every rendered notebook with its title, run time and an
  "Open in Colab" badge;
* ``<notebook>.html``: one page per notebook, its figures embedded (base64 PNGs);
* ``instructor.html``: README.md's section "### For instructors: a course on these notebooks";
* ``mathjax/``: MathJax 2.7, copied from the ``jupyter-server-mathjax`` package, so the math
  renders without a network (nothing is loaded from a CDN).

Every page has the table of contents (the current page marked) and previous / next links, in the
order home, the notebooks, the instructor guide. The Colab badges open
``notebooks/<name>.ipynb`` of the repository and branch in ``course.toml`` (``--course``); the
look lives in ``scripts/site/`` (nbconvert templates and ``course.css``). With ``--only`` the site
holds just those notebooks.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE_FILES = Path(__file__).resolve().parent / "site"   # templates and CSS of the site
TEMPLATE = "course"                                     # scripts/site/templates/course/
MATHJAX_DIR = "mathjax"
# The jupyter-server-mathjax package ships MathJax 2.7 with this one combined configuration (TeX
# input, HTML-CSS output; the same TeX settings as nbconvert's own CDN default).
MATHJAX_URL = f"{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
GUIDE_HEADING = "### For instructors: a course on these notebooks"
GUIDE_PAGE = "instructor.html"
HOME_PAGE = "index.html"
COLAB = "https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/notebooks/{name}.ipynb"


# -- course.toml ----------------------------------------------------------------------------------

def load_course(path: Path | str = ROOT / "course.toml") -> dict:
    """The ``[course]`` table of ``course.toml``: title, repository (a git URL) and branch, with
    ``github`` = (owner, repo) when the repository is on GitHub (else None: no Colab badges)."""
    try:
        import tomllib
    except ModuleNotFoundError:                 # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such file; it sets the course's repository (see course.toml "
                         "at the repository root)")
    with open(path, "rb") as f:
        course = tomllib.load(f).get("course", {})
    repository, branch = course.get("repository"), course.get("branch", "main")
    for key, value in (("repository", repository), ("branch", branch)):
        if not isinstance(value, str) or not value or re.search(r"[\s\"'\\]", value):
            raise SystemExit(f"{path}: [course] {key} must be a non-empty string without spaces, "
                             f"quotes or backslashes, not {value!r}")
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", repository)
    return {"title": str(course.get("title", "fedpft_lite notebooks")), "repository": repository,
            "branch": branch, "github": match.groups() if match else None}


def colab_url(course: dict, name: str) -> str | None:
    """The "Open in Colab" link of ``notebooks/<name>.ipynb`` (None if the repository is not on GitHub)."""
    if course["github"] is None:
        return None
    owner, repo = course["github"]
    return COLAB.format(owner=owner, repo=repo, branch=course["branch"], name=name)


# -- pages and navigation -------------------------------------------------------------------------

def title_of(nb) -> str:
    """The first Markdown heading of the notebook (its title), else ''."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


#: A class session's limits on a notebook (issue 25): prose words, and lines of the longest code cell.
MAX_PROSE_WORDS = 2000
MAX_CODE_LINES = 40


def notebook_shape(path: Path | str) -> dict:
    """What an instructor plans with, counted from the stored notebook: ``cells``, ``words`` of
    prose (markdown cells, whitespace-separated) and ``longest`` code cell in lines. The README's
    instructor table states these; ``tests/test_render.py`` recounts them."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    prose = [c.source for c in nb.cells if c.cell_type == "markdown"]
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    return {"cells": len(nb.cells), "words": sum(len(s.split()) for s in prose),
            "longest": max((len(s.splitlines()) for s in code), default=0)}


def site_pages(notebooks: list[tuple[str, str]]) -> list[dict]:
    """Every page of the site in reading order (home, the notebooks, the instructor guide), each
    {href, title, kind}; ``notebooks`` is [(stem, title)]. Previous / next follow this order."""
    return ([{"href": HOME_PAGE, "title": "Home", "kind": "home"}]
            + [{"href": f"{stem}.html", "title": title or stem, "kind": "notebook", "stem": stem}
               for stem, title in notebooks]
            + [{"href": GUIDE_PAGE, "title": "Instructor guide", "kind": "guide"}])


def page_context(course: dict, pages: list[dict], href: str, **extra) -> dict:
    """What the templates get as ``course``: the site's pages, the current one and its neighbours."""
    i = [p["href"] for p in pages].index(href)
    return {"title": course["title"], "pages": pages, "current": href,
            "prev": pages[i - 1] if i > 0 else None,
            "next": pages[i + 1] if i + 1 < len(pages) else None,
            "css": (SITE_FILES / "course.css").read_text(encoding="utf-8"),
            "mathjax_url": MATHJAX_URL, **extra}


def exporter():
    from nbconvert import HTMLExporter
    return HTMLExporter(template_name=TEMPLATE, extra_template_basedirs=[str(SITE_FILES / "templates")],
                        mathjax_url=MATHJAX_URL, embed_images=True)


def page_environment():
    """Jinja for the pages that are not notebooks, on the same template folders as the notebook pages."""
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(exporter().template_paths),
                              autoescape=True, keep_trailing_newline=True)


def copy_mathjax(out: Path) -> None:
    """MathJax 2.7 from the jupyter-server-mathjax package into ``out/mathjax/`` (about 12 MB)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise SystemExit("the site ships MathJax from the jupyter-server-mathjax package: "
                         "pip install jupyter-server-mathjax (it is in the `notebooks` extra)") from None
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", out / MATHJAX_DIR,
                    dirs_exist_ok=True)


# -- the instructor guide, from README.md ---------------------------------------------------------

def readme_section(readme: Path, heading: str = GUIDE_HEADING) -> str:
    """The Markdown from ``heading`` (a line of README.md) to the next heading of level 1 to 3
    (headings inside fenced code do not count); the heading line itself is left out."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    try:
        start = [line.rstrip() for line in lines].index(heading)
    except ValueError:
        raise SystemExit(f"{readme}: no line {heading!r}; the site's instructor guide is that "
                         "section") from None
    body, fence = [], None
    for line in lines[start + 1:]:
        marker = re.match(r"\s*(```|~~~)", line)
        if marker and (fence is None or marker.group(1) == fence):
            fence = marker.group(1) if fence is None else None
        elif fence is None and re.match(r"#{1,3}\s", line):
            break
        body.append(line)
    return "\n".join(body).strip() + "\n"


def markdown_to_html(text: str, course: dict, stems: set[str]) -> str:
    """CommonMark + tables (markdown-it-py). Links relative to the repository root are made to work
    on the site: ``notebooks/<name>.ipynb`` goes to that page when it is rendered, anything else to
    the file in the course's repository (GitHub) or is left as written."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    blob = (f"https://github.com/{course['github'][0]}/{course['github'][1]}/blob/{course['branch']}/"
            if course["github"] else None)

    def fix(href: str) -> str:
        if re.match(r"[a-z][a-z0-9+.-]*:|//", href, re.I):    # absolute: leave it
            return href
        path, _, fragment = href.partition("#")
        page = re.fullmatch(r"(?:\./)?notebooks/([^/]+)\.ipynb", path)
        if page and page.group(1) in stems:
            return f"{page.group(1)}.html" + (f"#{fragment}" if fragment else "")
        if blob:
            return blob + (re.sub(r"^(\./)+", "", path) or "README.md") + (f"#{fragment}" if fragment else "")
        return href

    def walk(items):
        for token in items:
            if token.type == "link_open" and token.attrGet("href"):
                token.attrSet("href", fix(token.attrGet("href")))
            walk(token.children or [])

    walk(tokens)
    return md.renderer.render(tokens, md.options, {})


# -- rendering ------------------------------------------------------------------------------------

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_NOTE = ('<div class="course-widget">An interactive widget: open the notebook in Jupyter or Colab '
               'to use it.</div>')


def static_widgets(nb) -> None:
    """Make the executed notebook's ipywidgets outputs static (the site loads no widget manager):
    progress bars (what ``tqdm.auto`` draws in Jupyter) are removed, as a static page has nothing to
    show of them; any other widget (01's keep_ratio slider in the full setting) becomes a note that
    it needs a kernel. The widget state is dropped with them."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})

    def progress(model_id: str, seen: set) -> bool:
        if model_id in seen or model_id not in state:
            return False
        seen.add(model_id)
        model = state[model_id]
        if model.get("model_name") in ("FloatProgressModel", "IntProgressModel"):
            return True
        children = model.get("state", {}).get("children", [])
        return any(progress(str(c).removeprefix("IPY_MODEL_"), seen) for c in children)

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                if progress(view.get("model_id", ""), set()):
                    continue
                output.data = {"text/html": WIDGET_NOTE}
            outputs.append(output)
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)


def link_notebook_pages(html: str, stems: set[str]) -> str:
    """A notebook's links to its neighbours (``href="03_federated_rounds.ipynb#2-..."``, as they
    work in Jupyter and on GitHub) point at their pages on the site when those are rendered."""
    def page(m):
        return f'href="{m.group(1)}.html{m.group(2) or ""}"' if m.group(1) in stems else m.group(0)

    return re.sub(r'href="(?:\./)?([^"/:#]+)\.ipynb(#[^"]*)?"', page, html)


def junit_seconds(report: Path | str) -> dict[str, float]:
    """{notebook file name: seconds} of the nbmake test cases in a JUnit XML report (nbmake names
    each case after its notebook, e.g. ``00_primer.ipynb``)."""
    import xml.etree.ElementTree as ET

    report = Path(report)
    if not report.is_file():
        raise SystemExit(f"--executed {report}: no such file; give the JUnit report of the run that "
                         "executed the notebooks (pytest --nbmake --overwrite --junitxml=...)")
    return {case.get("name"): float(case.get("time", 0)) for case in ET.parse(report).iter("testcase")
            if str(case.get("name", "")).endswith(".ipynb")}


def unexecuted_cells(nb) -> int:
    """How many code cells (with code in them) have not run: no execution count."""
    return sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None)


def render(path: Path, out: Path, timeout: int | None, context: dict,
           seconds: float | None = None) -> tuple[str, float]:
    """Execute one notebook and write ``out/<stem>.html``; return (title, seconds). ``context``: the
    page's place in the site (``page_context``). With ``seconds`` (its run time, already executed
    elsewhere) the notebook is rendered as it is, not run."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if seconds is None:
        start = time.time()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.time() - start
    title = title_of(nb)
    static_widgets(nb)                                      # in memory only, like the title
    nb.metadata["title"] = title or path.stem               # the page's <title>
    body, _ = exporter().from_notebook_node(nb, resources={"course": context})
    body = link_notebook_pages(body, {p["stem"] for p in context["pages"] if p["kind"] == "notebook"})
    (out / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return title, seconds


def worker_pool(jobs: int):
    """Processes that run :func:`render_job`. They find it by this module's name, so a module
    loaded from its path (the tests do that) is registered under it first, and then the workers
    are forked (they inherit the registration; a fresh interpreter would not find it)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = None
    if __name__ != "__main__" and __name__ not in sys.modules:
        import types
        module = types.ModuleType(__name__)
        module.__dict__.update(globals())
        sys.modules[__name__] = module
        context = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context)


def render_job(path: Path, out: Path, timeout: int | None, context: dict) -> tuple[str, float]:
    """:func:`render` in a worker process; its error comes back as a plain ``RuntimeError`` with
    the notebook's name and the error's text (nbclient's own error types do not cross processes)."""
    try:
        return render(path, out, timeout, context)
    except Exception as e:
        raise RuntimeError(f"{path.name} failed: {type(e).__name__}: {e}") from None


def write_page(out: Path, env, context: dict, heading: str, body: str) -> None:
    from markupsafe import Markup
    page = env.get_template("page.html.j2").render(course=context, heading=heading, body=Markup(body))
    (out / context["current"]).write_text(page, encoding="utf-8")


def write_index(out: Path, env, context: dict, rows: list[tuple], quick: bool) -> None:
    """The home page; ``rows``: (stem, title, seconds, Colab link or None) of each notebook."""
    setting = "the quick setting (FEDPFT_LITE_QUICK=1)" if quick else "the full setting"
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    page = env.get_template("home.html.j2").render(course=context, heading=context["title"], rows=rows,
                                                   setting=setting, built=built)
    (out / HOME_PAGE).write_text(page, encoding="utf-8")


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
    import nbformat

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="site", help="folder for the site (default: site/)")
    ap.add_argument("--full", action="store_true", help="run the full-size experiments, not the quick setting")
    ap.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 00 03")
    ap.add_argument("--notebooks", default=str(ROOT / "notebooks"), help="folder of the .ipynb files")
    ap.add_argument("--timeout", type=int, default=None,
                    help="seconds one cell may run; 0 for no limit (default: 3600 quick, no limit with --full)")
    ap.add_argument("--course", default=str(ROOT / "course.toml"),
                    help="the course settings: title, repository and branch of the Colab badges "
                         "(default: course.toml at the repository root)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="notebooks rendered at once, each in its own kernel with one torch thread "
                         "(default: the CPU count, at most 4, in the quick setting; 1 with --full, "
                         "so that each notebook's printed run time is its own)")
    ap.add_argument("--executed", metavar="REPORT", default=None,
                    help="render the notebooks as they are, already executed (pytest --nbmake "
                         "--overwrite), with run times from this JUnit report; nothing runs again")
    ap.add_argument("--readme", default=str(ROOT / "README.md"),
                    help=f"where the instructor guide is read from (its section {GUIDE_HEADING!r})")
    args = ap.parse_args(argv)
    timeout = cell_timeout(args.timeout, args.full)

    paths = sorted(Path(args.notebooks).glob("*.ipynb"))
    if args.only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in args.only)]
    if not paths:
        ap.error(f"no notebooks in {args.notebooks}" + (f" matching {args.only}" if args.only else ""))
    # Everything that can fail without running a notebook fails first, before an hour of --full.
    course = load_course(args.course)
    if course["github"] is None:
        print(f"note: {args.course}: repository {course['repository']} is not on GitHub, so the "
              "pages get no Colab badge", flush=True)
    executed = None
    if args.executed:
        if args.full:
            ap.error("--executed renders notebooks that already ran; it takes no --full")
        times = junit_seconds(args.executed)
        executed = {}
        for p in paths:
            if p.name not in times:
                ap.error(f"--executed {args.executed}: no test case for {p.name}; did that run include it?")
            missing = unexecuted_cells(nbformat.read(p, as_version=4))
            if missing:
                ap.error(f"{p}: {missing} code cell(s) never ran; execute it first (pytest --nbmake "
                         "--overwrite) or leave out --executed to run it here")
            executed[p] = times[p.name]
    titles = [(p.stem, title_of(nbformat.read(p, as_version=4))) for p in paths]
    pages = site_pages(titles)
    guide = markdown_to_html(readme_section(Path(args.readme)), course, {stem for stem, _ in titles})
    env = page_environment()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    # the kernels inherit these: quick unless --full, exercise checks shown passing
    if args.full:
        os.environ.pop("FEDPFT_LITE_QUICK", None)
    else:
        os.environ["FEDPFT_LITE_QUICK"] = "1"
    os.environ.setdefault("FEDPFT_LITE_SOLUTIONS", "1")
    jobs = args.jobs or (1 if args.full else min(os.cpu_count() or 1, 4))
    if jobs < 1:
        ap.error(f"--jobs {jobs}: give 1 or more")
    if jobs > 1:   # several kernels on few cores: one thread each (two with 2 threads slowed 10-15x)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    contexts = {p: page_context(course, pages, f"{p.stem}.html", colab=colab_url(course, p.stem)) for p in paths}
    jobs = 1 if executed else min(jobs, len(paths))
    print(f"rendering {len(paths)} notebook(s), "
          + ("as executed, nothing runs again" if executed else f"{jobs} at a time") + " ...", flush=True)
    rows = []
    if jobs == 1:
        results = (render(p, out, timeout, contexts[p], executed and executed[p]) for p in paths)
        pool = None
    else:
        pool = worker_pool(jobs)
        futures = [pool.submit(render_job, p, out, timeout, contexts[p]) for p in paths]
        results = (f.result() for f in futures)
    try:
        for path, (title, seconds) in zip(paths, results):   # in order; the first failure stops it
            print(f"  -> {out / (path.stem + '.html')} ({seconds:.0f} s)", flush=True)
            rows.append((path.stem, title, seconds, colab_url(course, path.stem)))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)   # on a failure: no new notebook starts
    write_page(out, env, page_context(course, pages, GUIDE_PAGE), GUIDE_HEADING.lstrip("#").strip(), guide)
    write_index(out, env, page_context(course, pages, HOME_PAGE), rows, quick=not args.full)
    print(f"{len(rows)} notebooks rendered; open {out / HOME_PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
