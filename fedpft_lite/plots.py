"""The notebooks' figures: small functions that take data and return the figure (or the axes).

Each function draws on a new figure, or on the ``ax`` it is given, reads nothing global and changes
no global setting (no style, no rcParams, no ``plt.show``): a notebook cell computes its numbers,
calls one function and shows the result, and ``tests/test_plots.py`` checks each function on small
synthetic inputs. Methods keep one colour in every figure (:data:`METHOD_COLORS`).

Where paper and lite numbers meet, they get separate panels with their own y-axis: the paper's
effects are a point or two, the lite runs' up to tens of points, and one shared axis hides the
smaller ones (the panel titles say "own scale").
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter, ScalarFormatter

#: One colour per method (and ablation variant), the same in every notebook.
METHOD_COLORS = {"FedPETuning": "#4c72b0", "FedOT": "#dd8452", "FedPFT": "#55a868", "FedPFT_N": "#c44e52",
                 "FedPFT_B": "#8172b3", "FedPFT_D": "#937860", "FedOT-KD": "#da8bc3", "FedBiOT": "#64b5cd",
                 "CRaSh": "#8c8c8c"}
MIB = 2**20


def _ax(ax, figsize):
    """``ax``, or the axes of a new figure of ``figsize``."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def color_of(name: str, default: str = "grey") -> str:
    """A method's colour; a cell label such as ``"FedPFT alpha=1"`` gets its method's."""
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    return METHOD_COLORS.get(str(name).split(" ")[0], default)


def human_bytes(b: float) -> str:
    """``86.2 MiB`` or ``195 KiB`` (1 MiB = 2**20 bytes, 1 KiB = 2**10)."""
    return f"{b / MIB:.1f} MiB" if b >= MIB else f"{b / 2**10:.0f} KiB"


# -- notebook 00: the primer -----------------------------------------------------------------------
def plot_toy_rounds(traces: dict, central: float, ax=None):
    """FedAvg on a one-number toy model: ``traces`` maps a run's label to the global value after
    each round (entry 0: before round 1); ``central`` is the optimum a server with all the data
    would reach (a dotted line). Returns the Axes."""
    ax = _ax(ax, (8, 3.4))
    for (label, trace), style in zip(traces.items(), ("o-", "s--", "^:", "d-.")):
        ax.plot(range(len(trace)), trace, style, label=label)
    ax.axhline(central, ls=":", color="black", label="mean of all clients' data (central optimum)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="round (0 = the initial global w)", ylabel="w (toy parameter, no unit)",
           title="FedAvg rounds on a toy problem")
    ax.legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.figure.tight_layout()
    return ax


def plot_partitions(labels, splits: dict, class_names: list, titles: dict | None = None):
    """One panel per split (``{name: one index array per client}``): each client's examples as a
    bar stacked by class, one shared y scale (client sizes compare) and one legend for all
    panels, outside them. Returns the Figure."""
    from .partition import plot_partition

    fig, axes = plt.subplots(1, len(splits), figsize=(3.6 * len(splits) + 1.6, 3.6), sharey=True,
                             squeeze=False)
    axes = axes[0]
    for ax, (name, parts) in zip(axes, splits.items()):
        plot_partition(labels, parts, class_names, ax=ax, title=(titles or {}).get(name, name))
        ax.get_legend().remove()
        ax.set_ylabel("")
        ax.title.set_fontsize(10)
    axes[0].set_ylabel("examples per client")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, title="class", loc="center right", frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
    return fig


def plot_fm_share(given: dict, total: int, ax=None):
    """Per method (``{label: FM parameter values its proxy hands to a client}``), a bar of the FM's
    ``total`` parameters split into what the client receives (labelled with its share) and what
    only the server keeps, in millions. Returns the Axes."""
    ax = _ax(ax, (11, 0.5 + 0.75 * len(given)))
    names = list(given)
    got = np.array([given[m] for m in names], dtype=float) / 1e6
    ax.barh(names, got, color="tab:orange", label="FM parameters the client receives")
    ax.barh(names, total / 1e6 - got, left=got, color="tab:blue", label="FM parameters only the server has")
    for i, m in enumerate(names):
        ax.text(got[i] / 2, i, f"{given[m] / total:.0%}", ha="center", va="center", color="white", weight="bold")
    ax.set_xlim(0, total / 1e6 * 1.02)
    ax.set(xlabel="parameters of the FM (millions)", title="What the FM's owner gives away with each method's proxy")
    ax.invert_yaxis()
    ax.legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.figure.tight_layout()
    return ax


# -- notebook 01: the sub-FM -----------------------------------------------------------------------
def plot_saliency(saliency: dict, cuts: dict, detail_layer: int, whole_layers=(), keep_label: str = "top 25 %"):
    """Left: per layer (``{layer: 1-D array of neuron saliencies}``), the distribution of saliency on
    a log scale, with each layer's cut (``cuts``: the smallest kept value) in red; layers in
    ``whole_layers`` are marked "whole", the others "cut". Right: the histogram of
    ``detail_layer``, kept neurons in red. Returns the Figure."""
    import pandas as pd
    import seaborn as sns

    layers = sorted(saliency)
    frame = pd.DataFrame([{"layer": i, "saliency": float(v)} for i in layers for v in np.asarray(saliency[i])])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 2]})
    sns.violinplot(data=frame, x="layer", y="saliency", hue="layer", palette="crest", legend=False, cut=0,
                   inner="quartile", density_norm="width", log_scale=True, ax=ax1)
    for j, i in enumerate(layers):
        ax1.hlines(cuts[i], j - 0.4, j + 0.4, color="crimson", lw=2.5, label=f"{keep_label} cut" if j == 0 else None)
    ax1.set_xticks(range(len(layers)), [f"{i}\n{'whole' if i in whole_layers else 'cut'}" for i in layers])
    ax1.set(xlabel="layer (whole: kept whole by the sub-FM; cut: compressed)", ylabel="saliency $s_j$ (log scale)",
            title=f"FFN neuron saliency per layer ({len(np.asarray(saliency[layers[0]])):,} neurons each)")
    ax1.legend(loc="upper right", frameon=False)
    detail = frame[frame.layer == detail_layer].copy()
    kept = f"kept ({keep_label})"
    detail["kept"] = np.where(detail.saliency >= cuts[detail_layer], kept, "dropped")
    sns.histplot(data=detail, x="saliency", hue="kept", bins=60, palette={kept: "crimson", "dropped": "silver"},
                 log_scale=True, ax=ax2)
    ax2.set(title=f"layer {detail_layer}: which neurons the sub-FM keeps", xlabel="saliency $s_j$ (log scale)",
            ylabel="number of neurons")
    for axis in (ax1.yaxis, ax2.xaxis):                      # plain numbers on the log axes
        axis.set_major_locator(FixedLocator([0.5, 1, 1.5, 2, 3, 4, 6, 8]))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    return fig


