"""scripts/render_notebooks.py: executed notebooks become a course site (self-contained pages with
figures embedded, navigation, Colab badges from course.toml, math from the site's own MathJax, the
README's instructor guide); scripts/set_course_repo.py keeps the notebooks' Colab install on the
repository in course.toml. The same site in a real browser: tests/test_site.py."""
import difflib
import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "render_notebooks.py"
SET_REPO = ROOT / "scripts" / "set_course_repo.py"
COURSE = """[course]
title = "A test course"
repository = "https://github.com/some-school/fedpft-course"
branch = "fall"
"""


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def render_module():
    return _load(SCRIPT, "render_notebooks")


@pytest.fixture(scope="module")
def set_repo_module():
    return _load(SET_REPO, "set_course_repo")


def _notebook(folder: Path, name: str, code: str, text: str = "some text", codes=()) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = ([nbformat.v4.new_markdown_cell(f"# {name} title\n\n{text}"), nbformat.v4.new_code_cell(code)]
                + [nbformat.v4.new_code_cell(c) for c in codes])
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


class Page(HTMLParser):
    """What the tests read from a page: links (with the nav they sit in), scripts, styles, images."""

    def __init__(self, path: Path):
        super().__init__()
        self.links, self.scripts, self.stylesheets, self.images, self.nav = [], [], [], [], []
        self.text = path.read_text(encoding="utf-8")
        self.feed(self.text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "nav":
            self.nav.append(attrs.get("class", ""))
        elif tag == "a" and "href" in attrs:
            self.links.append({**attrs, "nav": self.nav[-1] if self.nav else None})
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.stylesheets.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "nav" and self.nav:
            self.nav.pop()

    def in_nav(self, nav_class: str) -> list[dict]:
        return [a for a in self.links if a["nav"] and nav_class in a["nav"]]


def test_rendered_notebooks_embed_their_outputs_and_figures(render_module, tmp_path):
    src, out = tmp_path / "nb", tmp_path / "site"
    src.mkdir()
    stored = _notebook(src, "00_demo", "%matplotlib inline\nimport os, matplotlib.pyplot as plt\n"
                       "print('quick is', os.environ.get('FEDPFT_LITE_QUICK'))\n"
                       "plt.plot([0, 1], [0, 1]); plt.show()")
    _notebook(src, "01_other", "print('other')")
    before = stored.read_text()
    assert render_module.main(["--notebooks", str(src), "--out", str(out), "--only", "00", "--timeout", "120"]) == 0
    page = (out / "00_demo.html").read_text()
    assert "quick is 1" in page and "data:image/png;base64" in page   # output and figure inline
    assert not (out / "01_other.html").exists()                        # --only
    index = (out / "index.html").read_text()
    assert 'href="00_demo.html"' in index and "00_demo title" in index
    assert 'href="01_other.html"' not in index                         # the site is what was rendered
    assert stored.read_text() == before                                 # the stored notebook untouched


def test_a_failing_notebook_stops_the_render(render_module, tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    _notebook(src, "00_broken", "raise ValueError('broken on purpose')")
    with pytest.raises(Exception, match="broken on purpose"):
        render_module.main(["--notebooks", str(src), "--out", str(tmp_path / "site"), "--timeout", "120"])
    assert not (tmp_path / "site" / "00_broken.html").exists()
    assert not (tmp_path / "site" / "index.html").exists()


def test_notebooks_render_side_by_side_with_one_thread_each_and_a_failure_still_stops_it(render_module, tmp_path):
    """--jobs 2: two kernels at once (each sees OMP_NUM_THREADS=1), pages and index as with one; a
    failing notebook among them stops the build with its name and error, and writes no index."""
    src, out = tmp_path / "nb", tmp_path / "site"
    src.mkdir()
    for name in ("00_a", "01_b"):
        _notebook(src, name, "import os\nprint('threads', os.environ.get('OMP_NUM_THREADS'))")
    assert render_module.main(["--notebooks", str(src), "--out", str(out), "--jobs", "2", "--timeout", "120"]) == 0
    for name in ("00_a", "01_b"):
        assert "threads 1" in (out / f"{name}.html").read_text()
    assert 'href="01_b.html"' in (out / "index.html").read_text()
    _notebook(src, "02_broken", "raise ValueError('broken on purpose')")
    with pytest.raises(RuntimeError, match="(?s)02_broken.ipynb failed: .*broken on purpose"):
        render_module.main(["--notebooks", str(src), "--out", str(tmp_path / "site2"), "--jobs", "2",
                            "--timeout", "120"])
    assert not (tmp_path / "site2" / "index.html").exists()


def test_notebooks_executed_by_nbmake_are_rendered_as_they_are_with_the_reports_times(render_module, tmp_path, capsys):
    """--executed: what CI does. nbmake --overwrite stores the outputs; the site shows those outputs
    (the notebook is not run again: its file-writing cell does not run twice) and the run time from
    the JUnit report; a notebook with a cell that never ran, or missing from the report, is refused."""
    import subprocess
    import sys
    src, out = tmp_path / "nb", tmp_path / "site"
    src.mkdir()
    _notebook(src, "00_ran", "import pathlib\nn = len(list(pathlib.Path('.').glob('ran-*')))\n"
              "pathlib.Path(f'ran-{n}').touch()\nprint('runs before this one:', n)")
    report = tmp_path / "nb.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", "--overwrite",
                    f"--junitxml={report}", "-o", "addopts=", str(src)], cwd=tmp_path, check=True)
    assert render_module.main(["--notebooks", str(src), "--out", str(out), "--executed", str(report)]) == 0
    assert "runs before this one: 0" in (out / "00_ran.html").read_text()
    assert sorted(p.name for p in src.glob("ran-*")) == ["ran-0"]          # executed once, by nbmake
    seconds = render_module.junit_seconds(report)["00_ran.ipynb"]
    assert f"<td>{seconds:.0f} s</td>" in (out / "index.html").read_text()
    _notebook(src, "01_never_ran", "print('hello')")
    with pytest.raises(SystemExit):
        render_module.main(["--notebooks", str(src), "--out", str(tmp_path / "s2"), "--executed", str(report)])
    assert "no test case for 01_never_ran.ipynb" in capsys.readouterr().err
    listed = tmp_path / "listed.xml"        # in the report, but its cell has no output: refused too
    listed.write_text(report.read_text().replace("00_ran.ipynb", "01_never_ran.ipynb"))
    with pytest.raises(SystemExit):
        render_module.main(["--notebooks", str(src), "--out", str(tmp_path / "s3"), "--only", "01",
                            "--executed", str(listed)])
    assert "1 code cell(s) never ran" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="missing.xml: no such file"):
        render_module.main(["--notebooks", str(src), "--out", str(tmp_path / "s4"), "--only", "00",
                            "--executed", str(tmp_path / "missing.xml")])
    assert not any((tmp_path / d).exists() for d in ("s2", "s3", "s4"))   # refused before writing


