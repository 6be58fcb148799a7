"""FedPFT Module 2: sub-FM alignment by two-step distillation on the server.

1. **Layer-level, before FL** (:func:`layer_level_alignment`). Teacher = FM (frozen), student =
   sub-FM; each runs its own forward pass on public unlabelled data no client owns. Loss over the
   compressed layers S:

       L = 1/|S| · Σ_{i∈S} mean((H_T^i − H_S^i)²) / mean((H_T^i)²)

   Trainable: the compressed FFNs (W_in, b_in, W_out, b_out) and, in post-LN families such as
   BERT, the LayerNorm right after the FFN. Everything else stays bit-identical.

2. **Neuron-level, every t rounds during FL** (:func:`neuron_level_alignment`). In alignment
   rounds clients also report per compressed layer and FFN neuron how often its activation was
   (near) zero over their tokens (APoZ, :func:`activation_statistics`). The server sums them;
   per layer the most active (lowest APoZ) 1 − p of the neurons stay frozen and the other p are
   distilled with teacher = FM + the *aggregated* LoRA and head, student = sub-FM + the same;
   each compressed layer's b_out and post-FFN LayerNorm are retrained with them, as in the
   authors' code (:func:`dense_ffn_parameters`). Runs in rounds t, 2t, ... before the last
   (``methods.is_alignment_round``). Only what changed ships to clients (:func:`ffn_patch`).

APoZ for GELU: exact zeros are rare, so a neuron counts as "off" for a token when
|activation| ≤ ``APOZ_THRESHOLD`` (0.01; GELU is that small only for strongly negative inputs,
the analogue of ReLU's zeros). The mean |activation| is reported too.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .arch import arch_of, ffn_row_blocks, ffn_width, get_layers, neuron_rows
from .compression import compressed_layers
from .data import make_loader
from .distance import hidden_state_distance, layer_outputs, normalised_mse
from .evaluation import _to
from .lora import load_trainable_state, plug_back, state_bytes
from .utils import derived_seed

APOZ_THRESHOLD = 0.01


# -- shared distillation loop -------------------------------------------------------------------
def distillation_loss(teacher, student, batch: dict, layers: list[int],
                      teacher_layers: list[int] | None = None) -> torch.Tensor:
    """Mean over ``layers`` of the normalised MSE of layer outputs (padding masked out).
    Student layer ``layers[j]`` is compared with teacher layer ``teacher_layers[j]`` (default:
    the same index; an emulator's layers sit elsewhere in the FM)."""
    with torch.no_grad():
        t_out = layer_outputs(teacher, batch)
    s_out = layer_outputs(student, batch)
    mask = batch.get("attention_mask")
    targets = layers if teacher_layers is None else teacher_layers
    losses = [normalised_mse(t_out[t].float(), s_out[i].float(), mask) for i, t in zip(layers, targets)]
    return torch.stack(losses).mean()


def _layer_distances(teacher, student, loader, layers, device, max_batches=None) -> list[float]:
    """Distances of the given layers only (see ``distance.hidden_state_distance``)."""
    d = hidden_state_distance(teacher, student, loader, device, max_batches)
    return [d[i] for i in layers]


def distill(teacher, student, loader, layers: list[int], params: list[torch.nn.Parameter],
            steps: int, lr: float, device, warmup: float = 0.05, grad_masks: dict | None = None,
            progress: bool = False, desc: str = "distil",
            teacher_layers: list[int] | None = None, checkpoint: Path | None = None,
            checkpoint_every: int = 50) -> list[float]:
    """AdamW on ``params`` for ``steps`` batches (cycling ``loader``), linear decay after a
    ``warmup`` fraction. ``grad_masks`` (param -> 0/1 tensor) zero the gradient of frozen
    entries; with no weight decay, AdamW then leaves them bit-identical. ``teacher_layers``: see
    :func:`distillation_loss`. Returns the loss curve.

    ``checkpoint`` (a file): every ``checkpoint_every`` steps the parameters, the optimiser, the
    schedule and the curve so far are saved there, and a call that finds the file continues from
    it: the loader's batches up to that step are drawn again without computing (a fresh loader
    with the same seed gives the same order), so an interrupted distillation ends where an
    uninterrupted one does. A long alignment on a slow machine then survives its process."""
    teacher.eval()
    student.eval()  # no dropout: the distillation target and the student are deterministic
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    n_warm = max(1, int(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / n_warm if s < n_warm else max(0.0, (steps - s) / max(1, steps - n_warm)))
    curve, start = [], 0
    if checkpoint is not None and Path(checkpoint).exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved["steps"] != steps or len(saved["params"]) != len(params):
            raise ValueError(f"distillation checkpoint {checkpoint} is for another run "
                             f"({saved['steps']} steps); delete it to start over")
        with torch.no_grad():
            for p, v in zip(params, saved["params"]):
                p.copy_(v.to(p.device))
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["schedule"])
        curve, start = list(saved["curve"]), saved["step"]
    step = start       # a save is never the last step, so a resumed run has steps left
    bar = tqdm(total=steps, initial=start, desc=desc, leave=False, disable=not progress)
    drawn = 0          # batches drawn from the loader, computed or (before ``start``) skipped
    while step < steps:
        for batch in loader:
            drawn += 1
            if drawn <= start:           # resumed: these batches were computed before
                continue
            loss = distillation_loss(teacher, student, _to(batch, device), layers, teacher_layers)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_masks:
                for p, m in grad_masks.items():
                    if p.grad is not None:
                        p.grad.mul_(m)
            opt.step()
            sched.step()
            curve.append(float(loss.detach()))
            step += 1
            bar.update()
            if progress:
                bar.set_postfix(loss=f"{curve[-1]:.4f}")
            if checkpoint is not None and step % checkpoint_every == 0 and step < steps:
                _save_distill_checkpoint(checkpoint, params, opt, sched, curve, step, steps)
            if step >= steps:
                break
        if drawn == 0:
            raise ValueError("the public distillation data is empty")
    bar.close()
    return curve


def _save_distill_checkpoint(path: Path, params, opt, sched, curve, step: int, steps: int) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"params": [p.detach().cpu().clone() for p in params], "optimizer": opt.state_dict(),
                "schedule": sched.state_dict(), "curve": list(curve), "step": step, "steps": steps}, tmp)
    os.replace(tmp, path)                # atomic: a reader sees the old checkpoint or the new one


