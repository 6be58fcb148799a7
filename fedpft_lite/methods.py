"""The three methods as a few hooks on one round loop (``federated.py``).

=============  ==========================  ======================  ==========================
method         proxy sent to clients       LoRA on                 server work
=============  ==========================  ======================  ==========================
FedPETuning    the FM itself (upper bound)  all layers              none
FedOT          emulator: adapters + drop   the adapter layers      none
FedPFT         sub-FM: FFN compressed      all layers              alignment (before / every t)
=============  ==========================  ======================  ==========================

Every method sends and receives the same kind of thing: the trainable state (LoRA + head) in
the FM's naming, so FedAvg and plug-back are shared. What the server changes in the proxy on its
own (FedPFT's alignment) a method names in ``server_owned_parameters``; checkpoints store just
that, so the round loop never asks which method it runs.
"""
from __future__ import annotations

import copy

from .alignment import alignable_parameters, layer_level_alignment, neuron_level_alignment
from .compression import compress_ffn
from .emulator import adapter_layers, build_emulator


class Method:
    name = "method"

    def build_proxy(self, fm, cfg):
        """The model clients hold and train (before LoRA is added)."""
        raise NotImplementedError

    def lora_layers(self, proxy):
        """Proxy layer indices that get LoRA (None = all)."""
        return None

    def before_rounds(self, server) -> dict:
        """Server work after the proxy is built, before round 1 (FedPFT: layer-level alignment)."""
        return {}

    def wants_activations(self, server, rnd: int) -> bool:
        """Should clients report activation statistics this round? (FedPFT's alignment rounds)."""
        return False

    def after_aggregation(self, server, rnd: int, client_stats: list) -> dict:
        """Server work after FedAvg (FedPFT: neuron-level alignment every t rounds).

        Returns extra history fields; ``bytes_down_extra`` counts what must ship to clients."""
        return {}

    def server_owned_parameters(self, server) -> dict:
        """The proxy parameters (name in ``server.proxy`` -> parameter) that the server itself
        may change, outside FedAvg (FedPFT: what alignment trains). Default: none.

        A checkpoint stores exactly these and a resumed run writes them back into the proxy it
        rebuilt: the rest of the proxy is rebuilt bit-identically from the FM and the config
        (``build_proxy`` is seeded), and the trainable state travels in the checkpoint's global
        state, so nothing else needs to be saved."""
        return {}


class FedPETuning(Method):
    """LoRA on the full FM: clients hold the whole FM. The accuracy upper bound."""
    name = "fedpetuning"

    def build_proxy(self, fm, cfg):
        proxy = copy.deepcopy(fm)
        proxy.structure = {"method": "fedpetuning"}
        return proxy


class FedOT(Method):
    """Offsite-tuning in FL: adapters at both ends trained (via LoRA), middle emulated by layer drop."""
    name = "fedot"

    def build_proxy(self, fm, cfg):
        return build_emulator(fm, cfg.adapter_layers, cfg.emulator_layers, cfg.keep_ratio)

    def lora_layers(self, proxy):
        return adapter_layers(proxy)


class FedPFT(Method):
    """Sub-FM by FFN saliency compression; alignment hooks filled by ``fedpft_lite.alignment``."""
    name = "fedpft"

    def build_proxy(self, fm, cfg):
        return compress_ffn(fm, cfg.keep_ratio, tuple(cfg.retained_layers), cfg.criterion, seed=cfg.seed)

    def before_rounds(self, server) -> dict:
        if not server.cfg.aligns_before:
            return {}
        return layer_level_alignment(server)

    def wants_activations(self, server, rnd: int) -> bool:
        return server.cfg.aligns_during and is_alignment_round(rnd, server.cfg.align_every, server.cfg.rounds)

    def after_aggregation(self, server, rnd: int, client_stats: list) -> dict:
        if not self.wants_activations(server, rnd):
            return {}
        return neuron_level_alignment(server, rnd, client_stats)

    def server_owned_parameters(self, server) -> dict:
        """With either alignment on: the compressed layers' FFNs and post-FFN LayerNorms
        (``alignment.alignable_parameters``), nothing else; the only proxy weights alignment
        touches. For MiniLM at keep 0.25 that is ~4.7 MB of the 76 MB sub-FM."""
        if not (server.cfg.aligns_before or server.cfg.aligns_during):
            return {}
        return alignable_parameters(server.proxy)


def is_alignment_round(rnd: int, t: int, rounds: int) -> bool:
    """Rounds t, 2t, 3t, ... (1-based) before the last one.

    Neuron-level alignment changes only the sub-FM's FFNs, which reach the evaluated FM through
    the clients' training in *later* rounds (the full FM never carries sub-FFN weights). So an
    alignment after the last round's aggregation could not change the result; the authors' code
    likewise sets alignment up only when t < rounds. A run with no alignment round although
    alignment is on is refused by ``FedConfig.validate`` (the trap of silently never aligning)."""
    return 1 <= rnd < rounds and rnd % t == 0


METHOD_CLASSES = {"fedpetuning": FedPETuning, "fedot": FedOT, "fedpft": FedPFT}


def get_method(name: str) -> Method:
    if name not in METHOD_CLASSES:
        raise ValueError(f"unknown method {name!r}; use one of {sorted(METHOD_CLASSES)}")
    return METHOD_CLASSES[name]()