def test_the_full_setting_has_no_cell_time_limit_unless_asked(render_module):
    # A full-setting run of notebook 03 has one cell of over an hour on 2 cores: 3600 s killed it.
    assert render_module.cell_timeout(None, full=True) is None
    assert render_module.cell_timeout(None, full=False) == 3600
    assert render_module.cell_timeout(7200, full=True) == 7200
    assert render_module.cell_timeout(0, full=False) is None
    with pytest.raises(SystemExit, match="--timeout -5"):
        render_module.cell_timeout(-5, full=True)


# -- the course site ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course_site(render_module, tmp_path_factory):
    """Two small notebooks rendered with a course.toml of another repository and branch."""
    tmp = tmp_path_factory.mktemp("course")
    src, out = tmp / "nb", tmp / "site"
    src.mkdir()
    (tmp / "course.toml").write_text(COURSE)
    _notebook(src, "00_demo", "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([0, 1]); plt.show()",
              text="LoRA adds $\\frac{\\alpha}{r}BA$ to $W$:\n\n$$W' = W + \\frac{\\alpha}{r}BA$$",
              codes=["import ipywidgets as W\nW.IntSlider(3)",                  # a live widget
                     "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)): pass"])  # a progress bar
    _notebook(src, "01_other", "print('other')")
    assert render_module.main(["--notebooks", str(src), "--out", str(out), "--course", str(tmp / "course.toml"),
                               "--timeout", "120"]) == 0
    return out


ORDER = ["index.html", "00_demo.html", "01_other.html", "instructor.html"]


