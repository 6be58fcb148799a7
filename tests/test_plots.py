"""fedpft_lite.plots: every figure function on small synthetic inputs. Each returns its figure or axes
with the expected panels, lines and bars and labels, and the bugs these functions replaced stay
fixed (labels on top of each other, legends over bars, a log axis that made a 1/450 ratio look like
1/5, a paper trend of a point drawn on a tens-of-points axis)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from fedpft_lite import plots
from fedpft_lite.stats import mean_interval


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bars(ax):
    return [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle) and p.get_width() > 0
            and p.get_height() != 0]


def summary(cells, seeds=(0, 1, 2), base=0.7, step=0.05, noise=0.01, val=True):
    """A synthetic committed summary: cell i scores base + i * step, per seed a little noise."""
    rng = np.random.default_rng(0)
    rows = []
    for i, c in enumerate(cells):
        for s in seeds:
            acc = base + i * step + noise * rng.standard_normal()
            rows.append({"cell": c, "seed": s, "fm_accuracy": acc, "proxy_accuracy": acc - 0.02,
                         **({"fm_val_accuracy": acc + 0.01} if val else {})})
    return pd.DataFrame(rows)


def test_toy_rounds_and_fm_share():
    ax = plots.plot_toy_rounds({"all clients": [0, 1, 1.5, 1.7], "half": [0, 0.8, 1.6, 1.4]}, central=1.8)
    assert len(ax.lines) == 3 and ax.get_xlabel().startswith("round")
    assert len(ax.get_legend().get_texts()) == 3
    ax = plots.plot_fm_share({"A": 60, "B": 90}, total=100)
    assert len(bars(ax)) == 4 and [t.get_text() for t in ax.texts] == ["60%", "90%"]


def test_partitions_one_panel_per_split_one_legend():
    labels = np.array([0, 1, 2] * 10)
    splits = {"IID": [np.arange(0, 15), np.arange(15, 30)], "skewed": [np.arange(0, 5), np.arange(5, 30)]}
    fig = plots.plot_partitions(labels, splits, ["a", "b", "c"])
    axes = fig.get_axes()
    assert len(axes) == 2 and [a.get_title() for a in axes] == ["IID", "skewed"]
    assert all(a.get_legend() is None for a in axes) and len(fig.legends) == 1
    assert len(bars(axes[0])) == 2 * 3                     # 2 clients x 3 classes


def test_saliency_and_distances():
    g = torch.Generator().manual_seed(0)
    sal = {i: torch.rand(40, generator=g) * 3 + 0.5 for i in range(4)}
    cuts = {i: float(torch.topk(s, 10).values[-1]) for i, s in sal.items()}
    fig = plots.plot_saliency(sal, cuts, detail_layer=2, whole_layers=(0, 3))
    ax1, ax2 = fig.get_axes()[:2]
    assert [t.get_text() for t in ax1.get_xticklabels()] == ["0\nwhole", "1\ncut", "2\ncut", "3\nwhole"]
    assert "layer 2" in ax2.get_title()
    dist = pd.DataFrame({"FedPFT sub-FM (saliency)": [0, 0.1, 0.2, 0.3],
                         "FedOT emulator (layer drop)": [0, np.nan, 0.4, 0.5]})
    ax = plots.plot_layer_distances(dist, compressed=[1, 2], dropped=[1])
    assert len(ax.lines) == 2 and [t.get_text() for t in ax.texts] == ["dropped by\nemulator"]


def test_keep_ratio_sweep():
    sweep = pd.DataFrame({"sub-FM": [2e6, 4e6, 8e6], "emulator": [3e6, 4e6, 9e6], "emulator layers": [3, 4, 6],
                          "d last, sub-FM": [0.6, 0.3, 0.0], "d last, emulator": [0.5, 0.4, 0.0],
                          "smaller emulator": [2.5e6, np.nan, np.nan], "d last, smaller emulator": [0.7, np.nan, np.nan]},
                         index=pd.Index([0.1, 0.5, 1.0], name="keep_ratio"))
    fig = plots.plot_keep_ratio_sweep(sweep, fm_layer_params=8e6, sentences=4, last_layer=5)
    ax1, ax2 = fig.get_axes()
    assert len(ax1.lines) == 4 and len(ax2.lines) == 3
    assert [t.get_text() for t in ax1.texts] == ["3", "4", "6"]


def test_alignment_figures():
    ax = plots.plot_distillation_curve([0.5, 0.4, 0.35, 0.3, 0.28, 0.27], [(0, 0.5), (3, 0.36), (6, 0.3)], 6, 3)
    assert len(ax.lines) >= 3 and "step 6 of 6" in ax.get_title()
    dist = pd.DataFrame({"before alignment": [0.0, 0.2, 0.3, 0.4], "after layer-level alignment": [0.0, 0.1, 0.2, 0.3]})
    ax = plots.plot_distance_change(dist, compressed=[1, 2])
    assert len(bars(ax)) == 6 + 1                       # 3 non-zero bars each, plus the shaded span
    iv = mean_interval([0.5, 0.6, 0.7])
    per_batch = pd.DataFrame({"unaligned": [0.4, 0.5], "aligned": [0.6, 0.55]})
    fig = plots.plot_gradient_probe({"unaligned": [iv, iv], "aligned": [iv, iv]}, per_batch)
    assert len(fig.get_axes()) == 2
    apoz = {1: torch.rand(16), 2: torch.rand(16)}
    fig = plots.plot_apoz([apoz, apoz], apoz, [1, 2], cut=8, p=0.5)
    assert len(fig.get_axes()) == 3                     # two heat maps and the colour bar
    frame = pd.DataFrame({"aligned": [False, True, False], "bytes_down": [100, 400, 100],
                          "align_distance_before": [np.nan, 0.3, np.nan], "align_distance_after": [np.nan, 0.2, np.nan]},
                         index=pd.Index([1, 2, 3], name="round"))
    fig = plots.plot_alignment_rounds(frame, clients=2, package_bytes=50)
    left, right = fig.get_axes()
    assert [t.get_text() for t in left.get_xticklabels()] == ["1\n", "2\naligned", "3\n"]
    assert len(bars(right)) == 2


def test_round_loop_figures():
    fig = plots.draw_federated_round(6, sampled=(0, 3))
    assert sum(t.get_text() == "idle this round" for t in fig.axes[0].texts) == 4
    picks = {1: [0, 1], 2: [1, 2], 3: [0, 3]}
    fig = plots.plot_sampling(picks, 4, [3e-3, 2e-3, 1e-3], expected=1.5)
    ax1, ax2 = fig.get_axes()
    assert [t.get_text() for t in ax1.texts] == ["2", "2", "1", "1"] and len(ax2.lines) == 1


def test_traffic_is_linear_and_honest():
    """The old figure's log axis from 10^5 drew a 195 KiB state about a fifth as long as an 86 MiB
    proxy; on the linear axis the bars' lengths have the bytes' ratio, and the label says it."""
    proxy, state = 86 * 2**20, 195 * 2**10
    ax = plots.plot_traffic({"FedPFT": proxy}, {"FedPFT": state})
    assert ax.get_xscale() == "linear"
    widths = [p.get_width() for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)][:2]
    assert widths[0] / widths[1] == pytest.approx(proxy / state)
    assert any("1/452 of its proxy" in t.get_text() for t in ax.texts)


def test_methods_figures():
    hist = {"FedPETuning": [{"round": r, "bytes_down": 100, "bytes_up": 100, "aligned": False} for r in (1, 2)],
            "FedPFT": [{"round": 1, "bytes_down": 100, "bytes_up": 100, "aligned": False},
                       {"round": 2, "bytes_down": 300, "bytes_up": 110, "aligned": True}]}
    ax = plots.plot_round_traffic(hist)
    assert len(bars(ax)) == 2 * 2 * 2 and len(ax.collections) == 1   # rounds x methods x directions; one star
    heights = sorted(round(p.get_height() * 2**20) for p in bars(ax))
    assert heights == [100] * 6 + [110, 300]                         # equal values stay visible, side by side
    runs = {m: [[{"round": r, "train_loss": 0.7 - 0.05 * r + 0.01 * s,
                  **({"fm_accuracy": 0.6 + 0.02 * r} if r in (5, 10) else {})} for r in range(1, 11)]
                for s in range(3)] for m in ("FedPETuning", "FedPFT")}
    fig = plots.plot_committed_histories(runs, chance=50)
    loss_ax, acc_ax = fig.get_axes()
    assert len(loss_ax.lines) == 2 * (3 + 1)                     # seeds + mean, per method
    assert [list(line.get_xdata()) for line in acc_ax.lines[:2]] == [[5, 10], [5, 10]]
    assert acc_ax.get_ylim() == (0, 100)
    ax = plots.plot_proxy_vs_fm(summary(["FedOT", "FedPFT"]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["FedOT", "FedPFT"] and len(ax.lines) == 6


def test_committed_comparisons():
    s = summary(["FedPETuning", "FedOT", "FedPFT"], base=0.5, step=0.1)
    fig, ax = plt.subplots()
    plots.plot_paired_bars(ax, s, ["FedOT", "FedPFT"], "FedPETuning")
    assert len(bars(ax)) == 2 and len(ax.collections) >= 2
    paper_gaps = pd.DataFrame({"method": ["FedOT", "FedOT", "FedPFT", "FedPFT"], "gap": [-5, -4, -1, -0.5]})
    table = pd.DataFrame({"ours %": [50, 60, 70], "95% CI ±": [1, 2, np.nan]}, index=["FedPETuning", "FedOT", "FedPFT"])
    fig = plots.plot_table1(paper_gaps, s, table, probe=55.0)
    assert len(fig.get_axes()) == 3
    s3 = summary(["steps=0", "steps=20", "steps=100"])
    ax = plots.plot_validation_and_test(s3, ["steps=0", "steps=20", "steps=100"], "steps=0")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["validation: same-seed Δ ± 95 % CI",
                                                                   "test: same-seed Δ ± 95 % CI"]


def test_alpha_trend_gives_each_source_its_own_scale():
    """The paper's 0.5-1.9-point trend was invisible on the lite runs' -46..+12 axis: now each panel
    has its own y-axis, and the paper's spans a few points."""
    rows = [{"task": t, "method": m, "alpha": a, "accuracy": 90 - (10 - a) * 0.1}
            for t in ("SST-2", "QNLI") for m in ("FedPETuning", "FedOT", "FedPFT") for a in (1.0, 5.0, 10.0)]
    cells = [f"{m} alpha={a}" for m in ("FedPETuning", "FedOT", "FedPFT") for a in (1, 5, 10)]
    lite = summary(cells, base=0.3, step=0.0, noise=0.0)
    lite.loc[lite.cell == "FedOT alpha=1", "fm_accuracy"] -= np.array([0.4, 0.46, 0.5])
    fig = plots.plot_alpha_trend(pd.DataFrame(rows), lite)
    axes = fig.get_axes()
    assert len(axes) == 3
    paper_span = np.ptp(axes[0].get_ylim())
    lite_span = np.ptp(axes[2].get_ylim())
    assert paper_span < 3 and lite_span > 30
    assert all("own scale" in a.get_title() for a in axes)


