"""Test-wide settings (root conftest, so `pytest --nbmake notebooks/` alone gets them too): the quick setting on, exercise solutions filled in, caches out of the home folder, no hub traffic.

``pytest --nbmake notebooks/`` starts notebook kernels as child processes; they inherit these
variables, so the notebooks run their quick setting too.
"""
import os
import tempfile

_cache = os.path.join(tempfile.gettempdir(), "fedpft_lite_test_cache")
os.environ.setdefault("FEDPFT_LITE_QUICK", "1")
# Notebook exercises (fedpft_lite.exercises): `ex.fill(n)` fills in the reference solution from
# notebooks/solutions/, so a test run proves every exercise's check can pass.
os.environ.setdefault("FEDPFT_LITE_SOLUTIONS", "1")
os.environ.setdefault("HF_HOME", os.path.join(_cache, "hf"))
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_cache, "mpl"))
os.environ.setdefault("IPYTHONDIR", os.path.join(_cache, "ipython"))
os.environ.setdefault("JUPYTER_CONFIG_DIR", os.path.join(_cache, "jupyter"))
# The reassembled offline MPNet (fedpft_lite.offline_models, 418 MiB): out of the home folder, and
# kept between test sessions so it is joined once per machine.
os.environ.setdefault("FEDPFT_LITE_CACHE", os.path.join(_cache, "fedpft_lite"))
os.environ.setdefault("MPLBACKEND", "Agg")
# pytest-xdist runs tests in several worker processes (`-n`); each gets one torch thread, and so do
# the notebook kernels they start: two processes with 2 OpenMP threads each on 2 cores slowed a run
# 10-15x (threads waiting on each other), one thread each keeps every core busy.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
