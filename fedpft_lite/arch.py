"""Architecture adapters: where each model family keeps its transformer layers, FFN and attention.

FedPFT only needs to know four things about a transformer, per family:

* the list of transformer layers (so layer *i* of the sub-FM can match layer *i* of the FM);
* the linears of each layer's FFN: ``ffn_in`` (up-projection, W_in, rows = neurons) and
  ``ffn_out`` (down-projection, W_out, columns = neurons), and in a *gated* FFN
  ``W_out (act(W_gate x) * W_in x)`` (Llama, Qwen2, Mistral, Gemma: SwiGLU / GeGLU) also
  ``ffn_gate`` (rows = neurons), or, where gate and up are one Linear of twice the width
  (``fused_gate``: DINOv2's SwiGLU, ModernBERT's ``Wi``), neuron j's two rows j and width + j
  of ``ffn_in``. :func:`ffn_row_blocks` lists them for every piece of code that cuts neurons;
* the LayerNorm applied right after the FFN's residual add, where the family has one (BERT-style
  post-LN layers do; pre-LN ViT does not): layer-level alignment may train it;
* the attention projections (query, key, value, output; or a fused query-key-value Linear and
  the output), which are LoRA's targets.

Paths are relative to the *backbone* (the ``AutoModel`` without any task head). Two ways to know
them, tried in this order:

1. :data:`ARCHITECTURES`, an explicit table: instant, and the answer for families where reading
   the structure could be ambiguous. To pin a family, add one :class:`Arch` line (print
   ``[n for n, _ in backbone.named_modules()]`` to find the names).
2. :func:`discover_arch`, for any other Hugging Face encoder: it runs the first transformer layer
   once on a dummy input and reads the answer off what the layer actually called (which Linear
   fed which, which norm produced the layer's output), then checks the result by exactness.
   It refuses, with the reason and a way out, what FedPFT cannot treat one layer at a time:
   layers that share weights (ALBERT) and mixture-of-experts FFNs (Mixtral, Qwen2-MoE).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Arch:
    layers: str            # ModuleList of transformer layers, e.g. "encoder.layer"
    ffn_in: str            # in each layer: the FFN's up-projection (hidden -> FFN width)
    ffn_out: str           # in each layer: the FFN's down-projection (FFN width -> hidden)
    ffn_norm: str | None   # in each layer: LayerNorm after the FFN residual (None for pre-LN)
    attention: tuple[str, ...]  # in each layer: query, key, value, output projections
    modality: str = "text"
    ffn_gate: str | None = None  # gated FFN: the gate projection (hidden -> FFN width), else None
    fused_gate: bool = False     # gated FFN whose ffn_in computes both halves (hidden -> 2 x width)

    @property
    def gated(self) -> bool:
        return self.ffn_gate is not None or self.fused_gate


ARCHITECTURES: dict[str, Arch] = {
    "bert": Arch("encoder.layer", "intermediate.dense", "output.dense", "output.LayerNorm",
                 ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense")),
    "roberta": Arch("encoder.layer", "intermediate.dense", "output.dense", "output.LayerNorm",
                    ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense")),
    "distilbert": Arch("transformer.layer", "ffn.lin1", "ffn.lin2", "output_layer_norm",
                       ("attention.q_lin", "attention.k_lin", "attention.v_lin",
                        "attention.out_lin")),
    "mpnet": Arch("encoder.layer", "intermediate.dense", "output.dense", "output.LayerNorm",
                  ("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o")),
    "vit": Arch("layers", "mlp.fc1", "mlp.fc2", None,
                ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
                modality="image"),
}

#: Families that :func:`discover_arch` handles, each run end to end by ``tests/test_families.py``
#: on a tiny random-init model (Arch found, compression exact at keep 1.0, LoRA on the attention
#: projections, a FedAvg round, exact plug-back of the sub-FM and of FedOT's emulator, save and
#: reload). Other encoders may well work too: discovery checks itself and says when it cannot.
DISCOVERED_FAMILIES = ("xlm-roberta", "camembert", "electra", "ernie", "deberta-v2",
                       "data2vec-text", "deit", "beit", "dinov2", "data2vec-vision",
                       # decoders (last-token pooling); all but Phi with a gated FFN
                       "llama", "qwen2", "qwen3", "mistral", "gemma", "phi",
                       # fused query-key-value and gate-up Linears; GPT-2's Conv1D made Linear
                       "modernbert", "phi3", "gpt2")

_CACHE_ATTR = "_fedpft_arch"  # discovered Arch, stored on the backbone (deep copies inherit it)


def supported_families() -> dict[str, str]:
    """Every family tested end to end, mapped to how its :class:`Arch` is found: ``"table"``
    (:data:`ARCHITECTURES`) or ``"discovered"`` (:func:`discover_arch`)."""
    found = {family: "table" for family in ARCHITECTURES}
    found.update((family, "discovered") for family in DISCOVERED_FAMILIES if family not in found)
    return dict(sorted(found.items()))


def arch_of(model_or_type) -> Arch:
    """The :class:`Arch` of a backbone, a wrapped classifier (``.backbone``), a config or a
    ``model_type`` string: the table's entry, else (models only) the discovered one.

    Discovery runs once per backbone: its result is stored on the backbone, so deep copies
    (sub-FMs, emulators) reuse it and never re-read a layer whose FFN has been cut.
    """
    model = getattr(model_or_type, "backbone", model_or_type)
    model_type = model if isinstance(model, str) else getattr(
        getattr(model, "config", model), "model_type", None)
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    if not isinstance(model, nn.Module):
        raise NotImplementedError(_unsupported(model_type, "it is not in the table, and "
                                               "discovery needs the model itself, not its name"))
    if _CACHE_ATTR not in model.__dict__:
        setattr(model, _CACHE_ATTR, discover_arch(model))
    return model.__dict__[_CACHE_ATTR]


def _unsupported(model_type, why: str) -> str:
    return (f"this {model_type!r} model is not supported: {why}. Families supported and tested: "
            f"{', '.join(supported_families())}. To add a family whose structure discovery "
            "cannot read, add an Arch(...) line to fedpft_lite.arch.ARCHITECTURES naming its "
            "layer list, FFN linears and attention projections.")


def get_layers(backbone: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer layers of a backbone."""
    return backbone.get_submodule(arch_of(backbone).layers)