def test_ablation_and_parameter_study():
    cells = ["FedOT", "FedPFT_N", "FedPFT_B", "FedPFT_D", "FedPFT"]
    paper_gap = pd.DataFrame({"BERT-base": [-3, -2, -1, -1, 0], "RoBERTa-base": [-3.5, -2, -1, -0.5, 0]}, index=cells)
    s = summary(cells, base=0.55, step=0.05)
    fig = plots.plot_ablation(paper_gap, s, cells)
    paper_ax, lite_ax = fig.get_axes()
    assert len(bars(paper_ax)) == 8 and len(bars(lite_ax)) == 4
    assert np.ptp(paper_ax.get_ylim()) < 6 < np.ptp(lite_ax.get_ylim())
    params = summary(["t=1", "t=2", "t=4"])
    fig = plots.plot_parameter_study({"t=5": 87.0, "t=10": 87.2, "t=20": 86.9}, params,
                                     {"t": (["t=1", "t=2", "t=4"], ["t=5", "t=10", "t=20"], "t=2", "t=10")})
    assert len(fig.get_axes()) == 1


def test_flower_run():
    local = [{"round": r, "fm_accuracy": 0.3 + 0.1 * r, "bytes_down": 100, "bytes_up": 90} for r in (1, 2, 3)]
    wire = [{"wire_bytes_down": 120, "wire_bytes_up": 95} for _ in range(3)]
    fig = plots.plot_flower_run(local, local, wire)
    acc_ax, bytes_ax = fig.get_axes()
    assert len(acc_ax.lines) == 2 and len(bars(bytes_ax)) == 12


