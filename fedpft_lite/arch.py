"""Architecture adapters: where each model family keeps its transformer layers, FFN and attention.

FedPFT only needs to know four things about a transformer encoder, per family:

* the list of transformer layers (so layer *i* of the sub-FM can match layer *i* of the FM);
* the two linears of each layer's FFN: ``ffn_in`` (up-projection, W_in, rows = neurons) and
  ``ffn_out`` (down-projection, W_out, columns = neurons);
* the LayerNorm applied right after the FFN's residual add, where the family has one (BERT-style
  post-LN layers do; pre-LN ViT does not): layer-level alignment may train it;
* the attention projections (query, key, value, output), which are LoRA's targets.

Paths are relative to the *backbone* (the ``AutoModel`` without any task head). To support a new
family, add one :class:`Arch` line to :data:`ARCHITECTURES` (print ``[n for n, _ in
backbone.named_modules()]`` to find the names).
"""
from __future__ import annotations

from dataclasses import dataclass

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


def arch_of(model_or_type) -> Arch:
    """The :class:`Arch` for a backbone, a wrapped classifier, a config or a ``model_type`` string."""
    model_type = model_or_type
    if not isinstance(model_or_type, str):
        config = getattr(model_or_type, "config", model_or_type)
        model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise NotImplementedError(
            f"model family {model_type!r} is not supported yet; supported: "
            f"{', '.join(sorted(ARCHITECTURES))}. To add one, add an Arch(...) line to "
            "fedpft_lite.arch.ARCHITECTURES naming its layer list, FFN linears and attention "
            "projections.")
    return ARCHITECTURES[model_type]


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
