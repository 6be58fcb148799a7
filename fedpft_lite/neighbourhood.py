"""The neighbours' proxies: what FedOT-KD, FedBiOT and CRaSh do to the FM before (and while)
clients train it. The ``Method`` classes that use these live in ``methods.py``.

* **Emulator distillation** (offsite-tuning's distilled emulator, FedBiOT's server step,
  :func:`distil_emulator`): teacher = the FM, student = a FedOT emulator; on public data the
  emulator's layers (all their weights, adapters frozen) learn to make the emulator's *output*
  match the output of the FM's whole middle, ``mean((T - S)^2) / mean(T^2)``: the loss of
  offsite-tuning's ``get_kd_loss``, which FedBiOT's ``bilevel_OT_trainer.py`` (``l2_norm``)
  and CRaSh's ``src/kd_utils.py`` copy. Both models run their own full forward pass; their
  bottom adapters are the same layers with the same LoRA, so the middle sees the same input
  in both, as in that code (which feeds the bottom adapter's output to both middles).
* **CRaSh's layer clustering** (:func:`cluster_layers`, :func:`build_crash_proxy`): the FM's
  middle layers are clustered by the linear CKA of their (token-mean) representations on
  public data, adjacent clusters merged greedily; one layer per cluster is kept and every
  other layer of the cluster is replaced by that same module (tied weights), so the proxy
  keeps the FM's depth but holds only the kept layers' weights. Training-free.
"""
from __future__ import annotations

import torch
from torch import nn

from .alignment import distill, only_trainable, public_loader
from .arch import get_layers
from .distance import hidden_state_distance, layer_outputs
from .emulator import emulator_shape, with_layers
from .evaluation import _to
from .lora import load_trainable_state, plug_back, state_bytes


# -- emulator distillation (FedOT-KD once, FedBiOT every round) ---------------------------------
def emulator_positions(proxy) -> list[int]:
    """Proxy indices of an emulator's middle (non-adapter) layers."""
    adapters = set(proxy.structure["adapters"])
    return [i for i in range(len(proxy.structure["layer_map"])) if i not in adapters]


def emulator_parameters(proxy) -> dict[str, nn.Parameter]:
    """By name, every weight of the emulator's middle layers: what its distillation trains."""
    layers = get_layers(proxy.backbone)
    ids = {id(p) for i in emulator_positions(proxy) for p in layers[i].parameters()}
    return {n: p for n, p in proxy.named_parameters() if id(p) in ids}


def emulator_output_pair(proxy) -> dict[int, int]:
    """{last emulator layer: last FM middle layer}: the emulator's output and its target."""
    last = emulator_positions(proxy)[-1]
    a = proxy.structure["num_adapter_layers"]
    n_fm = proxy.structure["layer_map"][-1] + 1          # the top adapter is the FM's last layer
    return {last: n_fm - a - 1}


def distil_emulator(server, steps: int, seed_parts: tuple, rnd: int | None = None) -> dict:
    """Distil the FM's middle into ``server.proxy``'s emulator on public data (in place) for
    ``steps`` AdamW steps at ``cfg.align_lr``. With ``rnd`` (FedBiOT, after FedAvg) the teacher
    is the FM + the aggregated LoRA and head and the student carries the same; before FL both
    are bare. Returns the loss curve and the held-out distance of the emulator's output to the
    FM middle's output before and after."""
    cfg, fm, proxy = server.cfg, server.fm, server.proxy
    if rnd is not None:
        plug_back(fm, server.global_state)
        load_trainable_state(proxy, server.global_state)
    pair = emulator_output_pair(proxy)
    loader = public_loader(server, seed_parts)
    held_out = public_loader(server, (0xE41, 1), held_out=True)
    before = hidden_state_distance(fm, proxy, held_out, server.device, max_batches=8, pairs=pair)[0]
    params = list(emulator_parameters(proxy).values())
    with only_trainable(proxy, params):
        curve = distill(fm, proxy, loader, list(pair), params, steps, cfg.align_lr, server.device,
                        progress=server.progress and rnd is None, desc="emulator distillation",
                        teacher_layers=list(pair.values()))
    after = hidden_state_distance(fm, proxy, held_out, server.device, max_batches=8, pairs=pair)[0]
    return {"loss_curve": curve, "distance_before": before, "distance_after": after}


def emulator_bytes(proxy) -> int:
    """What shipping the emulator's middle layers once costs."""
    return state_bytes({n: p.detach() for n, p in emulator_parameters(proxy).items()})