#: Line styles of the proxies compared in notebook 01 (others get the default cycle).
PROXY_STYLES = {"FedPFT sub-FM (saliency)": dict(color="crimson", marker="o"),
                "random neurons": dict(color="grey", marker="s", ls="--"),
                "FedOT emulator (layer drop)": dict(color="tab:blue", marker="D", ls=":")}


def plot_layer_distances(dist, compressed=(), dropped=(), ax=None):
    """Per FM layer (the index of ``dist``), each proxy's (column's) normalised MSE to the FM; a NaN
    (a layer a layer-drop emulator does not have) breaks its line and ``dropped`` layers are
    labelled. The compressed layers are shaded. Returns the Axes."""
    ax = _ax(ax, (7.5, 4))
    for name, col in dist.items():
        ax.plot(col.index, col, label=name, **PROXY_STYLES.get(name, dict(marker="o")))
    if len(compressed):
        ax.axvspan(min(compressed) - 0.5, max(compressed) + 0.5, color="gold", alpha=0.12,
                   label="compressed layers (sub-FM)")
    for i in dropped:
        ax.annotate("dropped by\nemulator", (i, 0.01), ha="center", fontsize=8, color="tab:blue")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="FM layer $i$", ylabel="normalised MSE $d_i$ to the FM (no unit)",
           title="How far each layer's output is from the FM (no alignment yet)")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=9)
    ax.figure.tight_layout()
    return ax


