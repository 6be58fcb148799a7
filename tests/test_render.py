"""scripts/render_notebooks.py: executed notebooks become self-contained HTML (figures embedded)."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "render_notebooks.py"


@pytest.fixture(scope="module")
def render_module():
    spec = importlib.util.spec_from_file_location("render_notebooks", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _notebook(folder: Path, name: str, code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name} title\n\nsome text"),
                nbformat.v4.new_code_cell(code)]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


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
    assert stored.read_text() == before                                 # the stored notebook untouched


def test_a_failing_notebook_stops_the_render(render_module, tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    _notebook(src, "00_broken", "raise ValueError('broken on purpose')")
    with pytest.raises(Exception, match="broken on purpose"):
        render_module.main(["--notebooks", str(src), "--out", str(tmp_path / "site"), "--timeout", "120"])
    assert not (tmp_path / "site" / "00_broken.html").exists()


def test_the_full_setting_has_no_cell_time_limit_unless_asked(render_module):
    # A full-setting run of notebook 03 has one cell of over an hour on 2 cores: 3600 s killed it.
    assert render_module.cell_timeout(None, full=True) is None
    assert render_module.cell_timeout(None, full=False) == 3600
    assert render_module.cell_timeout(7200, full=True) == 7200
    assert render_module.cell_timeout(0, full=False) is None
    with pytest.raises(SystemExit, match="--timeout -5"):
        render_module.cell_timeout(-5, full=True)