def ffn_parameters(model, layers: list[int], with_norm: bool) -> list[torch.nn.Parameter]:
    arch = arch_of(model.backbone)
    blocks = get_layers(model.backbone)
    params = []
    for i in layers:
        linears = [lin for _, _, lin, _ in ffn_row_blocks(blocks[i], arch)] + [blocks[i].get_submodule(arch.ffn_out)]
        for lin in linears:                                    # W_in (W_gate), W_out and biases
            params += [p for p in (lin.weight, lin.bias) if p is not None]
        if with_norm and arch.ffn_norm:
            params += list(blocks[i].get_submodule(arch.ffn_norm).parameters())
    return params


def alignable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Every parameter of ``model`` that alignment may change, by name: the compressed layers'
    FFNs (W_in, b_in, W_out, b_out) and their post-FFN LayerNorms. Layer-level alignment trains
    all of them, neuron-level alignment the selected neurons' slices of them plus the dense
    b_out and LayerNorm; everything else in the sub-FM stays as ``compress_ffn`` built it.
    Empty for a model with no compressed layer."""
    layers = compressed_layers(model)
    return dict(_named(model, ffn_parameters(model, layers, with_norm=True))) if layers else {}


def dense_ffn_parameters(block, arch) -> dict[str, torch.nn.Parameter]:
    """A layer's FFN parameters that belong to no single neuron: b_out and, in post-LN families
    such as BERT, the LayerNorm after the FFN. The authors' neuron-level alignment retrains them
    with the selected neurons; they are small (3 x hidden values per layer) and let the layer
    follow the shift that the clients' LoRA causes in the teacher."""
    out = {}
    w_out = block.get_submodule(arch.ffn_out)
    if w_out.bias is not None:
        out["b_out"] = w_out.bias
    if arch.ffn_norm:
        for n, p in block.get_submodule(arch.ffn_norm).named_parameters():
            out[f"norm.{n}"] = p
    return out