def plot_keep_ratio_sweep(sweep, fm_layer_params: int, sentences: int, last_layer: int):
    """Notebook 01's sweep (``sweep``: index keep_ratio; columns ``sub-FM``, ``emulator``,
    ``emulator layers``, ``d last, sub-FM``, ``d last, emulator`` and, where measured,
    ``smaller emulator`` and ``d last, smaller emulator``). Left: transformer-layer parameters
    (millions) of the sub-FM and the size-matched emulator (blue numbers: its layers); right: the
    last layer's distance to the FM. Returns the Figure."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    small = sweep.dropna(subset=["smaller emulator"]) if "smaller emulator" in sweep else sweep.iloc[:0]
    ax1.axhline(fm_layer_params / 1e6, color="k", lw=1, ls="--", label="FM")
    ax1.plot(sweep.index, sweep["sub-FM"] / 1e6, "o-", color="crimson", label="FedPFT sub-FM")
    ax1.plot(sweep.index, sweep["emulator"] / 1e6, "D:", color="tab:blue", label="FedOT emulator, matched (nearest size)")
    for r, row in sweep.iterrows():
        ax1.annotate(f"{int(row['emulator layers'])}", (r, row["emulator"] / 1e6), textcoords="offset points",
                     xytext=(0, 6), ha="center", fontsize=8, color="tab:blue")
    ax2.plot(sweep.index, sweep["d last, sub-FM"], "o-", color="crimson", label="FedPFT sub-FM")
    ax2.plot(sweep.index, sweep["d last, emulator"], "D:", color="tab:blue", label="FedOT emulator, matched")
    if len(small):
        ax1.plot(small.index, small["smaller emulator"] / 1e6, "s", mfc="none", color="tab:blue",
                 label="FedOT emulator, one layer fewer")
        ax2.plot(small.index, small["d last, smaller emulator"], "s", mfc="none", color="tab:blue",
                 label="FedOT emulator, one layer fewer")
    ax1.set_ylim(0, 1.1 * fm_layer_params / 1e6)
    ax1.set(xlabel="keep_ratio (share of FFN neurons kept in the compressed layers)",
            ylabel="transformer-layer parameters (millions)", title="size (blue numbers: the matched emulator's layers)")
    ax1.legend(frameon=False, fontsize=8, loc="lower right")
    ax2.set_ylim(0, max(1.0, 1.05 * sweep.filter(like="d last").max().max()))
    ax2.set(xlabel="keep_ratio", ylabel=f"normalised MSE $d_{{{last_layer}}}$ (no unit)",
            title=f"last layer's distance to the FM ({sentences} test sentences)")
    ax2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


# -- notebook 02: alignment -------------------------------------------------------------------------
def plot_distillation_curve(curve, held_out, total_steps: int, chunk_steps: int, ax=None):
    """A distillation run so far: the loss of every step (``curve``, grey), its moving average, and
    ``held_out`` = [(step, loss on held-out sentences), ...] in red; dotted lines where a new call
    to ``distill`` (a new optimiser and schedule) started. Returns the Axes."""
    ax = _ax(ax, (8, 3.6))
    steps = np.arange(1, len(curve) + 1)
    ax.plot(steps, curve, color="silver", lw=1, label="training loss (one public batch)")
    w = max(2, min(10, total_steps // 5))
    if len(curve) >= w:
        ax.plot(steps[w - 1:], np.convolve(curve, np.ones(w) / w, mode="valid"), color="dimgray", lw=2,
                label=f"moving average ({w} steps)")
    ax.plot(*zip(*held_out), "o-", color="crimson", label="held-out test sentences")
    for b in range(chunk_steps, total_steps, chunk_steps):
        ax.axvline(b + 0.5, color="k", alpha=0.15, ls=":")
    ax.set_xlim(0, total_steps + 1)
    ax.set_ylim(0, 1.1 * max([*curve, *(v for _, v in held_out)]))
    ax.set(xlabel="distillation step (dotted: a new call to distill)",
           ylabel=r"$\mathcal{L}$ (normalised MSE, mean over $S$)",
           title=f"layer-level distillation: step {len(curve)} of {total_steps}")
    ax.legend(frameon=False, fontsize=9, loc="lower left")
    ax.figure.tight_layout()
    return ax


def plot_distance_change(dist, compressed, before: str = "before alignment",
                         after: str = "after layer-level alignment", ax=None):
    """Per layer (the index of ``dist``), the distance to the FM before and after an alignment
    (columns ``before`` and ``after``) as labelled bars; compressed layers shaded and marked
    "cut". Returns the Axes."""
    ax = _ax(ax, (8, 3.8))
    x = np.arange(len(dist))
    ax.axvspan(min(compressed) - 0.5, max(compressed) + 0.5, color="gold", alpha=0.12, zorder=0,
               label="compressed layers $S$")
    for off, col, color in ((-0.2, before, "silver"), (0.2, after, "crimson")):
        bars = ax.bar(x + off, dist[col], 0.4, label=col, color=color, zorder=2)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x, [f"{i}\n{'cut' if i in compressed else 'whole'}" for i in dist.index])
    ax.set(xlabel="layer", ylabel="normalised MSE $d_i$ to the FM", title="How far each layer's output is from the FM")
    ax.set_ylim(0, 1.2 * dist[before].max())
    ax.legend(frameon=False, fontsize=9, loc="upper left")
    ax.figure.tight_layout()
    return ax


def plot_gradient_probe(per_layer: dict, per_batch, colors: dict | None = None):
    """Left: per layer, the mean cosine of each proxy's LoRA gradients with the FM's and its 95 %
    interval (``per_layer``: ``{proxy: [Interval per layer]}``). Right: one point per batch,
    the all-layer cosine of the first proxy (x) against the second (y; ``per_batch``: a DataFrame,
    one column per proxy), with the no-change diagonal. Returns the Figure."""
    names = list(per_layer)
    colors = colors or dict(zip(names, ("grey", "crimson", "tab:blue")))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for j, name in enumerate(names):
        ivs = per_layer[name]
        off = (j - (len(names) - 1) / 2) * 0.15
        ax1.errorbar(np.arange(len(ivs)) + off, [iv.mean for iv in ivs], yerr=[iv.half for iv in ivs],
                     fmt="os"[j % 2] + "-", color=colors[name], capsize=3, label=f"{name} (mean ± 95 % CI)")
    ax1.set_xticks(range(len(per_layer[names[0]])))
    ax1.set_ylim(0, 1)
    ax1.set(xlabel="layer", ylabel="cosine(proxy, FM) of LoRA gradients",
            title="per layer: do the proxy's LoRA gradients point like the FM's?")
    ax1.legend(frameon=False, fontsize=8, loc="lower left")
    x, y = names[0], names[1]
    ax2.scatter(per_batch[x], per_batch[y], color=colors[y], zorder=3, label="one batch")
    ax2.plot([0, 1], [0, 1], color="k", lw=1, ls="--", label="no change")
    ax2.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel=f"cosine, {x}", ylabel=f"cosine, {y}",
            title=f"all layers, one point per batch\n(above the line: {y} closer)")
    ax2.legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_apoz(client_apoz: list, apoz: dict, layers, cut: int, p: float):
    """One heat map per compressed layer: each client's APoZ per neuron and the server's
    (aggregated) one in the last row, neurons sorted by the server's APoZ (most active left); the
    red line separates the ``cut`` frozen neurons from the share ``p`` that alignment updates.
    ``client_apoz``: one ``{layer: tensor}`` per client. Returns the Figure."""
    import seaborn as sns
    import torch

    fig, axes = plt.subplots(len(layers), 1, figsize=(12, 1.45 * len(layers) + 1.0), sharex=True, squeeze=False)
    axes = axes[:, 0]
    cbar_ax = fig.add_axes([0.92, 0.15, 0.015, 0.7])
    rows = [f"client {k}" for k in range(len(client_apoz))] + ["all (server)"]
    for ax, i in zip(axes, layers):
        order = torch.argsort(torch.as_tensor(apoz[i]), stable=True)
        grid = np.stack([np.asarray(c[i])[order.numpy()] for c in client_apoz] + [np.asarray(apoz[i])[order.numpy()]])
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="mako_r", cbar=ax is axes[0], cbar_ax=cbar_ax,
                    cbar_kws={"label": "APoZ (share of tokens with the neuron off)"}, yticklabels=rows,
                    xticklabels=False)
        ax.axvline(cut, color="crimson", lw=2)
        ax.axhline(len(client_apoz), color="white", lw=2)
        ax.set_ylabel(f"layer {i}", rotation=0, ha="right", va="center", fontsize=11, labelpad=40)
        ax.tick_params(axis="y", labelsize=8, rotation=0)
    width = len(np.asarray(apoz[layers[0]]))
    axes[0].set_title(f"APoZ of the {width} neurons of each compressed layer, sorted by the server's APoZ\n"
                      f"left of the red line: the {cut} most active, frozen; right: the p = {p} updated")
    axes[-1].set_xlabel("neurons, from most active (left) to least active (right)")
    fig.subplots_adjust(left=0.12, right=0.9, hspace=0.25)
    return fig


def plot_alignment_rounds(frame, clients: int, package_bytes: int):
    """A run with neuron-level alignment (``frame``: the history as a DataFrame indexed by round).
    Left: the downlink per round, LoRA + head for every sampled client and the FFN patch on top
    in alignment rounds; right: the distance to the FM before and after each alignment. Returns
    the Figure."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    base = clients * package_bytes / MIB
    extra = (frame["bytes_down"] - clients * package_bytes) / MIB
    ax1.bar(frame.index, base, 0.5, color="tab:blue", label="LoRA + head package (all sampled clients)")
    ax1.bar(frame.index, extra, 0.5, bottom=base, color="crimson",
            label="FFN patch: updated neurons + b_out + LayerNorm (alignment)")
    ax1.set_xticks(frame.index, [f"{r}\n{'aligned' if a else ''}" for r, a in zip(frame.index, frame["aligned"])])
    ax1.set_xlim(frame.index.min() - 0.75, frame.index.max() + 0.75)
    ax1.set_ylim(0, 1.45 * frame["bytes_down"].max() / MIB)
    ax1.set(xlabel="round", ylabel="MiB sent to clients", title=f"downlink per round ({clients} clients per round)")
    ax1.legend(frameon=False, fontsize=8, loc="upper left")
    aligned = frame[frame["aligned"].astype(bool)]
    for off, col, color in ((-0.15, "align_distance_before", "silver"), (0.15, "align_distance_after", "crimson")):
        ax2.bar(aligned.index + off, aligned[col], 0.3, color=color,
                label=col.replace("align_distance_", "") + " the alignment")
    ax2.set_xticks(aligned.index, [f"round {r}" for r in aligned.index])
    if len(aligned):
        ax2.set_ylim(0, 1.25 * aligned["align_distance_before"].max())
    ax2.set(ylabel="mean $d_i$ over $S$, with LoRA", title="neuron-level alignment: distance to the FM")
    ax2.legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# -- notebook 03: the round loop ---------------------------------------------------------------------