def ffn_linears(layer: nn.Module, arch: Arch) -> tuple[nn.Linear, nn.Linear]:
    """(W_in linear, W_out linear) of one transformer layer."""
    return layer.get_submodule(arch.ffn_in), layer.get_submodule(arch.ffn_out)


def ffn_width(layer: nn.Module, arch: Arch) -> int:
    """The number of FFN neurons of a layer: W_out's input width (for every FFN layout)."""
    return layer.get_submodule(arch.ffn_out).in_features


def ffn_row_blocks(layer: nn.Module, arch: Arch) -> list[tuple[str, str, nn.Linear, tuple[int, ...]]]:
    """The FFN's input-side Linears, whose *rows* belong to neurons: ``(role, path, linear,
    offsets)``, neuron j owning row ``offset + j`` of the linear for each offset. ``role`` names
    it in alignment patches: ``"in"`` (W_in, up) or ``"gate"`` (W_gate).

    * plain FFN ``W_out act(W_in x)``:        ``[("in", ffn_in, W_in, (0,))]``
    * gated ``W_out (act(W_gate x) * W_in x)``: ``[("gate", ffn_gate, W_gate, (0,)), ("in", ...)]``
    * fused gate and up (one Linear, 2 x width rows): ``[("in", ffn_in, W, (0, width))]``

    Neuron j's *column* is column j of W_out in every layout."""
    if arch.fused_gate:
        return [("in", arch.ffn_in, layer.get_submodule(arch.ffn_in), (0, ffn_width(layer, arch)))]
    blocks = [("in", arch.ffn_in, layer.get_submodule(arch.ffn_in), (0,))]
    if arch.ffn_gate:
        blocks.insert(0, ("gate", arch.ffn_gate, layer.get_submodule(arch.ffn_gate), (0,)))
    return blocks


