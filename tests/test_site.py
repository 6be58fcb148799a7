"""The rendered course site in a real headless browser (Debian's chromium, driven by selenium).

    pytest tests/test_site.py -m site -n 0                          # builds a small site (notebook 00)
    FEDPFT_LITE_SITE=site pytest tests/test_site.py -m site -n 0    # the site CI just built

The site is served over http on localhost and crawled from index.html. Every page must load with
nothing requested outside the site and no failed request or console error; every image must decode;
no math may be left as raw TeX once MathJax has run, and a page with math must have MathJax's
rendered elements; every internal link (contents, previous / next) must reach a page; each notebook
page's Colab badge must open that notebook in course.toml's repository and branch.

Needs `apt-get install -y chromium chromium-driver` and selenium (the `test` extra). Without them the
test fails when CI is set, and is skipped otherwise.
"""
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[1]
APT = "apt-get install -y chromium chromium-driver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]
# TeX that MathJax should have turned into math: display / inline delimiters, $...$, a TeX command.
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\[A-Za-z]{2,}|(?<![\w$\\])\$[^$\s](?:[^$\n]*?[^$\s\\])?\$(?![\w$])")


def _missing(what: str):
    message = f"{what}: `{APT}` (Debian's chromium and its driver) and `pip install selenium` (the test extra)"
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run here, and CI may not skip it: {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium():
    """(chromium, chromedriver) paths; selenium importable."""
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    driver = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
    if not browser or not driver:
        _missing("no chromium or chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("no selenium")
    return browser, driver


@pytest.fixture(scope="module")
def site(chromium, tmp_path_factory):
    """FEDPFT_LITE_SITE (a built site), else a site of notebook 00 built here."""
    folder = os.environ.get("FEDPFT_LITE_SITE")
    if folder:
        path = Path(folder).resolve()
        if not (path / "index.html").is_file():
            pytest.fail(f"FEDPFT_LITE_SITE={folder}: no index.html there; build the site first: "
                        f"python scripts/render_notebooks.py --out {folder}")
        return path
    spec = importlib.util.spec_from_file_location("render_notebooks", ROOT / "scripts" / "render_notebooks.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    out = tmp_path_factory.mktemp("site")
    assert render.main(["--out", str(out), "--only", "00"]) == 0
    return out


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromium[1]), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(180)
    yield driver
    driver.quit()


def expected_colab(stem: str) -> str:
    """The Colab link of notebooks/<stem>.ipynb, from course.toml (read here, not by the site's code)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    course = tomllib.loads((ROOT / "course.toml").read_text(encoding="utf-8"))["course"]
    owner, repo = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", course["repository"]).groups()
    return (f"https://colab.research.google.com/github/{owner}/{repo}/blob/{course.get('branch', 'main')}"
            f"/notebooks/{stem}.ipynb")


class ProseText(HTMLParser):
    """A page's text outside code, scripts and styles: where Markdown math sits before MathJax runs."""
    SKIP = {"script", "style", "pre", "code", "textarea"}

    def __init__(self, html: str):
        super().__init__()
        self.depth, self.parts = 0, []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.depth += tag in self.SKIP

    def handle_endtag(self, tag):
        self.depth -= tag in self.SKIP and self.depth > 0

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


# Runs in the page once MathJax is done: what the assertions need.
INSPECT = """
const skip = new Set(["SCRIPT", "STYLE", "PRE", "CODE", "TEXTAREA", "NOSCRIPT"]);
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const prose = [];
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  let e = node.parentElement, keep = true;
  for (; e; e = e.parentElement) if (skip.has(e.tagName)) { keep = false; break; }
  if (keep) prose.push(node.nodeValue);
}
const toc = document.querySelector("nav.course-toc");
return {
  prose: prose.join(" "),
  images: Array.from(document.images).map(i => ({src: i.src.slice(0, 64), ok: i.complete && i.naturalWidth > 0})),
  links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
  toc: toc ? Array.from(toc.querySelectorAll("a")).map(a => a.href) : null,
  tocVisible: !!(toc && toc.getBoundingClientRect().width > 0),
  current: toc ? Array.from(toc.querySelectorAll("a[aria-current=page]")).map(a => a.href) : [],
  prev: (document.querySelector("a[rel=prev]") || {}).href || null,
  next: (document.querySelector("a[rel=next]") || {}).href || null,
  colab: Array.from(document.querySelectorAll("a.colab-badge")).map(a => a.href),
  mathRendered: document.querySelectorAll(".MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_CHTML").length,
  mathSources: document.querySelectorAll("script[type^='math/tex']").length,
  mathErrors: document.querySelectorAll(".MathJax_Error, .merror, .noError").length,
};
"""
MATHJAX_DONE = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !window.MathJax.Hub) { done("MathJax did not load"); return; }
MathJax.Hub.Register.StartupHook("End", function () { MathJax.Hub.Queue(function () { done("ok"); }); });
"""


def _network(driver, origin: str) -> list[str]:
    """Requests of the site's pages that left the site, failed, or got an HTTP error, from chromium's
    performance log (the browser's own chrome:// pages, e.g. its new tab, are not the site's)."""
    problems, ours = [], set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            if not params.get("documentURL", "").startswith(origin):
                continue
            ours.add(params["requestId"])
            url = params["request"]["url"]
            if not url.startswith((origin, "data:", "blob:", "about:")):
                problems.append(f"requested {url[:120]}")
        elif params.get("requestId") not in ours:
            continue
        elif message["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(f"HTTP {params['response']['status']} for {params['response']['url'][:120]}")
        elif message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"a request failed: {params.get('errorText')}")
    return problems


def test_the_site_in_a_browser(site, server, browser):
    origin = server
    queue, seen, problems = ["index.html"], [], []
    notebook_pages, math_pages, images = [], [], 0
    exists = {}

    def page_exists(path: str) -> bool:
        if path not in exists:
            try:
                with urllib.request.urlopen(origin + path, timeout=30) as response:
                    exists[path] = response.status == 200
            except urllib.error.HTTPError:
                exists[path] = False
        return exists[path]

    browser.get("about:blank")
    browser.get_log("performance")
    browser.get_log("browser")
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.append(name)
        browser.get(origin + name)
        mathjax = browser.execute_async_script(MATHJAX_DONE)
        if mathjax != "ok":
            problems.append(f"{name}: {mathjax}")
        info = browser.execute_script(INSPECT)
        problems += [f"{name}: {p}" for p in _network(browser, origin)]
        problems += [f"{name}: console: {e['message'][:200]}" for e in browser.get_log("browser")
                     if e["level"] == "SEVERE"]

        # every image decodes (the figures are embedded PNGs)
        images += len(info["images"])
        problems += [f"{name}: image does not decode: {i['src']}" for i in info["images"] if not i["ok"]]

        # no raw TeX left; math rendered where the page has math
        raw = RAW_TEX.findall(info["prose"])
        if raw:
            problems.append(f"{name}: raw TeX left after MathJax: {raw[:5]}")
        source = urllib.request.urlopen(origin + name, timeout=30).read().decode("utf-8")
        if RAW_TEX.search(" ".join(ProseText(source).parts)):
            math_pages.append(name)
            if not (info["mathRendered"] and info["mathSources"]):
                problems.append(f"{name}: has math, but MathJax rendered none")
        if info["mathErrors"]:
            problems.append(f"{name}: {info['mathErrors']} MathJax errors")

        # navigation: the contents on every page, this page marked; internal links reach pages
        if not info["toc"] or not info["tocVisible"]:
            problems.append(f"{name}: no visible table of contents")
        elif info["current"] != [origin + name]:
            problems.append(f"{name}: the contents mark {info['current']} as the current page")
        for href in info["links"]:
            if not href.startswith(origin):
                continue
            path = href[len(origin):].split("#")[0].split("?")[0]
            if not page_exists(path):
                problems.append(f"{name}: link to {path}, which is not there")
            elif path.endswith(".html") and path not in seen:
                queue.append(path)
        toc = [h[len(origin):] for h in info["toc"] or []]
        pages = list(dict.fromkeys(toc[1:]))    # the site title links home, then every page in order
        if name in pages:
            i = pages.index(name)
            want_prev = origin + pages[i - 1] if i else None
            want_next = origin + pages[i + 1] if i + 1 < len(pages) else None
            if (info["prev"], info["next"]) != (want_prev, want_next):
                problems.append(f"{name}: previous / next are {info['prev']} / {info['next']}, "
                                f"the contents say {want_prev} / {want_next}")

        # a notebook page: one Colab badge, to this notebook in course.toml's repository
        stem = name[:-len(".html")]
        if (ROOT / "notebooks" / f"{stem}.ipynb").is_file():
            notebook_pages.append(stem)
            if info["colab"] != [expected_colab(stem)]:
                problems.append(f"{name}: Colab badge {info['colab']}, course.toml says {expected_colab(stem)}")

    assert not problems, "\n".join(problems)
    assert "index.html" in seen and "instructor.html" in seen, seen
    assert notebook_pages, f"no notebook page reachable from index.html: {seen}"
    assert images, "no figure on any page"
    assert math_pages, "no page with math: the math check checked nothing"
    if os.environ.get("FEDPFT_LITE_SITE"):
        every = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
        assert sorted(notebook_pages) == every, f"the site has {sorted(notebook_pages)}, the repository {every}"
