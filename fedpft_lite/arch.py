"""Architecture adapters: where each model family keeps its transformer layers, FFN and attention.

FedPFT only needs to know four things about a transformer encoder, per family:

* the list of transformer layers (so layer *i* of the sub-FM can match layer *i* of the FM);
* the two linears of each layer's FFN: ``ffn_in`` (up-projection, W_in, rows = neurons) and
  ``ffn_out`` (down-projection, W_out, columns = neurons);
* the LayerNorm applied right after the FFN's residual add, where the family has one (BERT-style
  post-LN layers do; pre-LN ViT does not): layer-level alignment may train it;
* the attention projections (query, key, value, output), which are LoRA's targets.

Paths are relative to the *backbone* (the ``AutoModel`` without any task head). Two ways to know
them, tried in this order:

1. :data:`ARCHITECTURES`, an explicit table: instant, and the answer for families where reading
   the structure could be ambiguous. To pin a family, add one :class:`Arch` line (print
   ``[n for n, _ in backbone.named_modules()]`` to find the names).
2. :func:`discover_arch`, for any other Hugging Face encoder: it runs the first transformer layer
   once on a dummy input and reads the answer off what the layer actually called (which Linear
   fed which, which norm produced the layer's output), then checks the result by exactness.
   It refuses, with the reason and a way out, what FedPFT cannot treat one layer at a time:
   layers that share weights (ALBERT) and gated FFNs (three linears per neuron).
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
                       "data2vec-text", "deit", "beit", "dinov2", "data2vec-vision")

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
GATED_FFN = ("its FFN is gated ({}): each neuron has a gate row and an up row (two input "
             "Linears, or two halves of one) and a column of the output Linear, while FedPFT's "
             "saliency and slicing are defined for the two-linear FFN W_out act(W_in x). Use a "
             "checkpoint of the family with a plain MLP (e.g. DINOv2 base/large rather than "
             "giant, whose config sets use_swiglu_ffn), or extend Arch with the gate linear")


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
    trace = _trace_first_layer(backbone, layers[0], modality, model_type)
    ffn_in, ffn_out = _ffn(trace, model_type)
    arch = Arch(path, ffn_in.name, ffn_out.name, _post_ffn_norm(trace, ffn_out),
                _attention(layers[0], trace, ffn_in, model_type), modality)
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
    raise NotImplementedError(_unsupported(model_type, f"no single list of {depth} transformer "
                                           "layers made of nn.Linear modules was found "
                                           f"(candidates: {outermost or 'none'})"))


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


def _ffn(trace: _Trace, model_type) -> tuple[_Call, _Call]:
    """(ffn_in, ffn_out) calls: the layer's last Linear width -> hidden, and what fed it."""
    hidden = trace.output.shape[-1]
    into_hidden = [i for i, c in enumerate(trace.linears) if c.module.out_features == hidden]
    outs = [i for i in into_hidden if trace.linears[i].module.in_features != hidden]
    if not outs:
        raise NotImplementedError(_unsupported(model_type, "no FFN down-projection (a Linear from "
                                               f"a width other than hidden {hidden}) was found"))
    last = outs[-1]
    previous = max([i for i in into_hidden if i < last], default=-1)
    down = trace.linears[last]
    between = trace.linears[previous + 1:last]
    ups = [c for c in between if c.module.out_features == down.module.in_features]
    if len(ups) > 1 or any(c.module.out_features == 2 * down.module.in_features for c in between):
        names = ", ".join(c.name for c in between + [down])
        raise NotImplementedError(_unsupported(model_type, GATED_FFN.format(names)))
    if len(ups) != 1 or ups[0].module.in_features != hidden:
        raise NotImplementedError(_unsupported(model_type, f"the Linear feeding {down.name!r} "
                                               "was not found"))
    return ups[0], down


def _post_ffn_norm(trace: _Trace, ffn_out: _Call) -> str | None:
    """A norm called after the FFN whose output is the layer's output (post-LN), else None."""
    after = trace.calls[trace.calls.index(ffn_out) + 1:]
    for c in after:
        if "norm" in type(c.module).__name__.lower() and c.output is not None \
                and c.output.shape == trace.output.shape and torch.equal(c.output, trace.output):
            return c.name
    return None


def _attention(layer: nn.Module, trace: _Trace, ffn_in: _Call, model_type) -> tuple[str, ...]:
    """Query, key, value, output: the Linears on the token stream called before the FFN, in the
    order the family defines them (q, k, v, o in every family seen)."""
    stream = _first_tensor(trace.args, trace.kwargs).shape[:-1]
    before = trace.linears[:trace.linears.index(ffn_in)]
    projections = [c for c in before if c.lead == tuple(stream)]
    if len(projections) != 4:
        raise NotImplementedError(_unsupported(model_type, (
            "expected 4 attention projections (query, key, value, output) as separate Linears, "
            f"found {[c.name for c in projections]}; a fused query/key/value Linear gives LoRA no "
            "separate q/k/v to adapt")))
    defined = [n for n, _ in layer.named_modules()]
    return tuple(sorted((c.name for c in projections), key=defined.index))


def _check_layers(layers: nn.ModuleList, arch: Arch, model_type) -> None:
    """Every layer has the same Linears with matching FFN widths, and no two share a weight."""
    for i, layer in enumerate(layers):
        for path in (arch.ffn_in, arch.ffn_out, *arch.attention):
            try:
                module = layer.get_submodule(path)
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear):
                raise NotImplementedError(_unsupported(model_type, f"layer {i} has no Linear {path!r}"))
        w_in, w_out = ffn_linears(layer, arch)
        if w_in.out_features != w_out.in_features:
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
    width = ffn_linears(twin, arch)[0].out_features
    device = next(twin.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        slice_ffn(twin, arch, torch.arange(width, device=device))  # new Linears draw an init
        out = _first_tensor(twin(*trace.args, **trace.kwargs))
    if not torch.equal(out, trace.output):
        raise NotImplementedError(_unsupported(model_type, (
            f"rebuilding its FFN ({arch.ffn_in}, {arch.ffn_out}) with all neurons kept changed "
            "the layer's output, so compression would not be exact")))
