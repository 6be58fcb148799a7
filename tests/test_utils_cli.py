"""Seeding, device choice, the quick setting, and the command line."""
import json
import random
import re

import numpy as np
import pytest
import torch

from fedpft_lite import is_quick, load_task, pick_device, seed_everything
from fedpft_lite.cli import main
from fedpft_lite.utils import QUICK_ENV, count_parameters, hub_reachable


# -- seeding --------------------------------------------------------------------------------------
def test_seed_everything_reproducible():
    seed_everything(123)
    a = (torch.randn(5), np.random.rand(3), random.random())
    seed_everything(123)
    b = (torch.randn(5), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    assert a[2] == b[2]
    seed_everything(124)
    assert not torch.equal(a[0], torch.randn(5))


def test_seed_everything_returns_seeded_generator():
    g1, g2 = seed_everything(7), seed_everything(7)
    assert isinstance(g1, torch.Generator)
    assert torch.equal(torch.randn(4, generator=g1), torch.randn(4, generator=g2))
    assert not torch.equal(torch.randn(4, generator=seed_everything(7)),
                           torch.randn(4, generator=seed_everything(8)))


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)


# -- devices --------------------------------------------------------------------------------------
def test_pick_device_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")).type == "cpu"


def test_pick_device_auto():
    for prefer in ("auto", None):
        dev = pick_device(prefer)
        assert isinstance(dev, torch.device)
        assert dev.type in ("cuda", "mps", "cpu")
        torch.zeros(1, device=dev)  # usable
    if torch.cuda.is_available():
        assert pick_device("auto").type == "cuda"


def test_pick_device_cuda():
    if torch.cuda.is_available():
        dev = pick_device("cuda")
        assert dev.type == "cuda"
        assert torch.ones(2, device=dev).sum().item() == 2.0
    else:
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            pick_device("cuda")
        with pytest.raises(RuntimeError, match="cuda:1"):
            pick_device("cuda:1")


# -- the quick setting ----------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("1", True), ("yes", True), ("true", True), ("0", False), ("false", False), ("", False), (None, False),
])
def test_is_quick(monkeypatch, value, expected):
    assert QUICK_ENV == "FEDPFT_LITE_QUICK"
    if value is None:
        monkeypatch.delenv("FEDPFT_LITE_QUICK", raising=False)
    else:
        monkeypatch.setenv("FEDPFT_LITE_QUICK", value)
    assert is_quick() is expected


# -- hub reachability and helpers -----------------------------------------------------------------
def test_hub_reachable_offline_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False