def draw_federated_round(n_clients: int = 8, sampled=(1, 4, 6)):
    """A schematic of one round of proxy fine-tuning: the server, ``n_clients`` clients of which
    ``sampled`` train this round, the per-round traffic (state down, state up) and the one-time
    proxy shipment (dashed). Returns the Figure."""
    fig, ax = plt.subplots(figsize=(12, 5.6))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 6.4)
    ax.axis("off")

    def box(x, y, w, h, text, face, edge="black", fontsize=9, alpha=1.0):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05,rounding_size=0.15", fc=face,
                                    ec=edge, lw=1.3, alpha=alpha))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, alpha=max(alpha, 0.45))

    def arrow(a, b, color, ls="-", lw=2.0):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=16, color=color, lw=lw, ls=ls,
                                     shrinkA=0, shrinkB=0))

    box(3.0, 4.55, 6.0, 1.65, "", "#fde9e7", edge="crimson")
    ax.text(6.0, 5.95, "SERVER", ha="center", fontsize=11, weight="bold", color="crimson")
    ax.text(6.0, 5.2, "full FM (FedPFT, FedOT: only the proxy leaves)  ·  builds the proxy once\n"
            "FedAvg of the clients' states  ·  plug state into the FM  ·  evaluate the FM\n"
            "(FedPFT: aligns the sub-FM, notebook 02)", ha="center", va="center", fontsize=8.5)
    w = 1.3
    gap = (12 - 0.2 - n_clients * w) / max(n_clients - 1, 1)
    xs = [0.1 + i * (w + gap) for i in range(n_clients)]
    for k, x in enumerate(xs):
        on = k in sampled
        box(x, 0.35, w, 1.2, f"client {k}\ndata $D_{{{k}}}$\nproxy + LoRA", "#e3eefa" if on else "#f2f2f2",
            edge="tab:blue" if on else "grey", fontsize=8, alpha=1.0 if on else 0.5)
        if not on:
            ax.text(x + w / 2, 0.12, "idle this round", ha="center", fontsize=7, color="grey")
    for k in sampled:
        cx = xs[k] + w / 2
        sx = 6.0 + (cx - 6.0) * 0.55
        arrow((sx - 0.15, 4.5), (cx - 0.15, 1.62), "tab:blue")
        arrow((cx + 0.15, 1.62), (sx + 0.15, 4.5), "darkorange")
    for k in (0, n_clients - 1):
        arrow((3.1 if k == 0 else 8.9, 4.6), (xs[k] + w / 2, 1.62), "grey", ls="--", lw=1.2)
    legend = [("each round, to each sampled client:", "tab:blue", "bold", 0),
              ("the global LoRA + head", "tab:blue", "normal", 0),
              ("(FedPFT, after an alignment: + FFN patch)", "tab:blue", "normal", 0),
              ("each round, back from it:", "darkorange", "bold", 1),
              ("its own LoRA + head, and $n_k$", "darkorange", "normal", 1),
              ("once, before round 1, to every client:", "dimgrey", "bold", 2),
              ("the proxy (FedPFT sub-FM, FedOT emulator;", "dimgrey", "normal", 2),
              ("FedPETuning: the whole FM)", "dimgrey", "normal", 2)]
    for i, (text, color, weight, group) in enumerate(legend):
        ax.text(9.2, 6.2 - 0.25 * i - 0.12 * group, text, fontsize=8.5, color=color, weight=weight, va="top")
    ax.text(0.1, 6.0, f"one round:\n{len(sampled)} of {n_clients} clients\nsampled", fontsize=10, weight="bold",
            va="top")
    fig.tight_layout()
    return fig


def plot_sampling(picks: dict, num_clients: int, lrs: list, expected: float | None = None):
    """Left: which clients (columns) trained in which round (rows; ``picks``: ``{round: clients}``),
    with each client's count below; right: the learning rate of each round (``lrs``). Returns the
    Figure."""
    rounds = len(picks)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    grid = np.zeros((rounds, num_clients))
    for r, ks in picks.items():
        grid[r - 1, ks] = 1
    ax1.imshow(grid, cmap="Blues", aspect="auto", vmin=0, vmax=1.3,
               extent=(-0.5, num_clients - 0.5, rounds + 0.5, 0.5))
    ax1.set_xticks(range(num_clients))
    ax1.set_yticks(range(1, rounds + 1))
    ax1.set(xlabel="client", ylabel="round")
    ax1.grid(False)
    for k, c in enumerate(grid.sum(0).astype(int)):
        ax1.text(k, rounds + 0.45, str(c), ha="center", va="top", fontsize=8)
    ax1.set_ylim(rounds + 1.1, 0.5)
    ax1.set_title("who trains when (numbers below: rounds per client"
                  + (f"; expected {expected:g})" if expected is not None else ")"), fontsize=10)
    ax2.plot(range(1, len(lrs) + 1), lrs, "o-", color="crimson")
    ax2.set_ylim(0, max(lrs) * 1.1)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set(xlabel="round", ylabel="learning rate")
    ax2.set_title("round_lr: linear decay, never 0", fontsize=10)
    fig.tight_layout()
    return fig


def plot_traffic(proxy_bytes: dict, state_bytes: dict, ax=None):
    """What one client receives, on a linear axis in MiB: each method's proxy, sent once (grey), and
    its LoRA + head state, sent each round each way (blue). Every bar is labelled with its size and
    each state with its share of its method's proxy, so a bar too thin to see still has its number.
    Returns the Axes."""
    ax = _ax(ax, (10, 0.6 + 0.55 * (len(proxy_bytes) + len(state_bytes))))
    rows = [(f"{m}: proxy, once", b, "silver", None) for m, b in proxy_bytes.items()]
    rows += [(f"{m}: state, each round", b, "tab:blue", proxy_bytes.get(m)) for m, b in state_bytes.items()]
    top = max(b for _, b, _, _ in rows) / MIB
    for i, (_, b, color, proxy) in enumerate(rows):
        ax.barh(i, b / MIB, color=color)
        text = human_bytes(b) + (f"  (1/{proxy / b:,.0f} of its proxy)" if proxy else "")
        ax.text(b / MIB + 0.01 * top, i, text, va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), [name for name, *_ in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.45 * top)
    ax.set_xlabel("MiB (linear axis: a state's bar is a sliver because it is that small)")
    ax.set_title("What one client receives: the proxy once, then the state every round", fontsize=10)
    ax.legend(handles=[Patch(color="silver", label="proxy, sent once"),
                       Patch(color="tab:blue", label="LoRA + head, each round each way (FedPFT: + FFN patch "
                                                      "after an alignment)")],
              frameon=False, fontsize=8, loc="lower right")
    ax.figure.tight_layout()
    return ax