def neuron_rows(offsets: tuple[int, ...], neurons: torch.Tensor) -> torch.Tensor:
    """Row indices of ``neurons`` in a Linear of :func:`ffn_row_blocks` with these offsets."""
    return torch.cat([neurons + o for o in offsets]) if len(offsets) > 1 else neurons + offsets[0]


def attention_module_names(backbone: nn.Module, prefix: str = "",
                           layer_indices=None) -> list[str]:
    """Full module names of the attention projections, LoRA's targets.

    Full paths (not suffixes like ``"dense"``) because peft matches ``target_modules`` by suffix,
    and ``"dense"`` would also catch BERT's FFN linears.
    """
    arch = arch_of(backbone)
    n = len(get_layers(backbone))
    indices = range(n) if layer_indices is None else layer_indices
    return [f"{prefix}{arch.layers}.{i}.{proj}" for i in indices for proj in arch.attention]


# -- discovery ------------------------------------------------------------------------------------
SHARED_WEIGHTS = ("its transformer layers share weights ({}), as ALBERT's do. FedPFT compresses "
                  "each layer's FFN separately and trains one LoRA per layer, and plug-back puts "
                  "layer i of the proxy into layer i of the FM; with one set of weights behind "
                  "many layers there is no per-layer FFN to cut. Use an encoder with separate "
                  "layers (e.g. BERT, ELECTRA or DeBERTa-v2 of a similar size)")
MIXTURE_OF_EXPERTS = ("its FFN is a mixture of experts ({}): each token is routed to a few of "
                      "several expert FFNs, so a layer has no one FFN whose neurons saliency could "
                      "rank and alignment could distil, and a sub-FM would have to cut every expert "
                      "alike. Use the family's dense checkpoints (e.g. qwen2 / qwen3 rather than "
                      "qwen2_moe / qwen3_moe, mistral rather than mixtral)")
#: Config fields that count experts in the mixture-of-experts families of transformers.
EXPERT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


class _StopAfterFirstLayer(Exception):
    """Raised by a hook once layer 0 has run: discovery needs nothing after it."""


@dataclass
class _Call:
    """One module call inside layer 0, in execution order."""
    name: str                 # path inside the layer
    module: nn.Module
    lead: tuple               # input shape without the feature dimension, e.g. (batch, seq)
    output: torch.Tensor | None


@dataclass
class _Trace:
    calls: list[_Call]
    args: tuple               # what the encoder passed to layer 0, to replay it
    kwargs: dict
    output: torch.Tensor      # layer 0's hidden-state output

    @property
    def linears(self) -> list[_Call]:
        return [c for c in self.calls if isinstance(c.module, nn.Linear)]


