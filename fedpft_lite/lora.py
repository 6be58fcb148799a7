"""What clients train and send: LoRA on the attention projections + the classification head.

The *trainable state* is a plain ``{name: tensor}`` dict of exactly those parameters, named as in
the **full FM** (the canonical naming). The server keeps it, FedAvg averages it, and plug-back
loads it into the FM. Because FedPFT's sub-FM has the FM's layers and attention shapes, its
names are the FM's; a FedOT emulator renumbers its layers, so its names go through
``structure["layer_map"]`` on the way out (``to_fm_names``) and back (``to_proxy_names``).

LoRA layers come from peft (``inject_adapter_in_model``), targeted by *full* module paths: a
suffix such as ``"dense"`` would also match BERT's FFN linears.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from .arch import arch_of, attention_module_names
from .models import FMClassifier

HEAD_PREFIX = "classifier."


@dataclass
class LoraSettings:
    """The paper's LoRA settings: r = 8, alpha = 48, dropout 0.1, no bias."""
    r: int = 8
    alpha: int = 48
    dropout: float = 0.1


def add_lora(model: FMClassifier, settings: LoraSettings = LoraSettings(), layers=None,
             seed: int = 0) -> FMClassifier:
    """Inject LoRA into the attention projections of ``layers``, in place. By default: all
    layers, except for a FedOT emulator, where only its adapter layers are trained.

    Afterwards only LoRA's A/B matrices and the classifier head have ``requires_grad`` (a causal
    language model has no trainable head: LoRA only, its LM head stays frozen); the
    backbone (embeddings, attention weights, FFN, LayerNorms) is frozen. LoRA's A matrices are
    initialised from ``seed`` (B starts at zero, so the model's outputs are unchanged).
    """
    if any("lora_" in n for n, _ in model.named_parameters()):
        raise ValueError("this model already has LoRA layers")
    if layers is None and "adapters" in getattr(model, "structure", {}):
        layers = model.structure["adapters"]
    targets = attention_module_names(model.backbone, prefix="backbone.", layer_indices=layers)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none")
    device = next(model.parameters()).device
    fork = [device] if device.type == "cuda" else []
    was_training = model.training
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, model)
    model.train(was_training)  # new LoRA dropout modules start in training mode; follow the model
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or name.startswith(HEAD_PREFIX))
    model.lora_settings = settings
    return model


def trainable_state(model: nn.Module, fm_names: bool = True) -> "OrderedDict[str, torch.Tensor]":
    """A detached CPU copy of the trainable parameters (LoRA + head), in FM naming by default."""
    state = OrderedDict((n, p.detach().to("cpu", copy=True)) for n, p in model.named_parameters()
                        if p.requires_grad)
    if not state:
        raise ValueError("the model has no trainable parameters: call add_lora() first")
    layer_map = getattr(model, "structure", {}).get("layer_map")
    return to_fm_names(state, model, layer_map) if fm_names and layer_map else state


def _renumber(state, model, mapping: dict[int, int], drop_unmapped: bool = False):
    """Rewrite the layer index in every name through ``mapping``; a layer it lacks raises, or
    with ``drop_unmapped`` its entries are left out."""
    arch = arch_of(model.backbone)
    pattern = re.compile(rf"^backbone\.{re.escape(arch.layers)}\.(\d+)\.")
    out = OrderedDict()
    for name, t in state.items():
        m = pattern.match(name)
        if m:
            i = int(m.group(1))
            if i not in mapping:
                if drop_unmapped:
                    continue
                raise KeyError(f"{name}: layer {i} has no counterpart in the other model")
            name = f"backbone.{arch.layers}.{mapping[i]}.{name[m.end():]}"
        out[name] = t
    return out


def to_fm_names(state, model, layer_map):
    """Proxy layer indices -> FM layer indices (emulator adapters)."""
    return _renumber(state, model, dict(enumerate(layer_map)))


def to_proxy_names(state, model, layer_map):
    """FM layer indices -> proxy layer indices, keeping only layers the proxy has."""
    inverse = {fm_i: i for i, fm_i in enumerate(layer_map)}
    return _renumber(state, model, inverse, drop_unmapped=True)


@torch.no_grad()
def load_trainable_state(model: nn.Module, state: dict, fm_names: bool = True,
                         require_all: bool = True) -> None:
    """Copy ``state`` into the model's parameters, strictly.

    Every key must name an existing parameter with the same shape (a typo or a wrong layer index
    raises instead of being dropped, as a non-strict ``load_state_dict`` would). With
    ``require_all`` every trainable parameter of the model must be covered too.
    """
    layer_map = getattr(model, "structure", {}).get("layer_map")
    if fm_names and layer_map:
        state = to_proxy_names(state, model, layer_map)
    params = dict(model.named_parameters())
    missing_in_model = [k for k in state if k not in params]
    if missing_in_model:
        raise KeyError(f"{len(missing_in_model)} state keys do not exist in the model, e.g. "
                       f"{missing_in_model[:3]}; is it the same family, with LoRA added?")
    if require_all:
        uncovered = [n for n, p in params.items() if p.requires_grad and n not in state]
        if uncovered:
            raise KeyError(f"the state does not cover {len(uncovered)} trainable parameters, "
                           f"e.g. {uncovered[:3]}")
    for k, v in state.items():  # check everything first: never leave a model half-loaded
        if params[k].shape != v.shape:
            raise ValueError(f"{k}: shape {tuple(v.shape)} in the state, {tuple(params[k].shape)} in the model")
    for k, v in state.items():
        params[k].copy_(v.to(params[k].device, params[k].dtype))


def plug_back(fm: FMClassifier, state: dict) -> FMClassifier:
    """Load a proxy's trainable state (in FM naming) into the full FM, which must carry LoRA on
    all layers (``add_lora(fm)``). The FM's FFNs and other weights are never touched; layers the
    proxy did not train (a FedOT emulator's middle) keep B = 0, i.e. the FM's own function."""
    load_trainable_state(fm, state, fm_names=False, require_all=False)
    return fm


def state_bytes(state: dict) -> int:
    """Bytes of the tensors in a state: what one transfer of it costs."""
    return sum(t.numel() * t.element_size() for t in state.values())
