"""The FedOT / Offsite-Tuning baseline's proxy: bottom and top *adapter* layers kept whole around
a frozen *emulator* made by uniform layer drop of the middle layers (Xiao et al. 2023).

With n layers, ``a`` adapter layers at each end and k emulator layers, the emulator keeps the
middle layers m_0 < ... < m_{M-1} at positions round(i (M - 1) / (k - 1)), i < k. The proxy's
layers no longer correspond one-to-one to the FM's: ``structure["layer_map"]`` says which FM
layer each proxy layer came from, and plug-back uses it for the adapters.
"""
from __future__ import annotations

import copy

from torch import nn

from .arch import arch_of, ffn_width, get_layers
from .compression import compress_ffn
from .models import FMClassifier


def default_adapter_layers(n_layers: int) -> int:
    """Adapter layers per end: 1 for a 6-layer model, 2 for a 12-layer one (n // 6, at least 1)."""
    return max(1, n_layers // 6)


def layer_params(layer: nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def uniform_drop(middle: list[int], k: int) -> list[int]:
    """Keep k of the middle layers, spread uniformly (first and last of the middle included)."""
    m = len(middle)
    if k >= m:
        return list(middle)
    if k == 1:
        return [middle[m // 2]]
    return [middle[round(i * (m - 1) / (k - 1))] for i in range(k)]


def matched_emulator_layers(fm: FMClassifier, num_adapter_layers: int, keep_ratio: float = 0.25,
                            retained_layers=(0, -1)) -> int:
    """Emulator depth k whose proxy size is closest to FedPFT's sub-FM at the same settings."""
    sub = compress_ffn(fm, keep_ratio, retained_layers)
    target = sum(layer_params(l) for l in get_layers(sub.backbone))
    per_layer = layer_params(get_layers(fm.backbone)[0])
    n = len(get_layers(fm.backbone))
    k = round(target / per_layer) - 2 * num_adapter_layers
    return int(min(max(k, 1), n - 2 * num_adapter_layers))


def emulator_shape(fm: FMClassifier, num_adapter_layers: int | None, emulator_layers: int | None,
                   keep_ratio: float, what: str = "emulator_layers") -> tuple[int, int, int]:
    """(n, a, k): the FM's depth, the adapter layers per end (default :func:`default_adapter_layers`)
    and the middle layers the emulator keeps (default: size-matched to FedPFT's sub-FM at
    ``keep_ratio``), checked. Shared by every emulator-style proxy (FedOT's, CRaSh's)."""
    n = len(get_layers(fm.backbone))
    a = default_adapter_layers(n) if num_adapter_layers is None else num_adapter_layers
    if a < 1 or 2 * a >= n:
        raise ValueError(f"num_adapter_layers={a} leaves no middle layers in a {n}-layer model")
    k = matched_emulator_layers(fm, a, keep_ratio) if emulator_layers is None else emulator_layers
    if not 1 <= k <= n - 2 * a:
        raise ValueError(f"{what} must be in 1..{n - 2 * a}, got {k}")
    return n, a, k


def with_layers(fm: FMClassifier, source: list[int]) -> FMClassifier:
    """A deep copy of ``fm`` whose transformer layers are the copy's layers ``source[0], source[1],
    ...``; an index that repeats puts the same module in several places (tied weights). FM untouched."""
    model = copy.deepcopy(fm)
    parent, _, name = arch_of(model.backbone).layers.rpartition(".")
    holder = model.backbone.get_submodule(parent) if parent else model.backbone
    old = getattr(holder, name)
    setattr(holder, name, nn.ModuleList([old[i] for i in source]))
    return model


def build_emulator(fm: FMClassifier, num_adapter_layers: int | None = None,
                   emulator_layers: int | None = None, keep_ratio: float = 0.25) -> FMClassifier:
    """FedOT's proxy: ``num_adapter_layers`` whole layers at each end + ``emulator_layers``
    uniformly dropped middle layers (default: matched to the size of FedPFT's sub-FM at
    ``keep_ratio``). FM untouched."""
    n, a, k = emulator_shape(fm, num_adapter_layers, emulator_layers, keep_ratio)
    bottom, top = list(range(a)), list(range(n - a, n))
    kept = bottom + uniform_drop(list(range(a, n - a)), k) + top

    em = with_layers(fm, kept)
    arch = arch_of(em.backbone)
    em.config = copy.deepcopy(em.config)
    em.config.num_hidden_layers = len(kept)
    em.backbone.config = em.config
    widths = [ffn_width(l, arch) for l in get_layers(em.backbone)]
    em.structure = {"method": "fedot", "layer_map": kept, "ffn_widths": widths,
                    "adapters": list(range(a)) + list(range(len(kept) - a, len(kept))),
                    "emulator_layers": k, "num_adapter_layers": a}
    return em


def adapter_layers(model: FMClassifier) -> list[int]:
    """Proxy indices of the trainable adapter layers of an emulator (all layers otherwise)."""
    if "adapters" in model.structure:
        return list(model.structure["adapters"])
    return list(range(len(get_layers(model.backbone))))