def test_proxy_layouts_never_print_two_labels_on_one_box():
    """The old picture wrote both "dropped" and "runs Lk" on a CRaSh position whose own layer no
    position runs; one label per box now, and the legend sits below the lowest row's tick labels."""
    n = 6
    runs = {"FedOT": [0, 2, 5], "CRaSh": [0, 2, 2, 2, 4, 5], "FedPFT": list(range(n))}
    roles = {"FedOT": {0: ("trained by clients (LoRA)", 1.0), 2: ("frozen FM layer", 1.0),
                       5: ("trained by clients (LoRA)", 1.0)},
             "CRaSh": {0: ("trained by clients (LoRA)", 1.0), 2: ("frozen FM layer", 1.0), 4: ("frozen FM layer", 1.0),
                       5: ("trained by clients (LoRA)", 1.0)},
             "FedPFT": {i: ("trained by clients (LoRA)", 0.25 if 0 < i < 5 else 1.0) for i in range(n)}}
    fig = plots.plot_proxy_layouts(roles, runs, n, clusters={"CRaSh": [[1, 2, 3], [4]]})
    crash = fig.get_axes()[1]
    texts = [t.get_text() for t in crash.texts]
    assert texts.count("runs\nL2") == 2 and "dropped" not in texts
    assert not plots.texts_overlap(crash)
    assert sum(t.get_text() == "dropped" for t in fig.get_axes()[0].texts) == 3
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend_top = fig.legends[0].get_window_extent(renderer).y1
    ticks_bottom = min(t.get_window_extent(renderer).y0 for t in fig.get_axes()[-1].get_xticklabels())
    assert legend_top <= ticks_bottom + 1