# -- notebook 04: the three methods ---------------------------------------------------------------
def plot_round_traffic(histories: dict, ax=None):
    """Bytes per round from run histories (``{method: rows}``), as bars: for every round and method, down
    (server to the round's clients, plain) and up (hatched), in MiB; a star over the down bar of an alignment
    round (FedPFT's FFN patch). Bars, not lines: equal values stay visible side by side. Returns the Axes."""
    ax = _ax(ax, (9, 3.6))
    n = len(histories)
    width = 0.8 / (2 * n)
    for j, (m, rows) in enumerate(histories.items()):
        c = color_of(m)
        for d, (key, hatch, word) in enumerate((("bytes_down", "", "down"), ("bytes_up", "//", "up"))):
            x = [row["round"] - 0.4 + width * (2 * j + d + 0.5) for row in rows]
            ax.bar(x, [row[key] / MIB for row in rows], width, color=c, hatch=hatch, edgecolor="white",
                   label=f"{m}: {word}")
            if key == "bytes_down":
                star = [(xi, row[key] / MIB) for xi, row in zip(x, rows) if row.get("aligned")]
                if star:
                    ax.scatter([p for p, _ in star], [v * 1.04 for _, v in star], marker="*", s=120, color=c, zorder=3)
    ax.set_ylim(0, 1.15 * max(row["bytes_down"] for h in histories.values() for row in h) / MIB)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="round (star: an alignment round, whose downlink carries the FFN patch)",
           ylabel="MiB per round (all sampled clients)", title="traffic per round: down (plain) and up (hatched)")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.tight_layout()
    return ax


def plot_committed_histories(runs: dict, chance: float | None = None, title: str = ""):
    """Committed multi-seed runs, ``{method: [history rows of one seed, ...]}``. Left: the clients'
    mean training loss per round (thin: each seed; thick: the mean over seeds); right: the FM's test
    accuracy (%) at the rounds it was evaluated (dots: seeds; line: mean), with chance dotted.
    Returns the Figure."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    for m, seeds in runs.items():
        c = color_of(m)
        losses = [[row["train_loss"] for row in h] for h in seeds]
        for loss in losses:
            ax1.plot(range(1, len(loss) + 1), loss, color=c, lw=0.8, alpha=0.45)
        n = min(len(loss) for loss in losses)
        ax1.plot(range(1, n + 1), np.mean([loss[:n] for loss in losses], 0), color=c, lw=2.5,
                 label=f"{m} ({len(seeds)} seeds)")
        evals = {}
        for h in seeds:
            for row in h:
                if row.get("fm_accuracy") is not None:
                    evals.setdefault(row["round"], []).append(100 * row["fm_accuracy"])
        xs = sorted(evals)
        for x in xs:
            ax2.scatter([x] * len(evals[x]), evals[x], color=c, s=16, alpha=0.7)
        ax2.plot(xs, [np.mean(evals[x]) for x in xs], "o-", color=c, lw=2, label=m)
    if chance is not None:
        ax2.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.0f} %)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
    ax1.set_ylim(bottom=0)
    ax1.set(ylabel="clients' mean training loss", title="training loss per round (thin: seeds, thick: mean)")
    ax2.set_ylim(0, 100)
    ax2.set(ylabel="FM test accuracy (%)", title="FM accuracy where evaluated (dots: seeds)")
    ax1.legend(frameon=False, fontsize=8, loc="lower left")
    ax2.legend(frameon=False, fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_proxy_vs_fm(summary, cells=None, ax=None):
    """Per method (``cells``, default: the summary's order) and seed, the proxy's accuracy (open
    circle, what the clients' own model scores) joined to the FM's with the same state plugged in
    (filled), in %. Returns the Axes."""
    ax = _ax(ax, (7, 3.6))
    cells = list(dict.fromkeys(summary["cell"])) if cells is None else list(cells)
    for i, cell in enumerate(cells):
        g = summary[summary["cell"] == cell].sort_values("seed")
        offs = np.linspace(-0.2, 0.2, len(g)) if len(g) > 1 else [0.0]
        c = color_of(cell)
        for off, (_, row) in zip(offs, g.iterrows()):
            ax.plot([i + off - 0.06, i + off + 0.06], [100 * row["proxy_accuracy"], 100 * row["fm_accuracy"]],
                    color=c, lw=1)
            ax.scatter(i + off - 0.06, 100 * row["proxy_accuracy"], facecolor="white", edgecolor=c, zorder=3)
            ax.scatter(i + off + 0.06, 100 * row["fm_accuracy"], color=c, zorder=3)
    ax.set_xticks(range(len(cells)), cells)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("each seed: proxy (open) → FM with the same state (filled)", fontsize=10)
    ax.legend(handles=[plt.Line2D([], [], marker="o", ls="", mfc="white", mec="k", label="proxy"),
                       plt.Line2D([], [], marker="o", ls="", color="k", label="FM, state plugged in")],
              frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.figure.tight_layout()
    return ax


# -- notebooks 05 and 07: committed comparisons ----------------------------------------------------
def plot_paired_bars(ax, summary, cells, reference: str, colors: dict | None = None, x=None,
                     width: float = 0.6, label: str | None = None, metric: str = "fm_accuracy"):
    """On ``ax``: for each cell, the same-seed difference to ``reference`` in points (bar: mean; black:
    95 % interval where there are 2 seeds or more; dots: seeds). Cells without results are
    skipped. Returns ``ax``."""
    from .results import paired, same_seed_gaps

    gaps = same_seed_gaps(summary, reference, metric)
    x = list(range(len(cells))) if x is None else list(x)
    first = True
    for xi, c in zip(x, cells):
        if c not in gaps:
            continue
        iv = paired(summary, c, reference, metric)
        ax.bar(xi, iv.mean, width, color=(colors or {}).get(c, color_of(c)), alpha=0.85,
               label=label if first else None)
        first = False
        if iv.n >= 2:
            ax.errorbar(xi, iv.mean, yerr=iv.half, color="black", capsize=4)
        v = gaps[c].dropna()
        ax.scatter([xi] * len(v), v, color="black", s=12, zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    return ax


def plot_paired_points(ax, summary, cells, reference: str, x=None, color: str = "#55a868",
                       label: str | None = None, metric: str = "fm_accuracy", fmt: str = "o-"):
    """On ``ax``: for each cell present, the same-seed difference to ``reference`` (points) with its
    95 % interval, as points joined by a line. Returns ``ax``."""
    from .results import paired

    have = set(summary["cell"])
    x = list(range(len(cells))) if x is None else list(x)
    pts = [(xi, paired(summary, c, reference, metric)) for xi, c in zip(x, cells) if c in have]
    if pts:
        ax.errorbar([p for p, _ in pts], [iv.mean for _, iv in pts], yerr=[np.nan_to_num(iv.half) for _, iv in pts],
                    fmt=fmt, capsize=4, color=color, label=label)
    ax.axhline(0, color="black", lw=0.8)
    return ax


def plot_table1(paper_gaps, lite_summary, lite_table, probe: float | None = None, chance: float = 50.0):
    """The Table 1 comparison in three panels, each on its own scale: the paper's gaps to FedPETuning
    (``paper_gaps``: columns ``method``, ``gap``; dots: model-task cells), the lite same-seed gaps
    with intervals, and the lite accuracies (``lite_table``: ``comparison_table``) with chance and
    the frozen-FM probe. Returns the Figure."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    methods = [m for m in ("FedOT", "FedPFT") if m in set(paper_gaps["method"])]
    for i, m in enumerate(methods):
        g = paper_gaps[paper_gaps["method"] == m]["gap"]
        axes[0].bar(i, g.mean(), 0.6, color=color_of(m), alpha=0.35)
        axes[0].scatter(i + np.linspace(-0.12, 0.12, len(g)), g, color=color_of(m), s=18, zorder=3)
    axes[0].axhline(0, color="black", lw=0.8)
    axes[0].set_xticks(range(len(methods)), methods)
    axes[0].set(ylabel="Δ vs FedPETuning (points)", title="paper (BERT/RoBERTa-base, GLUE), own scale\n"
                "bars: mean, dots: model-task cells")
    cells = [c for c in ("FedOT", "FedPFT") if c in set(lite_summary["cell"])]
    if "FedPETuning" in set(lite_summary["cell"]):
        plot_paired_bars(axes[1], lite_summary, cells, "FedPETuning")
    axes[1].set_xticks(range(len(cells)), cells)
    axes[1].set(ylabel="same-seed Δ vs FedPETuning (points)",
                title="lite (MiniLM, bbc-word-order), own scale\nbars: mean, black: 95 % CI, dots: seeds")
    order = [c for c in ("FedPETuning", "FedOT", "FedPFT") if c in lite_table.index]
    axes[2].bar(range(len(order)), lite_table.loc[order, "ours %"], 0.6,
                yerr=np.nan_to_num(lite_table.loc[order, "95% CI ±"].to_numpy(dtype=float)), capsize=4,
                color=[color_of(c) for c in order])
    axes[2].axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.0f} %)")
    if probe is not None:
        axes[2].axhline(probe, color="crimson", ls="--", lw=1, label=f"frozen linear probe ({probe:.1f} %)")
    axes[2].set_xticks(range(len(order)), order)
    axes[2].set_ylim(0, 100)
    axes[2].set(ylabel="FM test accuracy (%)", title="lite: accuracy, mean over seeds ± 95 % CI")
    axes[2].legend(frameon=False, fontsize=8, loc="lower right")
    for ax in axes:
        ax.title.set_fontsize(10)
    fig.tight_layout()
    return fig