class only_trainable:
    """Context: make exactly ``params`` trainable, restoring every requires_grad flag after."""

    def __init__(self, model, params):
        self.model, self.params = model, {id(p) for p in params}

    def __enter__(self):
        self.saved = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in self.params)

    def __exit__(self, *exc):
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.saved[n])


HELD_OUT = 256  # public examples kept aside to measure distances, never distilled on


def public_loader(server, seed_parts: tuple, held_out: bool = False):
    """Seeded loader over the server's public data: the distillation part, or (``held_out``) the
    last ``min(256, 10 %)`` examples, which are only ever used to measure distances."""
    if server.public is None or len(server.public) < 2:
        raise ValueError(f"task {server.cfg.task!r} has no public split for distillation")
    return make_loader(public_part(server.public, held_out), server.preprocessor,
                       server.cfg.batch_size * 2, shuffle=True, seed=derived_seed(server.cfg.seed, *seed_parts))


def public_part(public, held_out: bool = False):
    """The public examples used for distillation, or (``held_out``) the last ``min(256, 10 %)``."""
    n = len(public)
    k = min(HELD_OUT, max(1, n // 10))
    return public.select(range(n - k, n) if held_out else range(n - k))


# -- step 1: layer-level, before FL --------------------------------------------------------------
#: What the layer-level alignment's result depends on (the cache key): the FM, the public data,
#: the sub-FM's construction, the distillation settings and the seed, and the kind of device.
ALIGNMENT_INPUTS = ("model", "task", "max_length", "max_public", "keep_ratio", "retained_layers",
                    "criterion", "align_lr", "batch_size", "seed", "amp")


def alignment_cache_key(cfg, device_type: str) -> str:
    import hashlib
    import json
    from .config import TASK_OPTIONS, FedConfig

    d = {k: getattr(cfg, k) for k in ALIGNMENT_INPUTS}
    # How a file is read and split changes its public data; named only when set, so the caches
    # of configs from before these options existed keep their keys.
    default = FedConfig()
    d.update({k: getattr(cfg, k) for k in TASK_OPTIONS if getattr(cfg, k) != getattr(default, k)})
    d.update(steps=cfg.layer_level_steps, device=device_type)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def layer_level_alignment(server, progress: bool | None = None) -> dict:
    """Distil the FM into the sub-FM's compressed layers on public data (in place).

    The result depends only on server-side inputs (:data:`ALIGNMENT_INPUTS`), never on clients,
    so with ``cfg.cache_dir`` set it is computed once and reused by every run that shares them
    (the paper's server aligns its sub-FM once, before any federated run). Every later random
    choice is seeded explicitly, so a run that loads the cache has the same history as one that
    computes it."""
    cfg = server.cfg
    if not compressed_layers(server.proxy):
        return {"layer_level": "nothing compressed"}
    if cfg.cache_dir is None:
        return _layer_level_alignment(server, progress)
    import json
    from safetensors.torch import load_file, save_file
    folder = Path(cfg.cache_dir) / f"layer_level_{alignment_cache_key(cfg, server.device.type)}"
    params = alignable_parameters(server.proxy)
    if (folder / "log.json").exists() and (folder / "weights.safetensors").exists():
        saved = load_file(str(folder / "weights.safetensors"))
        if set(saved) != set(params):
            raise ValueError(f"alignment cache {folder} holds other parameters than this sub-FM's")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n].to(p.device))
        return dict(json.loads((folder / "log.json").read_text()), cached=str(folder))
    # an interrupted computation of this entry left its distillation state here: continue it
    partial = folder.with_name(folder.name + ".partial") / "distill.pt"
    log = _layer_level_alignment(server, progress, checkpoint=partial)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, str(tmp / "weights.safetensors"))
    (tmp / "log.json").write_text(json.dumps(log))
    import shutil
    if not (folder / "weights.safetensors").exists():
        # an entry without weights (e.g. copied by a tool that leaves git-ignored files out)
        # is never trusted: it is replaced by the one just computed
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)          # atomic: a reader sees the whole entry or none
    else:                                # another process stored the same entry meanwhile
        shutil.rmtree(tmp)
    shutil.rmtree(partial.parent, ignore_errors=True)
    return dict(log, cached=None)