def discover_arch(backbone: nn.Module) -> Arch:
    """Find a Hugging Face encoder's :class:`Arch` from what its first layer does on a dummy input.

    * layers: the ModuleList with ``config.num_hidden_layers`` entries that each hold Linears;
    * FFN: the last Linear of the layer that maps width -> hidden (``ffn_out``) and the one
      Linear hidden -> width called between it and the previous Linear into hidden (``ffn_in``);
    * post-FFN norm: a norm called after ``ffn_out`` whose output *is* the layer's output
      (post-LN, e.g. BERT); None when the layer ends in a residual add (pre-LN, e.g. ViT);
    * attention: the Linears called before ``ffn_in`` on the layer's own token stream (shape
      batch x seq), which leaves out e.g. DeBERTa's projections of relative-position embeddings.

    The result is checked: every layer has these Linears with matching widths, the layers share no
    weights, and layer 0 with its FFN rebuilt by compression's own slicing (all neurons kept)
    reproduces its output exactly. Raises ``NotImplementedError`` saying why and what to do.
    """
    model_type = getattr(backbone.config, "model_type", None)
    modality = {"input_ids": "text", "pixel_values": "image"}.get(
        getattr(backbone, "main_input_name", None))
    if modality is None:
        raise NotImplementedError(_unsupported(model_type, "only text (input_ids) and image "
                                               "(pixel_values) encoders are handled"))
    path = _layer_list(backbone, model_type)
    layers = backbone.get_submodule(path)
    _check_dense_ffn(backbone, layers[0], model_type)
    trace = _trace_first_layer(backbone, layers[0], modality, model_type)
    ffn_in, ffn_out, gate, fused = _ffn(trace, model_type)
    arch = Arch(path, ffn_in.name, ffn_out.name, _post_ffn_norm(trace, ffn_out),
                _attention(layers[0], trace, gate or ffn_in, model_type), modality,
                ffn_gate=gate.name if gate else None, fused_gate=fused)
    _check_layers(layers, arch, model_type)
    _check_exact(layers[0], arch, trace, model_type)
    return arch


def _layer_list(backbone: nn.Module, model_type) -> str:
    """Path of the transformer layers: the outermost ModuleList of same-class modules holding
    Linears whose length is the config's layer count. Shorter lists mean shared weights."""
    lists = {name: m for name, m in backbone.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) and len({type(x) for x in m}) == 1
             and sum(isinstance(x, nn.Linear) for x in m[0].modules()) >= 2}
    outermost = [n for n in lists if not any(n.startswith(o + ".") for o in lists)]
    depth = getattr(backbone.config, "num_hidden_layers", None)
    matching = [n for n in outermost if len(lists[n]) == depth]
    if len(matching) == 1:
        return matching[0]
    shorter = [n for n in outermost if depth and len(lists[n]) < depth]
    if not matching and shorter:
        raise NotImplementedError(_unsupported(model_type, SHARED_WEIGHTS.format(
            f"{depth} layers computed by {len(lists[shorter[0]])} module(s) in {shorter[0]!r}")))
    conv1d = any(type(m).__name__ == "Conv1D" for m in backbone.modules())
    raise NotImplementedError(_unsupported(model_type, f"no single list of {depth} transformer "
                                           "layers made of nn.Linear modules was found "
                                           f"(candidates: {outermost or 'none'})" + (
                                               "; its projections are transformers' Conv1D: "
                                               "FMClassifier turns them into nn.Linear first "
                                               "(fedpft_lite.models.linearise_conv1d)" if conv1d else "")))


def _check_dense_ffn(backbone: nn.Module, layer: nn.Module, model_type) -> None:
    """Refuse a mixture-of-experts FFN before discovery could take one expert (e.g. a shared
    expert, which is a plain gated FFN) for the layer's FFN."""
    counts = {f: getattr(backbone.config, f, None) for f in EXPERT_FIELDS}
    counts = {f: n for f, n in counts.items() if isinstance(n, int) and n > 1}
    modules = sorted({type(m).__name__ for m in layer.modules()
                      if any(w in type(m).__name__.lower() for w in ("moe", "expert"))})
    if counts or modules:
        what = ", ".join([f"{f}={n}" for f, n in counts.items()] + modules)
        raise NotImplementedError(_unsupported(model_type, MIXTURE_OF_EXPERTS.format(what)))


def _dummy_inputs(backbone: nn.Module, modality: str, model_type) -> dict:
    """A deterministic batch of 2 (no random numbers: discovery must not move the global RNG)."""
    config, p = backbone.config, next(backbone.parameters())
    if modality == "text":
        vocab = getattr(config, "vocab_size", None)
        if not vocab:
            raise NotImplementedError(_unsupported(model_type, "its config has no vocab_size"))
        ids = torch.arange(16, device=p.device).view(2, 8) % vocab
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    size, channels = getattr(config, "image_size", None), getattr(config, "num_channels", 3)
    if size is None:
        raise NotImplementedError(_unsupported(model_type, "its config has no image_size"))
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    pixels = torch.linspace(-1, 1, 2 * channels * h * w, device=p.device, dtype=p.dtype)
    return {"pixel_values": pixels.view(2, channels, h, w)}


