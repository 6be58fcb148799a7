"""Ships the committed results with the package: ``data/results`` of the repository stays the one
source of truth, and every build (``pip install .``, ``pip wheel .``, ``pip install git+...``, as on
Colab) copies its small files into the wheel as data files, installed under
``<prefix>/share/fedpft_lite/results/`` with the same layout:

    reproduce/lite/<experiment>/{summary.csv, meta.json}           the committed lite results
    archive/<name>/lite/<experiment>/{summary.csv, meta.json}      archived older results
    probe_*.json                                                   frozen-FM linear-probe baselines

Why data files computed here and not the alternatives: package-data would need the CSVs inside
``fedpft_lite/`` (a second copy that drifts, or a symlink that breaks on Windows and in sdists);
``[tool.setuptools.data-files]`` in pyproject.toml takes one fixed target folder per key, so every
experiment would be listed by hand and a new one silently left out. Here the list is the folders
that exist at build time. An editable install (``pip install -e .``) gets the same copies, but
``fedpft_lite.results`` prefers the checkout's ``data/results`` next to the package, so edits there
are seen at once. The per-run folders (``reproduce/runs/``: every run's history and results.json) stay out.
Everything else (metadata, packages, package-data) is in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
RESULTS = Path("data") / "results"
TARGET = Path("share") / "fedpft_lite" / "results"


def results_data_files() -> list[tuple[str, list[str]]]:
    groups: dict[Path, list[str]] = {}
    patterns = ["probe_*.json", "reproduce/lite/*/summary.csv", "reproduce/lite/*/meta.json",
                "archive/*/lite/*/summary.csv", "archive/*/lite/*/meta.json"]
    for pattern in patterns:
        for f in sorted((HERE / RESULTS).glob(pattern)):
            rel = f.relative_to(HERE / RESULTS)
            groups.setdefault(TARGET / rel.parent, []).append((RESULTS / rel).as_posix())
    return [(d.as_posix(), files) for d, files in sorted(groups.items())]


setup(data_files=results_data_files())
