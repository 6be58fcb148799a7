"""The three methods of the paper and three neighbours (FedOT-KD, FedBiOT, CRaSh) as a few
hooks on one round loop (``federated.py``).

=============  ==========================  ======================  ==========================
method         proxy sent to clients       LoRA on                 server work
=============  ==========================  ======================  ==========================
FedPETuning    the FM itself (upper bound) all layers              none
FedOT          emulator: adapters + drop   the adapter layers      none
FedPFT         sub-FM: FFN compressed      all layers              alignment (before / every t)
FedOT-KD       FedOT's emulator, distilled the adapter layers      emulator distillation (before)
FedBiOT        FedOT's emulator, distilled the adapter layers      distillation (before / every round)
CRaSh          layers clustered, tied      the adapter layers      none (CKA clustering, no training)
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
from .neighbourhood import build_crash_proxy, distil_emulator, emulator_bytes, emulator_parameters


class Method:
    name = "method"

    def build_proxy(self, fm, cfg, public=None):
        """The model clients hold and train (before LoRA is added). ``public``: a function
        returning a fixed-order loader over the server's public data (without the examples kept
        aside for distances), for a proxy built from data (CRaSh); the others ignore it."""
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

    def build_proxy(self, fm, cfg, public=None):
        proxy = copy.deepcopy(fm)
        proxy.structure = {"method": "fedpetuning"}
        return proxy


class FedOT(Method):
    """Offsite-tuning in FL: adapters at both ends trained (via LoRA), middle emulated by layer drop."""
    name = "fedot"

    def build_proxy(self, fm, cfg, public=None):
        return build_emulator(fm, cfg.adapter_layers, cfg.emulator_layers, cfg.keep_ratio)

    def lora_layers(self, proxy):
        return adapter_layers(proxy)


class FedPFT(Method):
    """Sub-FM by FFN saliency compression; alignment hooks filled by ``fedpft_lite.alignment``."""
    name = "fedpft"

    def build_proxy(self, fm, cfg, public=None):
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


class FedOTKD(FedOT):
    """FedOT with offsite-tuning's *distilled* emulator (Xiao et al. 2023, "Offsite-Tuning:
    Transfer Learning without Full Model", Sec. 3.2 / their ``get_kd_loss``).

    Faithful: the emulator starts as FedOT's uniform layer drop of the middle, and before FL
    the server distils it on public data with the FM as teacher: all weights of the emulator's
    layers are trained (the adapters frozen) so that the emulator's output matches the output
    of the FM's whole middle under ``mean((T - S)^2) / mean(T^2)``; then clients train LoRA on
    the adapters exactly as in FedOT, and the adapters plug back into the FM.

    Our reading: offsite-tuning distils on the Pile with a language-modelling term beside the
    hidden-state term; our classifiers have no LM head, so only the hidden-state term, on the
    task's public split; the server's budget is FedPFT's layer-level one (``cfg.layer_level_steps``
    AdamW steps at ``cfg.align_lr``, batch 2 x ``batch_size``), so both spend the same on
    distillation. Adapters sit at both ends (FedOT's layout, ``adapter_layers`` per end). The
    distilled emulator ships once, as FedOT's does, so per-round bytes equal FedOT's."""
    name = "fedot-kd"

    def build_proxy(self, fm, cfg, public=None):
        proxy = super().build_proxy(fm, cfg)
        proxy.structure["method"] = self.name
        return proxy

    def before_rounds(self, server) -> dict:
        return distil_emulator(server, server.cfg.layer_level_steps, (0xE41, 0))

    def server_owned_parameters(self, server) -> dict:
        """The emulator's middle layers: distillation changed them, and a resumed run, which
        skips the pre-FL work, must get them back from the checkpoint."""
        return emulator_parameters(server.proxy)


class FedBiOT(FedOTKD):
    """FedBiOT (Wu et al., KDD 2024, "FedBiOT: LLM Local Fine-tuning in Federated Learning
    without Full Model"): a bi-level problem, clients train the adapter on their data, the
    server re-aligns the emulator to the FM on public data every round.

    Faithful, from its public code (``federatedscope/llm/offsite_tuning/fedot.py``: the server
    pre-aligns ``initial_update_rounds`` times in ``__init__`` and calls ``_emulator_fine_tuning``
    at the start of every new round; ``federatedscope/llm/trainer/bilevel_OT_trainer.py``): the
    emulator is a uniform layer drop, pre-aligned before FL (as :class:`FedOTKD`) and re-aligned
    after every FedAvg with the adapters frozen and all emulator weights trained; the loss is
    the normalised L2 of the emulator's output against the FM middle's output (``sim_loss:
    'l2'``, ``layerwise_distill: False``, its defaults), the teacher carrying the *current*
    aggregated adapter (its ``raw_model.adapter.load_state_dict(ctx.model.adapter...)``).

    Our reading: (1) the logit-KL term (``kd_loss_weight``) is left out, as in its shipped
    ``baseline/fedot/*.yaml`` (``kd_loss_weight: 0.0``); (2) its client loss adds a proximal
    term ``lm_loss_weight * ||adapter - adapter at round start||^2`` (merged LoRA); ours does not
    (plain local training, as every method here): a client-side hook left for later; (3) no
    re-alignment after the last round (it could not reach the evaluated FM, as for FedPFT);
    (4) the re-aligned emulator is shipped to every client sampled next round and counted in
    ``bytes_down`` (its simulation shares one model object between server and clients, so it
    never counts this); (5) steps: ``cfg.layer_level_steps`` before FL, ``cfg.align_steps`` per
    round (its defaults: 50 x 10 and 10), lr ``cfg.align_lr``."""
    name = "fedbiot"

    def after_aggregation(self, server, rnd: int, client_stats: list) -> dict:
        if not 1 <= rnd < server.cfg.rounds:
            return {}
        log = distil_emulator(server, server.cfg.align_steps, (0xE42, rnd), rnd=rnd)
        server.log.setdefault("emulator_alignment", []).append(
            {"round": rnd, "distance_before": log["distance_before"], "distance_after": log["distance_after"]})
        return {"aligned": True, "align_loss_first": log["loss_curve"][0],
                "align_loss_last": log["loss_curve"][-1],
                "align_distance_before": log["distance_before"], "align_distance_after": log["distance_after"],
                "bytes_down_extra": emulator_bytes(server.proxy) * server.cfg.clients_per_round}


class CRaSh(Method):
    """CRaSh (Zhang et al., EMNLP 2023, "CRaSh: Clustering, Removing, and Sharing Enhance
    Fine-tuning without Full Large Language Model"): a training-free emulator.

    Faithful, from its public code (``TsinghuaC3I/CRaSh``): *clustering* as ``layer_iter_cluster``
    in ``utils/main.py``: one cluster per layer, repeatedly merge the adjacent pair whose facing
    layers (last of the left, first of the right) have the highest linear CKA of their
    representations, until ``num_layer_cluster`` remain; each cluster keeps its middle layer
    (``cluster_centers``: ``cluster[len // 2]``). *Removing and sharing* as the ``repeat``
    student strategy of ``src/run_train_custom.py``: the proxy keeps the FM's depth, and each
    removed layer's slot holds the *same module object* as a kept layer (weights tied, never
    copied: ``new_layers.append(layers[copy_idx])``), so clients hold only the kept layers'
    weights but run as many layer passes as the FM. LoRA on the adapter layers, as FedOT.

    Our reading: (1) a removed layer shares its own cluster's kept layer (the paper's picture);
    the code's ``repeat`` instead takes the *nearest* kept or trainable layer by index (ties to
    the right), which is the same layer except at some cluster borders; (2) only the middle is
    clustered, with ``adapter_layers`` whole adapter layers per end as in FedOT (its scripts
    choose trainable layers among the cluster centres, e.g. 0,5,18,23 of OPT-1.3b's 24);
    (3) ``emulator_layers`` clusters (default: as many as FedOT keeps, so both hold the same
    weights); (4) representations: each layer's output averaged over real tokens (its "mean"
    pooling) of up to 512 examples of the server's public split (it uses 512 task examples)."""
    name = "crash"

    def build_proxy(self, fm, cfg, public=None):
        if public is None:
            raise ValueError("CRaSh clusters the FM's layers on public data; none was given")
        return build_crash_proxy(fm, public(), cfg.adapter_layers, cfg.emulator_layers, cfg.keep_ratio)

    def lora_layers(self, proxy):
        return adapter_layers(proxy)


def is_alignment_round(rnd: int, t: int, rounds: int) -> bool:
    """Rounds t, 2t, 3t, ... (1-based) before the last one.

    Neuron-level alignment changes only the sub-FM's FFNs, which reach the evaluated FM through
    the clients' training in *later* rounds (the full FM never carries sub-FFN weights). So an
    alignment after the last round's aggregation could not change the result; the authors' code
    likewise sets alignment up only when t < rounds. A run with no alignment round although
    alignment is on is refused by ``FedConfig.validate`` (the trap of silently never aligning)."""
    return 1 <= rnd < rounds and rnd % t == 0


METHOD_CLASSES = {"fedpetuning": FedPETuning, "fedot": FedOT, "fedpft": FedPFT,
                  "fedot-kd": FedOTKD, "fedbiot": FedBiOT, "crash": CRaSh}


def get_method(name: str) -> Method:
    if name not in METHOD_CLASSES:
        raise ValueError(f"unknown method {name!r}; use one of {sorted(METHOD_CLASSES)}")
    return METHOD_CLASSES[name]()