def _first_tensor(*values) -> torch.Tensor | None:
    """The hidden states in a module's inputs or outputs (the first tensor, through tuples)."""
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
        if isinstance(v, (tuple, list)):
            t = _first_tensor(*v)
            if t is not None:
                return t
        if isinstance(v, dict):
            t = _first_tensor(*v.values())
            if t is not None:
                return t
    return None


@torch.no_grad()
def _trace_first_layer(backbone, layer, modality, model_type) -> _Trace:
    """Run the backbone on a dummy batch up to the end of layer 0, recording every module call
    inside it (first call each), the layer's inputs and its output."""
    calls, seen, captured = [], set(), {}

    def record(name):
        def hook(module, args, output):
            if name not in seen:
                seen.add(name)
                x = _first_tensor(args)
                calls.append(_Call(name, module, tuple(x.shape[:-1]) if x is not None else (),
                                   _first_tensor(output)))
        return hook

    def before(module, args, kwargs):
        captured.update(args=args, kwargs=kwargs)

    def after(module, args, kwargs, output):
        captured["output"] = _first_tensor(output)
        raise _StopAfterFirstLayer

    handles = [m.register_forward_hook(record(n)) for n, m in layer.named_modules() if n]
    handles.append(layer.register_forward_pre_hook(before, with_kwargs=True))
    handles.append(layer.register_forward_hook(after, with_kwargs=True))
    was_training = backbone.training
    backbone.eval()  # no dropout: the exactness check replays the layer
    try:
        backbone(**_dummy_inputs(backbone, modality, model_type))
    except _StopAfterFirstLayer:
        pass
    except Exception as e:  # a family whose forward wants more than ids / pixels
        raise NotImplementedError(_unsupported(
            model_type, f"discovery could not run it on a dummy batch ({type(e).__name__}: {e})")) from e
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    if "output" not in captured:
        raise NotImplementedError(_unsupported(model_type, "its first layer never ran"))
    return _Trace(calls, captured["args"], captured["kwargs"], captured["output"])


def _ffn(trace: _Trace, model_type) -> tuple[_Call, _Call, _Call | None, bool]:
    """(ffn_in, ffn_out, gate or None, fused) calls: the layer's last Linear width -> hidden
    (``ffn_out``) and what fed it since the previous Linear into hidden: one Linear hidden ->
    width (plain FFN), two (gated: the first called is the gate, as in ``down(act(gate(x)) *
    up(x))``; slicing treats both alike, so the naming only matters in messages), or one Linear
    hidden -> 2 x width (gate and up fused)."""
    hidden = trace.output.shape[-1]
    into_hidden = [i for i, c in enumerate(trace.linears) if c.module.out_features == hidden]
    outs = [i for i in into_hidden if trace.linears[i].module.in_features != hidden]
    if not outs:
        raise NotImplementedError(_unsupported(model_type, "no FFN down-projection (a Linear from "
                                               f"a width other than hidden {hidden}) was found"))
    last = outs[-1]
    previous = max([i for i in into_hidden if i < last], default=-1)
    down = trace.linears[last]
    width = down.module.in_features
    between = [c for c in trace.linears[previous + 1:last] if c.module.in_features == hidden]
    ups = [c for c in between if c.module.out_features == width]
    fused = [c for c in between if c.module.out_features == 2 * width]
    if len(ups) == 1 and not fused:
        return ups[0], down, None, False
    if len(ups) == 2 and not fused:
        return ups[1], down, ups[0], False
    if len(fused) == 1 and not ups:
        return fused[0], down, None, True
    names = ", ".join(c.name for c in between + [down])
    raise NotImplementedError(_unsupported(model_type, f"the Linear(s) feeding {down.name!r} were "
                                           f"not recognised as a plain or gated FFN ({names})"))