def plot_alpha_trend(paper2, lite_summary=None, alphas=(1, 5, 10), methods=("FedPETuning", "FedOT", "FedPFT")):
    """Table 2's non-IID trend: each method's accuracy relative to its own α = 10, in points. One panel
    per paper task (``paper2``: columns ``task``, ``method``, ``alpha``, ``accuracy``) and one for the
    lite runs (same-seed differences with 95 % intervals), each on its own y-axis: the paper's
    trend is a point or two, the lite one tens of points. Returns the Figure."""
    tasks = list(dict.fromkeys(paper2["task"]))
    panels = len(tasks) + (lite_summary is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.7 * panels, 3.8), squeeze=False)
    axes = axes[0]
    for ax, task in zip(axes, tasks):
        for m in methods:
            g = paper2[(paper2["task"] == task) & (paper2["method"] == m)].set_index("alpha")["accuracy"]
            if len(g):
                ax.plot(list(alphas), [g[a] - g[alphas[-1]] for a in alphas], "o-", color=color_of(m), label=m)
        ax.set_title(f"paper, BERT-base, {task} (own scale)", fontsize=10)
    if lite_summary is not None:
        ax = axes[-1]
        for j, m in enumerate(methods):
            ref = f"{m} alpha={alphas[-1]}"
            if ref in set(lite_summary["cell"]):
                xs = [a * (1 + 0.05 * (j - 1)) for a in alphas]
                plot_paired_points(ax, lite_summary, [f"{m} alpha={a}" for a in alphas], ref, x=xs,
                                   color=color_of(m), label=m)
        ax.set_title("lite, MiniLM, bbc-word-order (own scale)\nsame-seed Δ, bars: 95 % CI", fontsize=10)
    for ax in axes:
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(list(alphas), [str(a) for a in alphas])
        ax.xaxis.set_minor_locator(FixedLocator([]))
        ax.set_xlabel("Dirichlet α (smaller: more skew)")
        ax.set_ylabel(f"Δ vs the same method at α = {alphas[-1]} (points)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_ablation(paper_gap, lite_summary, cells, reference: str = "FedPFT"):
    """The ablation, every variant minus the full FedPFT in points: the paper's (``paper_gap``: index
    variants, one column per model) and the lite same-seed differences, each panel on its own
    scale. Returns the Figure."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    others = [c for c in cells if c != reference]
    w = 0.8 / max(len(paper_gap.columns), 1)
    for k, model in enumerate(paper_gap.columns):
        axes[0].bar(np.arange(len(others)) + (k - (len(paper_gap.columns) - 1) / 2) * w,
                    paper_gap.loc[others, model], w, color=["#999999", "#cccccc", "#666666"][k % 3],
                    edgecolor="black", label=model)
    axes[0].set_title("paper, QNLI (own scale)", fontsize=10)
    axes[0].legend(frameon=False, fontsize=8, title="paper model")
    if lite_summary is not None and reference in set(lite_summary["cell"]):
        plot_paired_bars(axes[1], lite_summary, others, reference)
    axes[1].set_title("lite, MiniLM, bbc-word-order (own scale)\nsame-seed Δ, black: 95 % CI, dots: seeds", fontsize=10)
    for ax in axes:
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(others)), others)
        ax.set_ylabel(f"Δ vs the full {reference} (points)")
    fig.tight_layout()
    return fig


def plot_parameter_study(paper_acc: dict, lite_summary, panels: dict):
    """The parameter study: per panel (``panels``: ``{key: (lite cells, paper settings, lite
    reference, paper reference)}``), each setting minus the default in points, the paper's (grey
    squares) and the lite same-seed differences (points with 95 % intervals) side by side.
    ``paper_acc``: ``{setting: accuracy}``. Returns the Figure."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, (key, (cells, paper_keys, ref, paper_ref)) in zip(axes[0], panels.items()):
        x = np.arange(len(cells))
        ax.plot(x - 0.1, [paper_acc[k] - paper_acc[paper_ref] for k in paper_keys], "s--", color="grey",
                label="paper (BERT-base, QNLI)")
        if lite_summary is not None and ref in set(lite_summary["cell"]):
            plot_paired_points(ax, lite_summary, cells, ref, x=x + 0.1, color=color_of("FedPFT"),
                               label="lite (MiniLM), same-seed Δ ± 95 % CI")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [f"{c}\n(paper {k})" for c, k in zip(cells, paper_keys)])
        ax.set_ylabel(f"Δ vs the default {key} (points)")
        ax.set_title(f"{key}: each setting minus the default", fontsize=10)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_validation_and_test(summary, cells, reference: str, ax=None):
    """A setting chosen on validation, reported on test: per cell, the same-seed difference to
    ``reference`` on the validation split (purple) and on the test split (green), with 95 %
    intervals. Returns the Axes."""
    ax = _ax(ax, (8, 3.4))
    x = np.arange(len(cells))
    if "fm_val_accuracy" in summary and summary["fm_val_accuracy"].notna().all():
        plot_paired_points(ax, summary, cells, reference, x=x - 0.1, color="#8172b3", metric="fm_val_accuracy",
                           label="validation: same-seed Δ ± 95 % CI", fmt="o")
    plot_paired_points(ax, summary, cells, reference, x=x + 0.1, color=color_of("FedPFT"),
                       label="test: same-seed Δ ± 95 % CI", fmt="o")
    ax.set_xticks(x, cells)
    ax.set(xlabel="setting", ylabel=f"Δ vs {reference} (points)")
    ax.legend(frameon=False, fontsize=8)
    ax.figure.tight_layout()
    return ax