def test_hub_reachable_refused_port(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub_reachable(timeout=2.0) is False


def test_count_parameters():
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert count_parameters(m) == 3 * 4 + 4 + 4 * 2 + 2
    m[0].requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 4 * 2 + 2
    assert count_parameters(m) == 3 * 4 + 4 + 4 * 2 + 2


# -- the command line -----------------------------------------------------------------------------
def test_cli_info(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network probe
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "fedpft_lite 0.1.0" in out
    assert "hub reachable: False" in out
    assert "minilm" in out
    assert "bbc-news" in out and "sst2" in out


def test_cli_partition_iid_digits(capsys):
    assert main(["partition", "--task", "digits", "--clients", "5", "--scheme", "iid"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0].split()
    assert header == [str(i) for i in range(10)] + ["total", "entropy_bits"]
    assert lines[1].split() == ["client"]
    rows = [ln.split() for ln in lines if re.match(r"^\d+\s", ln)]
    assert [int(r[0]) for r in rows] == list(range(5))
    totals = [int(r[-2]) for r in rows]
    n_train = len(load_task("digits")["train"])
    assert sum(totals) == n_train
    assert max(totals) - min(totals) <= 1
    assert all(float(r[-1]) > 3.0 for r in rows)  # IID: close to log2(10) = 3.32 bits
    assert re.search(r"mean label entropy: \d\.\d{3} bits", out)


def test_cli_partition_plot(tmp_path, capsys):
    png = tmp_path / "mix.png"
    assert main(["partition", "--task", "digits", "--clients", "4", "--scheme", "shards",
                 "--plot", str(png)]) == 0
    assert png.is_file() and png.stat().st_size > 1000
    assert str(png) in capsys.readouterr().out


def test_cli_probe_unknown_task(capsys):
    assert main(["probe", "--task", "nonexistent"]) == 2
    captured = capsys.readouterr()
    assert "error" in captured.err
    assert "unknown task 'nonexistent'" in captured.err
    assert "bbc-news" in captured.err
    assert captured.out == ""


def test_cli_unknown_scheme_is_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["partition", "--scheme", "random"])
    assert info.value.code == 2
    assert "random" in capsys.readouterr().err


def test_demo_quick_continues_by_itself_shows_its_table_and_keeps_other_results(tmp_path, capsys, monkeypatch):
    """The main job end to end in its quick setting, interrupted after round 1 and started again:
    every method continues from its checkpoint by itself (demo has no --resume), then the
    three methods' table, the plot, and a pointer to the multi-seed comparison (one seed has no
    interval). Run again it shows the finished runs without training; other settings in the same
    folder are refused, naming options demo has. Accuracy is not under test: the quick runs are
    far too small to rank methods, and the demo says so."""
    import fedpft_lite.federated as federated
    real, out = federated.run_federated, tmp_path / "demo"
    monkeypatch.setattr(federated, "run_federated", lambda cfg, **kw: real(cfg, stop_after=1, **kw))
    main(["demo", "--quick", "--out", str(out), "--no-progress"])         # "interrupted" after round 1
    assert not (out / "fedpft" / "results.json").exists() and (out / "fedpft" / "checkpoint").is_dir()
    monkeypatch.setattr(federated, "run_federated", real)
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("continued from its checkpoint") == 3
    md = (out / "results.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| Fed")]
    assert [r.split("|")[1].strip() for r in rows] == ["FedPETuning", "FedOT", "FedPFT"]
    assert "quick setting: far too small to rank the methods" in md
    assert "One seed gives no interval" in md
    assert (out / "demo.png").stat().st_size > 10_000
    for m in ("fedpetuning", "fedot", "fedpft"):
        assert json.loads((out / m / "results.json").read_text())["rounds"] == 2
    # run again with the same settings: shown again from the folder, nothing retrained
    stamp = (out / "fedpft" / "results.json").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert (out / "fedpft" / "results.json").stat().st_mtime_ns == stamp
    assert capsys.readouterr().out.count("finished earlier with these settings, shown again") == 3
    # other settings in the same folder: refused before any work, naming options demo really has
    assert main(["demo", "--quick", "--seed", "1", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "'seed'" in err and "--overwrite" in err and "--out" in err
    assert "--resume" not in err and (out / "fedpft" / "results.json").stat().st_mtime_ns == stamp


# -- a command line that answers at once: bad input is refused before any heavy library loads ----
HEAVY = ("torch", "transformers", "datasets", "peft", "pandas")


def _heavy_modules_after(argv, tmp_path, env=None):
    """Run the CLI with ``argv`` in a fresh interpreter; return its exit code, its stderr and
    which heavy libraries it imported. Module counts, not seconds: a slow or busy machine
    cannot make this flaky (benchmarks/cli_startup.py measures the time)."""
    import subprocess
    import sys
    code = ("import json, sys\nfrom fedpft_lite.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]))")
    import os
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, **(env or {})}, timeout=300)
    rc, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return rc, done.stderr, heavy


@pytest.mark.parametrize("argv, says", [
    (["run", "--set", "foo=1"], "unknown config keys ['foo']"),
    (["run", "--set", "fraction=1.5", "num_clients=4"], "fraction must be in (0, 1], got 1.5"),
    (["run", "--set", "keep_ratio=0"], "keep_ratio must be in (0, 1]"),
    (["run", "--set", "task=nope.csv"], "unknown task 'nope.csv'"),
    (["run", "--set", "task=empty.csv"], "has a header line and no data rows"),
    (["run", "--set", "task=sst2"], "'bbc-word-order'"),          # offline: names the offline tasks
    (["run", "--set", "model=someone/some-model"], "'minilm'"),
    (["run", "--resume", "--output-dir", "nowhere"], "--resume but nowhere/checkpoint"),
    (["probe", "--task", "nope"], "unknown task 'nope'"),
    (["partition", "--task", "empty.csv"], "no data rows"),
    (["reproduce", "lite/tabel1"], "did you mean lite/table1"),
])
def test_bad_input_is_refused_before_torch_transformers_or_datasets_load(argv, says, tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    rc, err, heavy = _heavy_modules_after(argv, tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert rc == 2 and says in err, err
    assert heavy == [], f"{argv} imported {heavy} before refusing"


def test_help_and_the_list_of_experiments_need_no_heavy_library(tmp_path):
    for argv in (["--help"], ["run", "--help"], ["reproduce", "--list"]):
        rc, err, heavy = _heavy_modules_after(argv, tmp_path)
        assert rc == 0 and heavy == [], (argv, heavy, err)


def test_an_offline_hub_task_names_the_offline_tasks_also_from_python(monkeypatch):
    """HF_HUB_OFFLINE=1 and not cached: our message (naming the tasks that need no network), not
    datasets' 'Couldn't reach ... (OfflineModeIsEnabled)'."""
    from fedpft_lite.utils import HubUnreachableError
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError) as info:
        load_task("sst2")
    msg = str(info.value)
    assert "HF_HUB_OFFLINE is set" in msg and "'bbc-word-order'" in msg and "'digits'" in msg