def _post_ffn_norm(trace: _Trace, ffn_out: _Call) -> str | None:
    """A norm called after the FFN whose output is the layer's output (post-LN), else None."""
    after = trace.calls[trace.calls.index(ffn_out) + 1:]
    for c in after:
        if "norm" in type(c.module).__name__.lower() and c.output is not None \
                and c.output.shape == trace.output.shape and torch.equal(c.output, trace.output):
            return c.name
    return None


def _attention(layer: nn.Module, trace: _Trace, ffn_in: _Call, model_type) -> tuple[str, ...]:
    """The attention projections, LoRA's targets: the Linears on the token stream called before
    the FFN, in the order the family defines them. Query, key, value, output as four Linears in
    most families; where one Linear computes query, key and value together (ModernBERT's
    ``Wqkv``, Phi-3's ``qkv_proj``: wider than hidden), that one and the output projection, and
    LoRA adapts the fused projection as one matrix (one A shared by q, k and v)."""
    stream = _first_tensor(trace.args, trace.kwargs).shape[:-1]
    hidden = trace.output.shape[-1]
    before = trace.linears[:trace.linears.index(ffn_in)]
    projections = [c for c in before if c.lead == tuple(stream)]
    fused = (len(projections) == 2 and projections[0].module.out_features > hidden
             and projections[1].module.out_features == hidden)
    if len(projections) != 4 and not fused:
        raise NotImplementedError(_unsupported(model_type, (
            "expected the attention projections as 4 Linears (query, key, value, output) or 2 "
            "(a fused query-key-value Linear and the output), found "
            f"{[c.name for c in projections]}")))
    if fused:
        return tuple(c.name for c in projections)           # as called: query-key-value, output
    defined = [n for n, _ in layer.named_modules()]
    return tuple(sorted((c.name for c in projections), key=defined.index))


def _check_layers(layers: nn.ModuleList, arch: Arch, model_type) -> None:
    """Every layer has the same Linears with matching FFN widths, and no two share a weight."""
    for i, layer in enumerate(layers):
        for path in (arch.ffn_in, arch.ffn_out, *arch.attention, *([arch.ffn_gate] if arch.ffn_gate else [])):
            try:
                module = layer.get_submodule(path)
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear):
                raise NotImplementedError(_unsupported(model_type, f"layer {i} has no Linear {path!r}"))
        width = ffn_width(layer, arch)
        if any(lin.out_features != width * len(offsets) for _, _, lin, offsets in ffn_row_blocks(layer, arch)):
            raise NotImplementedError(_unsupported(model_type, f"layer {i}'s FFN widths differ"))
    total = sum(1 for layer in layers for _ in layer.parameters())
    if total != len(list(layers.parameters())):  # parameters() counts a shared tensor once
        raise NotImplementedError(_unsupported(model_type, SHARED_WEIGHTS.format(
            "the same parameter appears in more than one layer")))


def _check_exact(layer: nn.Module, arch: Arch, trace: _Trace, model_type) -> None:
    """Compression's slicing with every neuron kept must reproduce layer 0 bit for bit: proof
    that the FFN paths are the Linears the layer really uses, biases and all."""
    from .compression import slice_ffn  # compression imports this module

    twin = copy.deepcopy(layer).eval()
    width = ffn_width(twin, arch)
    device = next(twin.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        slice_ffn(twin, arch, torch.arange(width, device=device))  # new Linears draw an init
        out = _first_tensor(twin(*trace.args, **trace.kwargs))
    if not torch.equal(out, trace.output):
        raise NotImplementedError(_unsupported(model_type, (
            f"rebuilding its FFN ({', '.join(p for _, p, _, _ in ffn_row_blocks(layer, arch))}, "
            f"{arch.ffn_out}) with all neurons kept changed "
            "the layer's output, so compression would not be exact")))