# -- notebook 06: Flower ----------------------------------------------------------------------------
def plot_flower_run(local: list, flower: list, wire_rounds: list):
    """The same configuration in this process and through Flower. Left: the FM's test accuracy per
    round (the lines coincide when the histories are equal); right: bytes per round, the history's
    raw tensor bytes and what Flower's messages carried (``wire_rounds``: rows with
    ``wire_bytes_down`` and ``wire_bytes_up``). Returns the Figure."""
    rounds = [r["round"] for r in local]
    fig, (ax_acc, ax_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    ax_acc.plot(rounds, [100 * r["fm_accuracy"] for r in local], "o-", lw=3, alpha=0.5,
                label="in-process (run_federated)")
    ax_acc.plot(rounds, [100 * r["fm_accuracy"] for r in flower], "x--", color="black", label="Flower (flwr run)")
    ax_acc.set(xlabel="round", ylabel="FM test accuracy (%)", ylim=(0, 100), xticks=rounds,
               title="accuracy per round, same config")
    ax_acc.legend(loc="lower right", frameon=False)
    bars = [("down, raw (both)", [r["bytes_down"] for r in flower], "tab:blue", ""),
            ("down, Flower wire", [r["wire_bytes_down"] for r in wire_rounds], "tab:blue", "//"),
            ("up, raw (both)", [r["bytes_up"] for r in flower], "tab:orange", ""),
            ("up, Flower wire", [r["wire_bytes_up"] for r in wire_rounds], "tab:orange", "//")]
    for i, (label, values, color, hatch) in enumerate(bars):
        ax_bytes.bar([x + (i - 1.5) * 0.2 for x in rounds], [v / 2**10 for v in values], 0.2, color=color,
                     hatch=hatch, edgecolor="black", label=label)
    ax_bytes.set(xlabel="round", ylabel="KiB per round (all sampled clients)", xticks=rounds, title="bytes per round")
    ax_bytes.legend(loc="upper left", fontsize=8, frameon=False)
    ax_bytes.set_ylim(0, 1.35 * max(max(v) for _, v, _, _ in bars) / 2**10)
    fig.tight_layout()
    return fig


# -- notebook 07: the neighbourhood ----------------------------------------------------------------
#: Roles of a layer in a client's proxy (notebook 07's picture), with their colours.
ROLE_COLORS = {"trained by clients (LoRA)": "#4c72b0", "frozen FM layer": "#cfcfcf",
               "distilled once by the server, before FL": "#e5ae38",
               "re-distilled by the server every round (shipped every round)": "#c44e52",
               "FFN compressed + LoRA; aligned by the server (before FL, every t rounds)": "#55a868",
               "not held: dropped, or runs a shared layer": "white"}


def plot_cka(cka, layers, ax=None):
    """Linear CKA between the FM's layers (``cka``: a square matrix, rows and columns ``layers``),
    as a labelled heat map. Returns the Axes."""
    import seaborn as sns

    ax = _ax(ax, (5.2, 4.2))
    sns.heatmap(np.asarray(cka), vmin=0, vmax=1, cmap="mako_r", annot=True, fmt=".2f", square=True, ax=ax,
                xticklabels=list(layers), yticklabels=list(layers), cbar_kws={"label": "linear CKA"},
                annot_kws={"fontsize": 8})
    ax.set(xlabel="FM layer", ylabel="FM layer", title="How alike the layers' representations are")
    ax.figure.tight_layout()
    return ax


def plot_proxy_layouts(layouts: dict, runs: dict, n_layers: int, titles: dict | None = None,
                       clusters: dict | None = None):
    """What a client holds, one row per method and one column per FM layer. ``layouts``:
    ``{method: {FM layer: (role, FFN width share)}}`` for the layers its proxy holds (roles:
    :data:`ROLE_COLORS`); ``runs``: ``{method: FM layer run at each position}``. A layer not held
    is a dashed box labelled "dropped", or, where the position runs another layer's module (CRaSh),
    "runs Lk" with an arrow from it; ``clusters``: ``{method: [[layers], ...]}`` drawn as bars
    under the boxes. One label per box, never two. Returns the Figure."""
    labels = list(layouts)
    fig, axes = plt.subplots(len(labels), 1, figsize=(11, 1.55 * len(labels) + 1.2), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, label in zip(axes, labels):
        held, run = layouts[label], runs[label]
        shared = {pos: layer for pos, layer in enumerate(run) if layer != pos and len(run) == n_layers}
        for layer in range(n_layers):
            if layer in held:
                role, width = held[layer]
                ax.add_patch(Rectangle((layer - 0.4, 0), 0.8, width, facecolor=ROLE_COLORS[role], edgecolor="black"))
                ax.text(layer, width / 2, f"L{layer}", ha="center", va="center", fontsize=9)
                continue
            ax.add_patch(Rectangle((layer - 0.4, 0), 0.8, 1.0, facecolor="white", edgecolor="grey", ls="--"))
            if layer in shared:          # this position runs another layer's module: say which, nothing else
                ax.text(layer, 0.5, f"runs\nL{shared[layer]}", ha="center", va="center", fontsize=8, color="grey")
                ax.annotate("", xy=(layer, 1.02), xytext=(shared[layer], 1.02),
                            arrowprops=dict(arrowstyle="->", color="black", connectionstyle="arc3,rad=-0.4"))
            else:
                ax.text(layer, 0.5, "dropped", ha="center", va="center", fontsize=8, color="grey")
        for c in (clusters or {}).get(label, []):
            ax.plot([c[0] - 0.45, c[-1] + 0.45], [-0.08, -0.08], color="black", lw=2)
        ax.set_xlim(-0.6, n_layers - 0.4)
        ax.set_ylim(-0.15, 1.45)
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=11)
        ax.grid(False)
        if titles and label in titles:
            ax.set_title(titles[label], fontsize=9, loc="left")
    axes[-1].set_xticks(range(n_layers), [f"FM layer {i}" for i in range(n_layers)])
    fig.suptitle("What a client holds (box height: FFN width / the FM's; bars under the boxes: CRaSh's clusters)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 1.0 / fig.get_figheight(), 1, 1))
    fig.legend(handles=[Patch(facecolor=c, edgecolor="black" if c != "white" else "grey",
                              ls="-" if c != "white" else "--", label=r) for r, c in ROLE_COLORS.items()],
               loc="lower center", ncol=2, frameon=False, fontsize=8)
    return fig


def plot_costs(table, summary, chance: float, title: str = ""):
    """A committed comparison's accuracy and costs, one panel per quantity: FM test accuracy (bars:
    mean over seeds, black: 95 % interval, dots: seeds, chance dotted), MiB down per round, the
    parameters a client holds, seconds per round (``table``: ``comparison_table`` with the cost
    columns). Legends sit outside the panels, so no bar is covered. Returns the Figure."""
    cells = list(table.index)
    x = np.arange(len(cells))
    colors = [color_of(c) for c in cells]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    ax = axes[0]
    ax.bar(x, table["ours %"], 0.6, color=colors, alpha=0.8)
    half = table["95% CI ±"].to_numpy(dtype=float)
    ok = ~np.isnan(half)
    if ok.any():
        ax.errorbar(x[ok], table["ours %"].to_numpy(dtype=float)[ok], yerr=half[ok], fmt="none", color="black",
                    capsize=4, label="95 % CI (≥ 2 seeds)")
    for xi, c in zip(x, cells):
        v = 100 * summary.loc[summary["cell"] == c, "fm_accuracy"]
        ax.scatter([xi] * len(v), v, color="black", s=12, zorder=3, label="each seed" if xi == 0 else None)
    ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.0f} %)")
    ax.set_ylim(0, 100)
    ax.set(ylabel="FM test accuracy (%)", title="accuracy: mean over seeds")
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    for ax, col, unit in ((axes[1], "MiB down / round", "MiB down per round\n(all sampled clients)"),
                          (axes[2], "client params (M)", "parameters a client holds\n(millions, without LoRA)"),
                          (axes[3], "s / round", "seconds per round\n(CPU wall time, rough)")):
        vals = table[col].to_numpy(dtype=float) if col in table else np.full(len(cells), np.nan)
        if np.isnan(vals).all():
            ax.text(0.5, 0.5, "not in this summary", ha="center", va="center", transform=ax.transAxes,
                    fontsize=9, color="grey")
            ax.set_yticks([])
        else:
            ax.bar(x, np.nan_to_num(vals), 0.6, color=colors, alpha=0.8)
        ax.set_ylabel(unit)
        ax.set_title(col, fontsize=10)
    for ax in axes:
        ax.set_xticks(x, cells, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def ticklabels_overlap(ax, axis: str = "x") -> bool:
    """Whether any two visible tick labels of ``ax``'s axis overlap once drawn (used by the tests)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    boxes = [t.get_window_extent(renderer) for t in labels if t.get_visible() and t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def texts_overlap(ax) -> bool:
    """Whether any two non-empty text artists drawn in ``ax`` overlap (used by the tests)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().strip()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def legend_covers_artists(ax) -> bool:
    """Whether ``ax``'s legend (if any) lies over one of its bars (used by the tests)."""
    legend = ax.get_legend()
    if legend is None:
        return False
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    return any(box.overlaps(p.get_window_extent(renderer)) for p in ax.patches if p.get_height() != 0)


__all__ = [n for n in dir() if n.startswith(("plot_", "draw_")) or n in
           ("METHOD_COLORS", "ROLE_COLORS", "PROXY_STYLES", "color_of", "human_bytes", "ticklabels_overlap",
            "texts_overlap", "legend_covers_artists")]