def _named(model, params):
    ids = {id(p) for p in params}
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


#: Steps between two saves of an unfinished layer-level alignment: about 3.5 minutes of one-thread
#: work on the slow 2-core machine for MiniLM (measured in a lane); a save holds the FFN
#: parameters and AdamW's two moments, 14-43 MB for MiniLM at keep 0.25-0.75.
LAYER_LEVEL_CHECKPOINT_EVERY = 50


def _layer_level_alignment(server, progress: bool | None = None, checkpoint: Path | None = None) -> dict:
    cfg, fm, sub = server.cfg, server.fm, server.proxy
    layers = compressed_layers(sub)
    progress = server.progress if progress is None else progress
    loader = public_loader(server, (0xA11, 0))
    held_out = public_loader(server, (0xA11, 1), held_out=True)
    before = _layer_distances(fm, sub, held_out, layers, server.device, max_batches=8)
    params = ffn_parameters(sub, layers, with_norm=True)
    with only_trainable(sub, params):
        curve = distill(fm, sub, loader, layers, params, cfg.layer_level_steps, cfg.align_lr,
                        server.device, progress=progress, desc="layer-level alignment",
                        checkpoint=checkpoint, checkpoint_every=LAYER_LEVEL_CHECKPOINT_EVERY)
    after = _layer_distances(fm, sub, held_out, layers, server.device, max_batches=8)
    return {"layers": layers, "distance_before": before, "distance_after": after, "loss_curve": curve}


# -- step 2: neuron-level, every t rounds during FL ----------------------------------------------
@torch.no_grad()
def activation_statistics(model, loader, device, threshold: float = APOZ_THRESHOLD) -> dict:
    """Client side: per compressed layer, how many of its tokens left each FFN neuron (near) zero.

    Returns ``{"zeros": {layer: counts}, "abs_sum": {layer: sums}, "tokens": n, "bytes": b}``;
    ``bytes`` is what sending the counts costs (float32 per neuron and layer)."""
    layers = compressed_layers(model)
    arch = arch_of(model.backbone)
    blocks = get_layers(model.backbone)
    zeros = {i: torch.zeros(ffn_width(blocks[i], arch), dtype=torch.float64) for i in layers}
    abs_sum = {i: torch.zeros_like(zeros[i]) for i in layers}
    state = {"mask": None}

    def hook_for(i):
        def pre_hook(module, args):
            a = args[0].detach().float()                      # (B, T, width): activation
            m = state["mask"]
            a = a[m.bool()] if m is not None else a.reshape(-1, a.shape[-1])
            zeros[i] += (a.abs() <= threshold).sum(0).double().cpu()
            abs_sum[i] += a.abs().sum(0).double().cpu()
        return pre_hook

    # W_out's input is the activation of every layout: act(W_in x), or act(W_gate x) * W_in x in a
    # gated FFN (the gated product, whose zeros are the neuron's silent tokens there)
    handles = [blocks[i].get_submodule(arch.ffn_out).register_forward_pre_hook(hook_for(i)) for i in layers]
    was_training = model.training
    model.eval()
    tokens = 0
    try:
        for batch in loader:
            batch = _to(batch, device)
            state["mask"] = batch.get("attention_mask")
            tokens += int(state["mask"].sum()) if state["mask"] is not None else \
                batch["pixel_values"].shape[0] * _tokens_per_image(model)
            model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    nbytes = sum(4 * len(z) for z in zeros.values()) + 8
    return {"zeros": zeros, "abs_sum": abs_sum, "tokens": tokens, "bytes": nbytes}


