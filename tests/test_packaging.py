"""The committed results ship in the wheel (setup.py): a non-editable install (`pip install .`,
Colab) finds them through fedpft_lite.results like a checkout does. Builds the wheel once (about
15 s, no dependencies, no network: --no-build-isolation uses this environment's setuptools) and
lists its files."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results"


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("fedpft_lite-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def shipped(wheel_files) -> set[str]:
    """The wheel's results files, as paths relative to data/results."""
    (prefix,) = {n[:n.index("/share/fedpft_lite/results/") + len("/share/fedpft_lite/results/")]
                 for n in wheel_files if "/share/fedpft_lite/results/" in n}
    return {n[len(prefix):] for n in wheel_files if n.startswith(prefix)}


@pytest.mark.slow
def test_the_wheel_holds_every_committed_summary_meta_and_probe(wheel_files):
    expected = {p.relative_to(RESULTS).as_posix() for pattern in
                ("probe_*.json", "reproduce/lite/*/summary.csv", "reproduce/lite/*/meta.json",
                 "archive/*/lite/*/summary.csv", "archive/*/lite/*/meta.json")
                for p in RESULTS.glob(pattern)}
    assert any(e.startswith("probe_") for e in expected), "no probe_*.json in data/results"
    assert expected <= shipped(wheel_files), f"missing from the wheel: {sorted(expected - shipped(wheel_files))}"


@pytest.mark.slow
def test_the_wheel_ships_no_run_folders_and_the_package_itself(wheel_files):
    assert not [f for f in shipped(wheel_files) if "/runs/" in f or f.startswith("reproduce/runs")]
    assert "fedpft_lite/results.py" in wheel_files and "fedpft_lite/paper_results.csv" in wheel_files
    assert "setup.py" not in wheel_files


def test_results_root_is_the_checkout_here():
    from fedpft_lite.results import COMMITTED_ROOT, results_root
    assert results_root() == RESULTS and COMMITTED_ROOT == RESULTS / "reproduce"
