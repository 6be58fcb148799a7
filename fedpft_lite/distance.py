"""How far a proxy's layers are from the FM's: the per-layer normalised MSE of hidden states.

    d_i = mean((H_T^i - H_S^i)^2) / mean((H_T^i)^2)

H^i is layer i's output, each model running its own full forward pass on the same input (so a
proxy layer sees its own, already-approximate, input: errors accumulate with depth, as they do
in use). The same quantity, averaged over the compressed layers, is FedPFT's distillation loss.
For an emulator, proxy layer i is compared with FM layer ``layer_map[i]``.
"""
from __future__ import annotations

import torch

from .evaluation import _to


def layer_outputs(model, batch: dict) -> tuple[torch.Tensor, ...]:
    """Output hidden state of every transformer layer (embeddings output excluded)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs, output_hidden_states=True).hidden_states[1:]


def normalised_mse(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean((T - S)^2) / mean(T^2), over real (non-padding) tokens when ``mask`` is given."""
    if mask is not None:
        m = mask.unsqueeze(-1).to(teacher.dtype)
        return ((teacher - student).pow(2) * m).sum() / (teacher.pow(2) * m).sum().clamp(min=1e-12)
    return (teacher - student).pow(2).mean() / teacher.pow(2).mean().clamp(min=1e-12)


@torch.no_grad()
def hidden_state_distance(fm, proxy, loader, device="cpu", max_batches: int | None = None,
                          pairs: dict[int, int] | None = None) -> list[float]:
    """Per proxy layer, the normalised MSE to the corresponding FM layer, pooled over ``loader``.
    ``pairs`` ({proxy layer: FM layer}): only these, in their order (e.g. an emulator's output
    against the output of the FM's whole middle)."""
    layer_map = proxy.structure.get("layer_map") or list(range(len(_layers(proxy))))
    pairs = dict(enumerate(layer_map)) if pairs is None else pairs
    num = torch.zeros(len(pairs), dtype=torch.float64)
    den = torch.zeros(len(pairs), dtype=torch.float64)
    fm.eval(), proxy.eval()
    for b, batch in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        batch = _to(batch, device)
        mask = batch.get("attention_mask")
        m = mask.unsqueeze(-1).float() if mask is not None else None
        t_all, s_all = layer_outputs(fm, batch), layer_outputs(proxy, batch)
        for j, (i, fm_i) in enumerate(pairs.items()):
            t, s = t_all[fm_i].float(), s_all[i].float()
            diff, ref = (t - s).pow(2), t.pow(2)
            if m is not None:
                diff, ref = diff * m, ref * m
            num[j] += diff.sum().item()
            den[j] += ref.sum().item()
    return (num / den.clamp(min=1e-12)).tolist()


def _layers(model):
    from .arch import get_layers
    return get_layers(model.backbone)