def _tokens_per_image(model) -> int:
    c = model.config
    return (c.image_size // c.patch_size) ** 2 + 1


def aggregate_apoz(stats: list[dict]) -> dict[int, torch.Tensor]:
    """Server side: APoZ per layer and neuron = total near-zero count / total tokens."""
    if not stats:
        raise ValueError("no client sent activation statistics in an alignment round")
    tokens = sum(s["tokens"] for s in stats)
    return {i: sum(s["zeros"][i] for s in stats) / max(tokens, 1) for i in stats[0]["zeros"]}


def select_neurons_to_update(apoz: torch.Tensor, p: float) -> torch.Tensor:
    """Indices of the p share of neurons with the *highest* APoZ (least active); the most
    active 1 − p stay frozen. Ties broken by index (stable sort), so the choice is deterministic."""
    k = max(1, int(round(p * len(apoz))))
    order = torch.sort(apoz, descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def neuron_level_alignment(server, rnd: int, client_stats: list[dict], progress: bool = False) -> dict:
    """Distil the least-active neurons of the sub-FM's compressed layers, teacher = FM + the
    aggregated LoRA and head, student = sub-FM + the same; return history fields."""
    cfg, fm, sub = server.cfg, server.fm, server.proxy
    layers = compressed_layers(sub)
    apoz = aggregate_apoz(client_stats)
    plug_back(fm, server.global_state)                   # teacher: FM + aggregated state
    load_trainable_state(sub, server.global_state)       # student: sub-FM + the same state
    arch = arch_of(sub.backbone)
    blocks = get_layers(sub.backbone)
    masks, params, updated = {}, [], {}
    for i in layers:
        sel = select_neurons_to_update(apoz[i], cfg.align_fraction)
        updated[i] = sel
        w_out = blocks[i].get_submodule(arch.ffn_out)
        row = torch.zeros(ffn_width(blocks[i], arch), device=w_out.weight.device)
        row[sel.to(row.device)] = 1.0
        biases = []
        for _, _, lin, offsets in ffn_row_blocks(blocks[i], arch):
            rows = row.repeat(len(offsets)).to(lin.weight.device)
            masks[lin.weight] = rows[:, None]            # W_in (and W_gate) rows of those neurons
            params.append(lin.weight)
            if lin.bias is not None:
                masks[lin.bias] = rows                    # b_in (b_gate) entries
                biases.append(lin.bias)
        masks[w_out.weight] = row[None, :]               # W_out columns of the selected neurons
        params += [w_out.weight] + biases
        params += list(dense_ffn_parameters(blocks[i], arch).values())   # b_out, LayerNorm: whole
    loader = public_loader(server, (0xA12, rnd))
    held_out = public_loader(server, (0xA11, 1), held_out=True)
    before = _layer_distances(fm, sub, held_out, layers, server.device, max_batches=4)
    with only_trainable(sub, params):
        curve = distill(fm, sub, loader, layers, params, cfg.align_steps, cfg.align_lr,
                        server.device, grad_masks=masks, progress=progress,
                        desc=f"neuron-level alignment (round {rnd})")
    after = _layer_distances(fm, sub, held_out, layers, server.device, max_batches=4)
    # What ships to clients with the next round: the updated neurons' W_in rows (+ b_in) and
    # W_out columns with their indices, and each layer's b_out and LayerNorm, for every client
    # sampled next round.
    per_client = state_bytes(ffn_patch(sub, updated))
    server.log.setdefault("neuron_level", []).append(
        {"round": rnd, "updated": {str(i): updated[i].tolist() for i in layers},
         "apoz": {str(i): apoz[i].tolist() for i in layers}})
    return {"aligned": True, "align_loss_first": curve[0], "align_loss_last": curve[-1],
            "align_distance_before": float(sum(before) / len(before)),
            "align_distance_after": float(sum(after) / len(after)),
            "bytes_down_extra": per_client * server.cfg.clients_per_round}


# -- shipping what alignment changed ------------------------------------------------------------
def aligned_neurons(log: dict) -> dict[int, torch.Tensor]:
    """Per compressed layer, every neuron that neuron-level alignment has updated so far (the
    union over the alignment rounds in ``server.log``), sorted; empty before the first one."""
    union: dict[int, set] = {}
    for entry in log.get("neuron_level", []):
        for layer, idx in entry["updated"].items():
            union.setdefault(int(layer), set()).update(idx)
    return {i: torch.tensor(sorted(s), dtype=torch.long) for i, s in sorted(union.items())}


def ffn_patch(model, neurons: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The current weights of the given FFN neurons: per layer i, ``{i}.index`` (int32),
    ``{i}.w_in`` (their W_in rows), ``{i}.b_in`` (their b_in entries) and ``{i}.w_out`` (their
    W_out columns), in a gated FFN also ``{i}.w_gate`` / ``{i}.b_gate`` (their W_gate rows; a fused
    gate-and-up W_in gives both of each neuron's rows in ``w_in``), plus the layer's
    :func:`dense_ffn_parameters` (``{i}.b_out``, ``{i}.norm.weight`` / ``.bias``). What a server
    that aligned the sub-FM ships so that a client holding the published sub-FM gets the aligned
    one; the neurons alignment did not select are bit-identical on both sides, so they need not
    travel."""
    arch, blocks = arch_of(model.backbone), get_layers(model.backbone)
    patch = {}
    for i, idx in neurons.items():
        idx = torch.as_tensor(idx, dtype=torch.long)
        w_out = blocks[i].get_submodule(arch.ffn_out)
        patch[f"{i}.index"] = idx.to(torch.int32)
        for role, _, lin, offsets in ffn_row_blocks(blocks[i], arch):
            rows = neuron_rows(offsets, idx).to(lin.weight.device)
            patch[f"{i}.w_{role}"] = lin.weight.detach()[rows].cpu().contiguous()
            if lin.bias is not None:
                patch[f"{i}.b_{role}"] = lin.bias.detach()[rows].cpu().contiguous()
        patch[f"{i}.w_out"] = w_out.weight.detach()[:, idx.to(w_out.weight.device)].cpu().contiguous()
        for name, p in dense_ffn_parameters(blocks[i], arch).items():
            patch[f"{i}.{name}"] = p.detach().cpu().contiguous()
    return patch


@torch.no_grad()
def apply_ffn_patch(model, patch: dict[str, torch.Tensor]) -> None:
    """Write an :func:`ffn_patch` into ``model`` (in place); shapes are checked first."""
    arch, blocks = arch_of(model.backbone), get_layers(model.backbone)
    layers = sorted({int(k.split(".")[0]) for k in patch})
    for i in layers:  # check everything before changing anything
        if i >= len(blocks) or f"{i}.index" not in patch:
            raise KeyError(f"FFN patch names layer {i}, which this model does not have (or no index)")
        w_out = blocks[i].get_submodule(arch.ffn_out)
        n = len(patch[f"{i}.index"])
        want = {"w_out": (w_out.out_features, n)}
        for role, _, lin, offsets in ffn_row_blocks(blocks[i], arch):
            want.update({f"w_{role}": (n * len(offsets), lin.in_features), f"b_{role}": (n * len(offsets),)})
        want.update({name: tuple(p.shape) for name, p in dense_ffn_parameters(blocks[i], arch).items()})
        for part, shape in want.items():
            key = f"{i}.{part}"
            if key in patch and tuple(patch[key].shape) != shape:
                raise ValueError(f"FFN patch {key}: shape {tuple(patch[key].shape)}, model needs {shape}")
        idx = patch[f"{i}.index"].long()
        width = ffn_width(blocks[i], arch)
        if len(idx) and (idx.min() < 0 or idx.max() >= width):
            raise ValueError(f"FFN patch layer {i}: neuron index outside 0..{width - 1}")
    for i in layers:
        w_out = blocks[i].get_submodule(arch.ffn_out)
        idx = patch[f"{i}.index"].long()
        for role, _, lin, offsets in ffn_row_blocks(blocks[i], arch):
            rows = neuron_rows(offsets, idx).to(lin.weight.device)
            if f"{i}.w_{role}" in patch:
                lin.weight[rows] = patch[f"{i}.w_{role}"].to(lin.weight)
            if lin.bias is not None and f"{i}.b_{role}" in patch:
                lin.bias[rows] = patch[f"{i}.b_{role}"].to(lin.bias)
        w_out.weight[:, idx.to(w_out.weight.device)] = patch[f"{i}.w_out"].to(w_out.weight)
        for name, p in dense_ffn_parameters(blocks[i], arch).items():
            if f"{i}.{name}" in patch:
                p.copy_(patch[f"{i}.{name}"].to(p))