def test_costs_legend_covers_no_bar_and_tick_labels_do_not_overlap():
    cells = ["FedOT", "FedOT-KD", "FedBiOT", "CRaSh", "FedPFT"]
    s = summary(cells, base=0.6, step=0.06)
    table = pd.DataFrame({"ours %": [60, 66, 72, 78, 84], "95% CI ±": [2, 2, 2, 2, 2], "MiB down / round": [1, 1, 5, 1, 3],
                          "client params (M)": [10, 10, 10, 10, 11], "s / round": [5, 5, 9, 5, 7]}, index=cells)
    fig = plots.plot_costs(table, s, chance=10, title="synthetic")
    axes = fig.get_axes()
    assert len(axes) == 4
    assert not plots.legend_covers_artists(axes[0])
    assert not any(plots.ticklabels_overlap(ax) for ax in axes)


def test_cka_heat_map():
    ax = plots.plot_cka(np.eye(3) * 0.5 + 0.5, [1, 2, 3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"] and len(ax.texts) == 9


def test_helpers():
    assert plots.human_bytes(3 * 2**20) == "3.0 MiB" and plots.human_bytes(195 * 2**10) == "195 KiB"
    assert plots.color_of("FedPFT alpha=1") == plots.METHOD_COLORS["FedPFT"] and plots.color_of("x") == "grey"
    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "one")
    ax.text(0.5, 0.5, "two")
    assert plots.texts_overlap(ax)
