"""Gradient-error probe: how well do the proxy's LoRA gradients match the FM's on the same batch?

The paper bounds the discrepancy between the gradient a client computes through the sub-FM and
the one the full FM would give by the two models' output discrepancy; over rounds that error
accumulates. This probe measures it directly: load the same trainable state (LoRA + head) into
both, backpropagate the same labelled batch, and compare the gradients of the shared trainable
parameters (in the FM's naming):

    cosine = <g_proxy, g_fm> / (|g_proxy| |g_fm|)        (1 = same direction)
    relative error = |g_proxy - g_fm| / |g_fm|          (0 = identical)
"""
from __future__ import annotations

import torch

from .evaluation import _to
from .lora import load_trainable_state, to_fm_names, trainable_state


def _grads(model, batch, include_head: bool) -> dict[str, torch.Tensor]:
    was = model.training
    model.eval()  # no dropout: both models see exactly the same computation graph shape
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    model.train(was)
    grads = {n: p.grad.detach().float().cpu().clone() for n, p in model.named_parameters()
             if p.requires_grad and p.grad is not None and (include_head or "lora_" in n)}
    model.zero_grad(set_to_none=True)
    return grads


def gradient_similarity(fm, proxy, batch: dict, state: dict | None = None, device="cpu",
                        include_head: bool = False, per_layer: bool = False) -> dict:
    """Cosine similarity and relative error between proxy and FM gradients on ``batch``.

    Both models must carry LoRA (``add_lora``). ``state`` (FM naming) is loaded into both first;
    by default the proxy's current state is used. Only parameters the proxy trains are compared
    (for a FedOT emulator: its adapters). LoRA B = 0 makes A's gradient zero, so probe a state
    after some training (or with non-zero B)."""
    state = trainable_state(proxy) if state is None else state
    load_trainable_state(proxy, state)
    load_trainable_state(fm, state, fm_names=False, require_all=False)
    batch = _to(batch, device)
    g_proxy = _grads(proxy, batch, include_head)
    layer_map = proxy.structure.get("layer_map")
    if layer_map:
        g_proxy = dict(to_fm_names(g_proxy, proxy, layer_map))
    g_fm = _grads(fm, batch, include_head)
    keys = [k for k in g_proxy if k in g_fm]
    if not keys:
        raise ValueError("no shared trainable parameters between the proxy and the FM")
    a = torch.cat([g_proxy[k].flatten() for k in keys])
    b = torch.cat([g_fm[k].flatten() for k in keys])
    out = {"cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
           "relative_error": float((a - b).norm() / b.norm().clamp(min=1e-12)),
           "n_params": int(a.numel())}
    if per_layer:
        import re
        layers: dict[int, list[str]] = {}
        for k in keys:
            m = re.search(r"\.(\d+)\.", k)
            if m:
                layers.setdefault(int(m.group(1)), []).append(k)
        out["per_layer_cosine"] = {
            i: float(torch.nn.functional.cosine_similarity(
                torch.cat([g_proxy[k].flatten() for k in ks]), torch.cat([g_fm[k].flatten() for k in ks]), dim=0))
            for i, ks in sorted(layers.items())}
    return out
