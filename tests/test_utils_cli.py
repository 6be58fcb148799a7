"""Seeding, device choice, the quick setting, and the command line."""
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


def test_demo_quick_writes_table_plot_and_the_committed_comparison(tmp_path, capsys):
    """The main job end to end in its quick setting: the three methods' table, the plot, and a
    pointer to the multi-seed comparison (one seed has no interval). Accuracy is not under test:
    the quick runs are far too small to rank methods, and the demo says so."""
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    md = (out / "results.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| Fed")]
    assert [r.split("|")[1].strip() for r in rows] == ["FedPETuning", "FedOT", "FedPFT"]
    assert "quick setting: far too small to rank the methods" in md
    assert "One seed gives no interval" in md
    assert (out / "demo.png").stat().st_size > 10_000
    for m in ("fedpetuning", "fedot", "fedpft"):
        assert (out / m / "results.json").exists()
    # a second run refuses to overwrite the results (nothing computed is lost) unless asked
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
