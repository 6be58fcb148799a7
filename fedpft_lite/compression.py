"""FedPFT Module 1: sub-FM construction by layer-wise FFN compression (neuron saliency).

Each transformer layer's FFN is ``W_out · act(W_in · x + b_in) + b_out``. Its *neuron* j is row j
of W_in (and entry j of b_in) together with column j of W_out. Removing neuron j removes one
term of the FFN's sum, so a layer keeps working with fewer neurons, just approximately.

Saliency, data-free (the paper's criterion):  s_j = sqrt( ||W_in[j, :]||² + ||W_out[:, j]||² ).
We keep the top-K neurons by s_j *in their original order*, slicing W_in rows, b_in entries and
W_out columns; b_out is kept whole.

Gated FFNs, ``W_out (act(W_gate x) * W_in x)`` (Llama, Qwen2, Mistral, Gemma), give each neuron a
third vector, row j of W_gate: s_j = sqrt(||W_gate[j, :]||² + ||W_in[j, :]||² + ||W_out[:, j]||²),
the norm of every weight the neuron owns, as the paper's is for two linears. This departs from
the paper, which defines s_j only for the two-linear FFN: the natural extension, not a result of
theirs (the product makes a neuron's contribution scale with both input norms, so a norm over all
three is a rough, data-free proxy, like the original). Slicing cuts the gate's rows too.

Attention, embeddings, LayerNorms and the head are copied unchanged, and the first and last
layers are kept whole, so layer i of the sub-FM still corresponds to layer i of the FM: that is
what lets LoRA trained on the sub-FM plug back.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .arch import arch_of, ffn_linears, ffn_row_blocks, ffn_width, get_layers, neuron_rows
from .catalog import CRITERIA  # noqa: F401 (defined there, with every other name)
from .models import FMClassifier, _set


def neuron_saliency(w_in: nn.Linear, w_out: nn.Linear, *w_more: nn.Linear) -> torch.Tensor:
    """s_j = ||[W_in[j, :], W_out[:, j]]||_2 for every FFN neuron j (shape: FFN width); a gated
    FFN's W_gate is passed as ``w_more`` and adds its row j (:func:`layer_saliency` does that)."""
    # nn.Linear stores weight as (out_features, in_features): W_in is (width, hidden), so neuron j
    # is row j; W_out is (hidden, width), so neuron j is column j.
    square = w_in.weight.detach().float().pow(2).sum(1) + w_out.weight.detach().float().pow(2).sum(0)
    for lin in w_more:
        square = square + lin.weight.detach().float().pow(2).sum(1)
    return torch.sqrt(square)


def layer_saliency(layer: nn.Module, arch) -> torch.Tensor:
    """s_j of every FFN neuron of one layer, whatever its FFN layout: the norm of all the
    weights neuron j owns (its rows of every input Linear, its column of W_out)."""
    w_out = layer.get_submodule(arch.ffn_out)
    width = w_out.in_features
    square = w_out.weight.detach().float().pow(2).sum(0)
    for _, _, lin, offsets in ffn_row_blocks(layer, arch):
        rows = lin.weight.detach().float().pow(2).sum(1)
        for o in offsets:
            square = square + rows[o:o + width]
    return torch.sqrt(square)


def select_neurons(w_in: nn.Linear, w_out: nn.Linear, k: int, criterion: str = "saliency",
                   generator: torch.Generator | None = None,
                   saliency: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (sorted ascending) of the k neurons to keep (``saliency``: precomputed s_j, e.g.
    :func:`layer_saliency` of a gated FFN; by default that of ``w_in`` and ``w_out``)."""
    width = w_out.in_features
    if criterion == "saliency":
        idx = torch.topk(neuron_saliency(w_in, w_out) if saliency is None else saliency, k).indices
    elif criterion == "random":
        idx = torch.randperm(width, generator=generator)[:k]
    else:
        raise ValueError(f"unknown criterion {criterion!r}; use one of {CRITERIA}")
    return torch.sort(idx).values


def _sliced(lin: nn.Linear, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear holding ``rows`` (and their bias entries) or ``columns`` (bias whole) of ``lin``."""
    out_f = len(rows) if rows is not None else lin.out_features
    in_f = len(columns) if columns is not None else lin.in_features
    new = nn.Linear(in_f, out_f, bias=lin.bias is not None, device=lin.weight.device, dtype=lin.weight.dtype)
    with torch.no_grad():
        w = lin.weight if rows is None else lin.weight[rows]
        new.weight.copy_(w if columns is None else w[:, columns])
        if lin.bias is not None:
            new.bias.copy_(lin.bias if rows is None else lin.bias[rows])
    return new


def slice_ffn(layer: nn.Module, arch, keep: torch.Tensor) -> None:
    """Replace a layer's FFN linears, in place, by the sub-network of the neurons in ``keep``:
    rows (and bias entries) of W_in, and of W_gate in a gated FFN; columns of W_out."""
    keep = torch.as_tensor(keep, dtype=torch.long)
    for _, path, lin, offsets in ffn_row_blocks(layer, arch):
        _set(layer, path, _sliced(lin, rows=neuron_rows(offsets, keep.to(lin.weight.device))))
    w_out = layer.get_submodule(arch.ffn_out)
    _set(layer, arch.ffn_out, _sliced(w_out, columns=keep.to(w_out.weight.device)))


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
        width = ffn_width(layer, arch)
        if i in retained or keep_ratio == 1:
            widths.append(width)
            continue
        k = max(1, int(round(keep_ratio * width)))
        keep = select_neurons(w_in, w_out, k, criterion, g, saliency=layer_saliency(layer, arch))
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