def test_every_page_has_the_contents_with_itself_marked_and_previous_next_in_order(course_site):
    assert sorted(p.name for p in course_site.glob("*.html")) == sorted(ORDER)
    for i, name in enumerate(ORDER):
        page = Page(course_site / name)
        toc = page.in_nav("course-toc")
        assert [a["href"] for a in toc][1:] == ORDER, name      # the site title, then every page in order
        assert [a["href"] for a in toc if a.get("aria-current") == "page"] == [name]
        pager = {a["rel"]: a["href"] for a in page.in_nav("course-pager")}
        assert pager == ({"prev": ORDER[i - 1]} if i else {}) | ({"next": ORDER[i + 1]} if i + 1 < len(ORDER) else {})
        for a in page.links:                                  # every link inside the site has its page
            href = a["href"].split("#")[0]
            if href and not re.match(r"[a-z]+:", href):
                assert (course_site / href).is_file(), f"{name} links to {href}, which is not there"
    index = Page(course_site / "index.html").text
    assert index.index("00_demo title") < index.index("01_other title")


def test_the_colab_badge_opens_the_notebook_in_course_toml_s_repository(course_site):
    for stem in ("00_demo", "01_other"):
        badges = [a["href"] for a in Page(course_site / f"{stem}.html").links if a.get("class") == "colab-badge"]
        assert badges == [f"https://colab.research.google.com/github/some-school/fedpft-course/blob/fall/notebooks/{stem}.ipynb"]
    index_badges = [a["href"] for a in Page(course_site / "index.html").links if a.get("class") == "colab-badge"]
    assert [h.rsplit("/", 1)[1] for h in index_badges] == ["00_demo.ipynb", "01_other.ipynb"]
    assert not [a for a in Page(course_site / "instructor.html").links if a.get("class") == "colab-badge"]
    assert "A test course" in Page(course_site / "index.html").text


def test_the_repository_setting_is_read_from_course_toml(render_module, tmp_path):
    course = render_module.load_course(ROOT / "course.toml")
    owner, repo = course["github"]
    assert render_module.colab_url(course, "00_primer") == (
        f"https://colab.research.google.com/github/{owner}/{repo}/blob/{course['branch']}/notebooks/00_primer.ipynb")
    (tmp_path / "gitlab.toml").write_text('[course]\nrepository = "https://gitlab.com/a/b"\n')
    assert render_module.colab_url(render_module.load_course(tmp_path / "gitlab.toml"), "00_primer") is None
    (tmp_path / "dotgit.toml").write_text('[course]\nrepository = "https://github.com/a/b.git"\nbranch = "x"\n')
    assert render_module.colab_url(render_module.load_course(tmp_path / "dotgit.toml"), "n") == \
        "https://colab.research.google.com/github/a/b/blob/x/notebooks/n.ipynb"
    (tmp_path / "bad.toml").write_text('[course]\nrepository = "https://github.com/a b"\n')
    with pytest.raises(SystemExit, match="repository"):
        render_module.load_course(tmp_path / "bad.toml")
    with pytest.raises(SystemExit, match="no such file"):
        render_module.load_course(tmp_path / "missing.toml")


