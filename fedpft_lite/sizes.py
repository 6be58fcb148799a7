"""Size report: parameters and bytes per part of a model (embeddings, attention, FFN, norms, head,
LoRA), for the FM, the sub-FM, the emulator and the trainable state side by side."""
from __future__ import annotations

import re

from torch import nn

from .arch import arch_of

PARTS = ("embeddings", "attention", "ffn", "norms & other", "head", "lora")


def part_of(name: str, model: nn.Module) -> str:
    """Which part a parameter name belongs to."""
    if "lora_" in name:
        return "lora"
    if name.startswith("classifier."):
        return "head"
    if "embeddings" in name:
        return "embeddings"
    arch = arch_of(model.backbone)
    m = re.match(rf"^backbone\.{re.escape(arch.layers)}\.\d+\.(.+)\.(weight|bias)$", name)
    if m:
        path = m.group(1).replace(".base_layer", "")
        if path in (arch.ffn_in, arch.ffn_out, arch.ffn_gate):
            return "ffn"
        if path in arch.attention:
            return "attention"
    return "norms & other"


def parameter_counts(model: nn.Module) -> dict[str, int]:
    counts = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        counts[part_of(name, model)] += p.numel()
    return counts


def transformer_layer_parameters(model: nn.Module) -> int:
    """Parameters inside the transformer layers (the paper's "layer params"; no LoRA)."""
    layers = model.backbone.get_submodule(arch_of(model.backbone).layers)
    return sum(p.numel() for n, p in layers.named_parameters() if "lora_" not in n)


def size_table(models: dict[str, nn.Module], state: dict | None = None, bytes_per_value: int = 4):
    """DataFrame: rows = parts (+ transformer layers, total), columns = the given models
    (and ``"trainable state"`` when ``state`` is given: what one client sends per round)."""
    import pandas as pd

    cols = {}
    for label, model in models.items():
        c = parameter_counts(model)
        c["transformer layers"] = transformer_layer_parameters(model)
        c["total"] = sum(c[p] for p in PARTS)
        cols[label] = c
    if state is not None:
        c = dict.fromkeys(PARTS, 0)
        for name, t in state.items():
            c["lora" if "lora_" in name else "head"] += t.numel()
        c["transformer layers"] = 0
        c["total"] = sum(c[p] for p in PARTS)
        cols["trainable state"] = c
    df = pd.DataFrame(cols)
    # Counts stay integers; the size in MB lives in df.attrs (a float row would turn every
    # count into a float when printed).
    df.attrs["MB"] = {c: round(df.loc["total", c] * bytes_per_value / 2**20, 2) for c in df.columns}
    return df


def plot_sizes(df, ax=None, title: str = "parameters per part"):
    """Stacked horizontal bars of the parts (millions of parameters) for each model column."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    parts = [p for p in PARTS if df.loc[p].sum() > 0]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 * len(df.columns) + 1.2))
    left = [0.0] * len(df.columns)
    colors = sns.color_palette("Set2", len(parts))
    for color, part in zip(colors, parts):
        vals = (df.loc[part] / 1e6).tolist()
        ax.barh(list(df.columns), vals, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("parameters (millions)")
    ax.set_title(title)
    ax.invert_yaxis()
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    ax.grid(axis="y", visible=False)
    sns.despine(ax=ax)
    return ax