# -- CRaSh: clustering, removing, sharing --------------------------------------------------------
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two (examples x features) representations (Kornblith et al. 2019)."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (y.T @ x).pow(2).sum()
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp(min=1e-30))


@torch.no_grad()
def layer_representations(model, loader, device="cpu", max_examples: int = 512) -> list[torch.Tensor]:
    """Per layer, its output averaged over each example's real tokens: (examples x hidden)."""
    model.eval()
    reps, seen = None, 0
    for batch in loader:
        batch = _to(batch, device)
        mask = batch.get("attention_mask")
        outs = layer_outputs(model, batch)
        if mask is not None:
            m = mask.unsqueeze(-1).float()
            pooled = [(h.float() * m).sum(1) / m.sum(1).clamp(min=1) for h in outs]
        else:
            pooled = [h.float().mean(1) for h in outs]
        reps = [[p.cpu()] for p in pooled] if reps is None else [r + [p.cpu()] for r, p in zip(reps, pooled)]
        seen += len(pooled[0])
        if seen >= max_examples:
            break
    if reps is None:
        raise ValueError("no public data to cluster layers on")
    return [torch.cat(r)[:max_examples] for r in reps]


def cluster_layers(reps: list[torch.Tensor], layers: list[int], k: int) -> tuple[list[list[int]], list[dict]]:
    """Cluster consecutive ``layers`` into ``k`` groups, as CRaSh's ``layer_iter_cluster``:
    start with one cluster per layer and merge, while more than k remain, the adjacent pair
    whose facing layers (last of the left, first of the right) have the highest linear CKA
    (the leftmost pair on a tie). Returns the clusters and the merges in order."""
    clusters, merges = [[i] for i in layers], []
    if not 1 <= k <= len(layers):
        raise ValueError(f"cannot make {k} clusters of {len(layers)} layers")
    while len(clusters) > k:
        sims = [linear_cka(reps[clusters[j][-1]], reps[clusters[j + 1][0]]) for j in range(len(clusters) - 1)]
        j = max(range(len(sims)), key=lambda t: (sims[t], -t))
        merges.append({"cka": sims[j], "left": list(clusters[j]), "right": list(clusters[j + 1])})
        clusters[j] = clusters[j] + clusters.pop(j + 1)
    return clusters, merges


def cluster_representative(cluster: list[int]) -> int:
    """The layer a cluster keeps: its middle one (CRaSh's ``cluster_centers``)."""
    return cluster[len(cluster) // 2]


def shared_sources(clusters: list[list[int]], n_layers: int) -> list[int]:
    """For each of the FM's ``n_layers`` positions, the FM layer whose module CRaSh's proxy runs
    there: every layer of a cluster runs the cluster's representative (removed and shared);
    layers in no cluster (the adapters) run themselves."""
    source = list(range(n_layers))
    for c in clusters:
        for i in c:
            source[i] = cluster_representative(c)
    return source


def build_crash_proxy(fm, loader, num_adapter_layers: int | None = None, emulator_layers: int | None = None,
                      keep_ratio: float = 0.25, device="cpu"):
    """CRaSh's proxy: ``a`` adapter layers at each end kept whole (and trained), the middle
    clustered into ``emulator_layers`` clusters (default: as many as FedOT's emulator keeps, so
    both hold the same weights) on ``loader``'s data; each cluster keeps its representative and
    every other layer of it becomes a reference to that same module (removed and shared). The
    proxy has the FM's depth; its layer i corresponds to FM layer i. FM untouched."""
    n, a, k = emulator_shape(fm, num_adapter_layers, emulator_layers, keep_ratio,
                             what="emulator_layers (CRaSh's clusters)")
    reps = layer_representations(fm, loader, device)
    clusters, merges = cluster_layers(reps, list(range(a, n - a)), k)
    source = shared_sources(clusters, n)
    proxy = with_layers(fm, source)   # a repeated index is the same module: tied weights
    proxy.structure = {"method": "crash", "adapters": list(range(a)) + list(range(n - a, n)),
                       "clusters": clusters, "kept": [cluster_representative(c) for c in clusters],
                       "shared_from": source, "merges": merges, "emulator_layers": k,
                       "num_adapter_layers": a}
    return proxy


def unique_parameters(model) -> int:
    """Parameters a model holds, each tied tensor counted once."""
    return sum(p.numel() for p in model.parameters())