def test_the_site_loads_nothing_from_a_network(course_site):
    """Math from the site's own MathJax, no CDN script, stylesheet or image on any page."""
    for name in ORDER:
        page = Page(course_site / name)
        for url in page.scripts + page.stylesheets + page.images:
            assert not re.match(r"(https?:)?//", url), f"{name} loads {url}"
        assert [s for s in page.scripts if s.startswith("mathjax/MathJax.js?")], name
    assert (course_site / "mathjax" / "MathJax.js").is_file()
    # the configuration and the one web font the pages ask for (offline_mathjax.html.j2)
    assert (course_site / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert (course_site / "mathjax" / "jax" / "output" / "HTML-CSS" / "fonts" / "STIX-Web" / "fontdata.js").is_file()
    page = Page(course_site / "00_demo.html")
    assert "data:image/png;base64" in page.text and "\\frac{\\alpha}{r}BA" in page.text   # TeX left for MathJax


def test_widgets_on_a_static_page(course_site):
    page = Page(course_site / "00_demo.html").text
    assert page.count("An interactive widget") == 1          # the slider; the progress bar is dropped
    assert "it/s" not in page and "FloatProgress" not in page and "widget-state" not in page


def test_the_instructor_guide_is_the_readme_section(course_site):
    page = Page(course_site / "instructor.html").text
    assert "<h1>For instructors: a course on these notebooks</h1>" in page
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### For instructors: a course on these notebooks", 1)[1]
    first_words = " ".join(section.split()[:6])
    assert first_words in re.sub(r"\s+", " ", page)
    assert "<table>" in page and "<td>00 primer</td>" in page  # its table, rendered
    following = re.search(r"^#{2,3} (.+)$", section, re.M).group(1)
    assert following not in page                                # stops at the next heading


def test_the_readme_section_ends_at_the_next_heading_outside_code(render_module, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\n## A\n\n### For instructors: a course on these notebooks\n\nSee "
                      "[00](notebooks/00_demo.ipynb), [code](fedpft_lite/federated.py) and [x](#limits).\n\n"
                      "```bash\n## not a heading\n```\n\n#### a sub-heading\n\ntext\n\n## Next\n\nnot in it\n")
    text = render_module.readme_section(readme)
    assert "## not a heading" in text and "a sub-heading" in text and "not in it" not in text
    course = render_module.load_course(ROOT / "course.toml")
    owner, repo = course["github"]
    html = render_module.markdown_to_html(text, course, {"00_demo"})
    assert 'href="00_demo.html"' in html
    assert f'href="https://github.com/{owner}/{repo}/blob/{course["branch"]}/fedpft_lite/federated.py"' in html
    assert f'href="https://github.com/{owner}/{repo}/blob/{course["branch"]}/README.md#limits"' in html
    readme.write_text("# T\n\n## Other\n")
    with pytest.raises(SystemExit, match="For instructors"):
        render_module.readme_section(readme)


# -- the notebooks' Colab install (scripts/set_course_repo.py) ------------------------------------

def test_every_notebook_installs_from_the_repository_in_course_toml(set_repo_module):
    repository = set_repo_module.load_course(ROOT / "course.toml")["repository"]
    problems = set_repo_module.mismatches(ROOT / "notebooks", repository)
    assert not problems, ("the notebooks' REPO line disagrees with course.toml; run "
                          "`python scripts/set_course_repo.py`:\n" + "\n".join(problems))


def test_set_course_repo_rewrites_that_one_line_only(set_repo_module, tmp_path, committed):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb"))[:2]:
        (folder / path.name).write_text(committed(path), encoding="utf-8")
    (tmp_path / "course.toml").write_text(COURSE)
    before = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.ipynb")}
    assert set_repo_module.main(["--course", str(tmp_path / "course.toml"), "--notebooks", str(folder)]) == 0
    for name, text in before.items():
        after = (folder / name).read_text(encoding="utf-8")
        changed = [line for line in difflib.ndiff(text.splitlines(), after.splitlines()) if line[:1] in "+-"]
        assert len(changed) == 2 and changed[0].lstrip("- ").startswith('"REPO = ')
        assert changed[1] == '+     "REPO = \\"https://github.com/some-school/fedpft-course\\"   ' \
                             '# where your course keeps this repository\\n",'
        nb = nbformat.reads(after, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert set_repo_module.main(["--check", "--course", str(tmp_path / "course.toml"), "--notebooks", str(folder)]) == 0
    assert set_repo_module.main(["--check", "--course", str(ROOT / "course.toml"), "--notebooks", str(folder)]) == 1


def test_the_instructor_table_states_each_notebooks_shape_and_the_limits_hold(render_module):
    """The README's instructor table: one row per notebook, whose cells, prose words and longest code
    cell are the stored notebook's (recounted here), each within a class session's limits."""
    guide = render_module.readme_section(ROOT / "README.md")
    rows = {}
    for line in guide.splitlines():
        m = re.match(r"\| (\d\d) [^|]+\| (\d+) \| ([\d,]+) \| (\d+) \|", line)
        if m:
            rows[m[1]] = tuple(int(x.replace(",", "")) for x in m.groups()[1:])
    stored = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(rows) == [p.name[:2] for p in stored]
    for path in stored:
        shape = render_module.notebook_shape(path)
        assert rows[path.name[:2]] == (shape["cells"], shape["words"], shape["longest"]), path.name
        assert shape["words"] <= render_module.MAX_PROSE_WORDS, path.name
        assert shape["longest"] <= render_module.MAX_CODE_LINES, path.name


def test_links_between_notebooks_go_to_their_pages(render_module):
    html = ('<a href="03_federated_rounds.ipynb#2-%C2%B7-Client-sampling">03</a> <a href="./00_primer.ipynb">00</a> '
            '<a href="99_elsewhere.ipynb">99</a> <a href="https://x.org/03_federated_rounds.ipynb">abs</a>')
    out = render_module.link_notebook_pages(html, {"00_primer", "03_federated_rounds"})
    assert 'href="03_federated_rounds.html#2-%C2%B7-Client-sampling"' in out
    assert 'href="00_primer.html"' in out
    assert 'href="99_elsewhere.ipynb"' in out                       # not on the site: left as written
    assert 'href="https://x.org/03_federated_rounds.ipynb"' in out   # absolute: left as written
