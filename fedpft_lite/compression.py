"""FedPFT Module 1: sub-FM construction by layer-wise FFN compression (neuron saliency).

Each transformer layer's FFN is ``W_out · act(W_in · x + b_in) + b_out``. Its *neuron* j is row j
of W_in (and entry j of b_in) together with column j of W_out. Removing neuron j removes one
term of the FFN's sum, so a layer keeps working with fewer neurons, just approximately.

Saliency, data-free (the paper's criterion):  s_j = sqrt( ||W_in[j, :]||² + ||W_out[:, j]||² ).
We keep the top-K neurons by s_j *in their original order*, slicing W_in rows, b_in entries and
W_out columns; b_out is kept whole. Attention, embeddings, LayerNorms and the head are copied
unchanged, and the first and last layers are kept whole, so layer i of the sub-FM still
corresponds to layer i of the FM: that is what lets LoRA trained on the sub-FM plug back.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .arch import arch_of, ffn_linears, get_layers
from .catalog import CRITERIA  # noqa: F401 (defined there, with every other name)
from .models import FMClassifier, _set


def neuron_saliency(w_in: nn.Linear, w_out: nn.Linear) -> torch.Tensor:
    """s_j = ||[W_in[j, :], W_out[:, j]]||_2 for every FFN neuron j (shape: FFN width)."""
    # nn.Linear stores weight as (out_features, in_features): W_in is (width, hidden), so neuron j
    # is row j; W_out is (hidden, width), so neuron j is column j.
    return torch.sqrt(w_in.weight.detach().float().pow(2).sum(1) + w_out.weight.detach().float().pow(2).sum(0))


def select_neurons(w_in: nn.Linear, w_out: nn.Linear, k: int, criterion: str = "saliency",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices (sorted ascending) of the k neurons to keep."""
    width = w_in.out_features
    if criterion == "saliency":
        idx = torch.topk(neuron_saliency(w_in, w_out), k).indices
    elif criterion == "random":
        idx = torch.randperm(width, generator=generator)[:k]
    else:
        raise ValueError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")
    return torch.sort(idx).values


def slice_ffn(layer: nn.Module, arch, keep: torch.Tensor) -> None:
    """Replace a layer's FFN linears, in place, by the sub-network of the neurons in ``keep``."""
    w_in, w_out = ffn_linears(layer, arch)
    new_in = nn.Linear(w_in.in_features, len(keep), bias=w_in.bias is not None,
                       device=w_in.weight.device, dtype=w_in.weight.dtype)
    new_out = nn.Linear(len(keep), w_out.out_features, bias=w_out.bias is not None,
                        device=w_out.weight.device, dtype=w_out.weight.dtype)
    with torch.no_grad():
        new_in.weight.copy_(w_in.weight[keep])          # rows of W_in
        if w_in.bias is not None:
            new_in.bias.copy_(w_in.bias[keep])          # entries of b_in
        new_out.weight.copy_(w_out.weight[:, keep])     # columns of W_out
        if w_out.bias is not None:
            new_out.bias.copy_(w_out.bias)              # b_out whole
    _set(layer, arch.ffn_in, new_in)
    _set(layer, arch.ffn_out, new_out)


def resolve_layers(indices, n: int) -> list[int]:
    """Normalise layer indices (negative counts from the end) and check them."""
    out = []
    for i in indices:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(f"layer index {i} is out of range for a model with {n} layers")
        out.append(j)
    return sorted(set(out))


def compress_ffn(fm: FMClassifier, keep_ratio: float = 0.25, retained_layers=(0, -1),
                 criterion: str = "saliency", seed: int = 0) -> FMClassifier:
    """Build FedPFT's sub-FM: a copy of ``fm`` whose compressed layers keep ``keep_ratio`` of
    their FFN neurons (top-K by saliency, or a seeded random choice for the ablation).

    Args:
        keep_ratio: fraction of FFN neurons kept in compressed layers (paper: 0.25, 3072 -> 768).
        retained_layers: layers kept whole (paper: first and last; negative = from the end).
        criterion: ``"saliency"`` (the paper) or ``"random"``.

    The FM is not modified. ``sub_fm.structure`` records the FFN width of every layer and the
    kept neuron indices, so it can be saved, reloaded, and compared with the FM.
    """
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")
    if fm.structure.get("layer_map"):
        raise ValueError("this model is a FedOT emulator; compress the full FM instead")
    sub = copy.deepcopy(fm)
    arch = arch_of(sub.backbone)
    layers = get_layers(sub.backbone)
    retained = resolve_layers(retained_layers, len(layers))
    g = torch.Generator().manual_seed(seed)
    widths, kept, compressed = [], {}, []
    for i, layer in enumerate(layers):
        w_in, w_out = ffn_linears(layer, arch)
        width = w_in.out_features
        if i in retained or keep_ratio == 1:
            widths.append(width)
            continue
        k = max(1, int(round(keep_ratio * width)))
        keep = select_neurons(w_in, w_out, k, criterion, g)
        slice_ffn(layer, arch, keep)
        widths.append(k)
        kept[str(i)] = keep.tolist()
        compressed.append(i)
    sub.structure = {"method": "fedpft", "criterion": criterion, "keep_ratio": keep_ratio,
                     "ffn_widths": widths, "compressed_layers": compressed, "kept_neurons": kept}
    return sub


def compressed_layers(model: FMClassifier) -> list[int]:
    """Indices of the layers whose FFN was compressed (empty for the FM itself)."""
    return list(model.structure.get("compressed_layers", []))
