"""Every supported model family, end to end, on a tiny random-init model built offline.

Each family of ``fedpft_lite.arch.supported_families()`` (one row of the README's "Supported model
families" table) goes through what FedPFT does to it: its Arch is found (the table, or discovery
from the module structure), the sub-FM at keep 1.0 and every FFN rebuilt with all neurons kept
give the FM's logits bit for bit, LoRA lands on the four attention projections of every layer
and nowhere else, one FedAvg round of two clients trains the proxy, and plug-back into the FM is
exact at keep 1.0 (for FedPFT's sub-FM and for FedOT's emulator at its identity setting). A
compressed sub-FM saves and reloads. Decoders (Llama, Qwen2/3, Mistral, Gemma: gated FFNs; Phi;
Phi-3) and ModernBERT (fused query-key-value and gate-up Linears) go through the same checks. ALBERT (shared layers) and mixture-of-experts FFNs (Qwen2-MoE) are
refused with the reason. Hidden 32, 4 layers, FFN 64: the whole file runs in seconds.
"""
import copy
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

from fedpft_lite.aggregation import fedavg
from fedpft_lite.arch import (ARCHITECTURES, arch_of, attention_module_names, discover_arch,
                              ffn_linears, get_layers, supported_families)
from fedpft_lite.cli import main
from fedpft_lite.compression import compress_ffn, slice_ffn
from fedpft_lite.emulator import build_emulator
from fedpft_lite.lora import add_lora, load_trainable_state, plug_back, trainable_state
from fedpft_lite.models import FMClassifier, default_pooling, linearise_conv1d, uses_token_types
from fedpft_lite.training import local_train

README = Path(__file__).resolve().parents[1] / "README.md"
NUM_LAYERS, NUM_LABELS = 4, 3

_TEXT = dict(vocab_size=100, max_position_embeddings=64, hidden_size=32, num_hidden_layers=4,
             num_attention_heads=2, intermediate_size=64)
_IMAGE = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
              image_size=16, patch_size=8, num_channels=3)
_ROBERTA = dict(_TEXT, type_vocab_size=1)
_DECODER = dict(_TEXT, num_key_value_heads=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # as released: one segment type, unlike the config default

#: The config of each family's tiny model: the family's own defaults, shrunk, plus what makes it
#: look like its released checkpoints where that changes the layer's structure.
TINY_CONFIGS = {
    "bert": _TEXT,
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "camembert": _ROBERTA,
    "distilbert": dict(vocab_size=100, max_position_embeddings=64, dim=32, n_layers=4, n_heads=2,
                       hidden_dim=64),
    "electra": dict(_TEXT, embedding_size=16),             # ELECTRA projects smaller embeddings
    "ernie": _TEXT,
    "mpnet": _TEXT,
    # DeBERTa-v3's disentangled attention: its q/k projections also see relative positions
    "deberta-v2": dict(_TEXT, relative_attention=True, pos_att_type=["p2c", "c2p"],
                       share_att_key=True, position_buckets=8, norm_rel_ebd="layer_norm",
                       position_biased_input=False, max_relative_positions=-1),
    "data2vec-text": _ROBERTA,
    "vit": _IMAGE,
    "deit": _IMAGE,
    "beit": dict(_IMAGE, use_relative_position_bias=True, layer_scale_init_value=0.1,
                 use_mean_pooling=True),
    "dinov2": dict(_IMAGE, mlp_ratio=2, layerscale_value=0.5),   # FFN width = 2 x hidden = 64
    "data2vec-vision": dict(_IMAGE, use_relative_position_bias=True, use_mean_pooling=True),
    # decoder language models: gated FFNs (gate, up, down) but Phi's; grouped-query attention
    # (one key / value head for two query heads) where the family has it
    "llama": _DECODER,
    "qwen2": _DECODER,
    "qwen3": dict(_DECODER, head_dim=16),
    "mistral": _DECODER,
    "gemma": dict(_DECODER, head_dim=16),
    "phi": _TEXT,
    # fused Linears: query-key-value in one (LoRA adapts it whole), gate and up in one
    "phi3": _DECODER,
    "modernbert": dict(_DECODER, num_key_value_heads=None, cls_token_id=1, sep_token_id=2,
                       global_attn_every_n_layers=2, local_attention=4),
    # GPT-2: transposed "Conv1D" projections (turned into nn.Linear by FMClassifier), fused c_attn
    "gpt2": dict(vocab_size=100, n_positions=64, n_embd=32, n_layer=4, n_head=2, n_inner=64,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2),
}
FAMILIES = sorted(TINY_CONFIGS)
DECODERS = ("gemma", "gpt2", "llama", "mistral", "phi", "phi3", "qwen2", "qwen3")
GATED = ("gemma", "llama", "mistral", "qwen2", "qwen3")      # gate and up as two Linears
FUSED = ("modernbert", "phi3")                               # gate and up in one Linear
FUSED_QKV = ("gpt2", "modernbert", "phi3")                   # query, key and value in one Linear


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def tiny_backbone(family: str, **changes):
    """A random-init ``AutoModel`` of the family, the same weights every call."""
    config = AutoConfig.for_model(family, **{**TINY_CONFIGS.get(family, {}), **changes})
    torch.manual_seed(0)
    return AutoModel.from_config(config)


def tiny_fm(family: str) -> FMClassifier:
    backbone = tiny_backbone(family)
    return FMClassifier(backbone, NUM_LABELS, pooling=default_pooling(backbone.config)).eval()


def batches(fm: FMClassifier, n: int, seed: int) -> list[dict]:
    """n labelled batches of 2 for the family's modality. Text batches have a padded row and
    segment ids (used only where the family has learned them: ``uses_token_types``)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        labels = torch.randint(0, NUM_LABELS, (2,), generator=g)
        if fm.modality == "image":
            out.append({"pixel_values": torch.randn(2, 3, 16, 16, generator=g), "labels": labels})
            continue
        ids = torch.randint(3, 100, (2, 9), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        types = torch.zeros_like(ids)
        types[:, 5:] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
                    "labels": labels})
    return out


@torch.no_grad()
def logits(model, batch) -> torch.Tensor:
    model.eval()
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def fedavg_round(proxy, global_state: dict, clients: list[list[dict]]) -> dict:
    """One FedAvg round as the engine runs it (``federated.client_update`` without a config):
    each client loads the global state, trains locally, sends its state; the server averages
    them weighted by example counts."""
    states, sizes = [], []
    for k, client_batches in enumerate(clients):
        load_trainable_state(proxy, global_state)
        torch.manual_seed(k)  # dropout masks
        res = local_train(proxy, client_batches, lr=5e-2)
        states.append(trainable_state(proxy))
        sizes.append(res["examples"])
    return fedavg(states, sizes)


def layer_paths(names, arch) -> set[str]:
    """The paths inside a transformer layer of full parameter / module names."""
    head = re.compile(rf"^backbone\.{re.escape(arch.layers)}\.\d+\.")
    return {head.sub("", n) for n in names if head.match(n)}


# -- which families, and how each is found ---------------------------------------------------------
def test_supported_families_are_exactly_the_tested_ones():
    assert set(supported_families()) == set(FAMILIES)
    assert len(FAMILIES) == 24
    for family, how in supported_families().items():
        assert how == ("table" if family in ARCHITECTURES else "discovered")


@pytest.mark.parametrize("family", FAMILIES)
def test_arch_is_found_and_agrees_with_discovery(family):
    """The table answers for its families (unchanged behaviour); discovery reads the same Arch
    off the module structure for them too, which is how the discovered ones are trusted."""
    fm = tiny_fm(family)
    arch = arch_of(fm)
    assert arch.modality == ("image" if "pixel_values" == fm.backbone.main_input_name else "text")
    if family in ARCHITECTURES:
        assert arch is ARCHITECTURES[family]
    fresh = tiny_backbone(family)
    linearise_conv1d(fresh)              # as FMClassifier does first (GPT-2's Conv1D; else nothing)
    rng = torch.get_rng_state()
    assert discover_arch(fresh) == arch
    assert torch.equal(torch.get_rng_state(), rng), "discovery must not move the global RNG"
    layers = get_layers(fm.backbone)
    assert len(layers) == NUM_LAYERS
    for layer in layers:
        w_in, w_out = ffn_linears(layer, arch)
        fused = 2 if arch.fused_gate else 1
        assert (w_in.in_features, w_in.out_features, w_out.out_features) == (32, 64 * fused, 32)
        assert all(isinstance(layer.get_submodule(p), torch.nn.Linear) for p in arch.attention)
        assert len(arch.attention) == (2 if family in FUSED_QKV else 4)
    post_ln = family in ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra",
                         "ernie", "mpnet", "deberta-v2", "data2vec-text")
    assert (arch.ffn_norm is not None) == post_ln  # the vision families and decoders are pre-LN
    assert arch.gated == (family in GATED + FUSED) and arch.fused_gate == (family in FUSED)


@pytest.mark.parametrize("family", FAMILIES)
def test_compress_lora_fedavg_plug_back_exact_at_keep_one(family):
    fm = tiny_fm(family)
    arch = arch_of(fm)
    data = batches(fm, 5, seed=1)
    probe, clients = data[0], [data[1:3], data[3:5]]
    ref = logits(fm, probe)
    assert ref.shape == (2, NUM_LABELS)

    # Module 1 at keep 1.0 is the FM; every FFN rebuilt by slicing with all neurons kept too.
    sub = compress_ffn(fm, keep_ratio=1.0)
    assert torch.equal(logits(sub, probe), ref)
    rebuilt = copy.deepcopy(fm)
    for layer in get_layers(rebuilt.backbone):
        slice_ffn(layer, arch, torch.arange(64))
    assert torch.equal(logits(rebuilt, probe), ref)
    small = compress_ffn(fm, keep_ratio=0.25)
    assert small.structure["ffn_widths"] == [64, 16, 16, 64]
    assert logits(small, probe).shape == (2, NUM_LABELS)

    # LoRA: A and B on the attention projections of every layer (four, or a fused q-k-v and the
    # output), nothing else in the layers.
    add_lora(sub)
    lora = [n for n, p in sub.named_parameters() if p.requires_grad and "lora_" in n]
    assert len(lora) == 2 * len(arch.attention) * NUM_LAYERS
    assert {p.split(".lora_")[0] for p in layer_paths(lora, arch)} == set(arch.attention)
    assert len(attention_module_names(sub.backbone)) == len(arch.attention) * NUM_LAYERS

    # One FedAvg round, then plug-back: the FM with the averaged state is the proxy, bit for bit.
    state = fedavg_round(sub, trainable_state(sub), clients)
    load_trainable_state(sub, state)
    fm_lora = plug_back(add_lora(copy.deepcopy(fm)), state)
    assert torch.equal(logits(fm_lora, probe), logits(sub, probe))
    assert not torch.equal(logits(fm_lora, probe), ref), "the round should have changed the model"
    assert any(t.abs().sum() > 0 for n, t in state.items() if "lora_B" in n)


@pytest.mark.parametrize("family", FAMILIES)
def test_fedot_emulator_plugs_back_exactly_at_its_identity_setting(family):
    """FedOT's proxy keeping every layer (1 adapter each end, 2 emulator layers of 2): its
    renumbering and adapter-only LoRA go through the family's Arch and back exactly."""
    fm = tiny_fm(family)
    data = batches(fm, 3, seed=2)
    em = build_emulator(fm, num_adapter_layers=1, emulator_layers=2)
    assert em.structure["layer_map"] == [0, 1, 2, 3]
    add_lora(em)
    state = fedavg_round(em, trainable_state(em), [data[1:2], data[2:3]])
    load_trainable_state(em, state)
    fm_lora = plug_back(add_lora(copy.deepcopy(fm)), state)
    assert torch.equal(logits(fm_lora, data[0]), logits(em, data[0]))


@pytest.mark.parametrize("family", FAMILIES)
def test_compressed_sub_fm_saves_and_reloads(family, tmp_path):
    """``from_pretrained`` rebuilds the family from its config, finds its Arch again on the
    full-width model, then narrows the FFNs to the saved widths."""
    fm = tiny_fm(family)
    sub = compress_ffn(fm, keep_ratio=0.5)
    again = FMClassifier.from_pretrained(sub.save_pretrained(tmp_path / family))
    probe = batches(fm, 1, seed=3)[0]
    assert again.structure == sub.structure
    assert torch.equal(logits(again, probe), logits(sub, probe))


def test_segment_ids_and_pooling_follow_the_family():
    """Segment ids reach only backbones that learned two of them; BEiT-style families pool the
    mean of their tokens, as their own classifiers do; decoders pool their last real token."""
    with_types = {f for f in FAMILIES if f not in ("deit", "vit", "beit", "dinov2", "data2vec-vision")
                  and uses_token_types(tiny_backbone(f))}
    assert with_types == {"bert", "electra", "ernie"}
    pooled = {f: default_pooling(AutoConfig.for_model(f, **TINY_CONFIGS[f])) for f in FAMILIES}
    assert {f for f, how in pooled.items() if how == "mean"} == {"beit", "data2vec-vision"}
    assert {f for f, how in pooled.items() if how == "last"} == set(DECODERS)   # causal attention


# -- what is refused, and how clearly ---------------------------------------------------------------
def test_albert_shared_layers_are_refused_with_the_reason():
    backbone = tiny_backbone("albert", vocab_size=100, max_position_embeddings=64, hidden_size=32,
                             num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                             embedding_size=16)
    with pytest.raises(NotImplementedError) as info:
        FMClassifier(backbone, NUM_LABELS)
    msg = str(info.value)
    assert "'albert'" in msg and "share weights" in msg and "ALBERT" in msg
    assert "4 layers computed by 1 module" in msg
    assert "Use an encoder with separate layers" in msg
    assert all(family in msg for family in FAMILIES)


def test_dinov2_giants_swiglu_ffn_is_found_as_a_gated_ffn():
    """DINOv2 giant's SwiGLU FFN (gate, up, down), once refused: now its gate is part of each
    neuron, and compression at keep 1.0 is exact as for every other family."""
    backbone = tiny_backbone("dinov2", use_swiglu_ffn=True)
    fm = FMClassifier(backbone, NUM_LABELS).eval()
    arch = arch_of(fm)
    assert arch.gated and (arch.ffn_gate, arch.ffn_in, arch.ffn_out) == ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    probe = batches(fm, 1, seed=4)[0]
    assert torch.equal(logits(compress_ffn(fm, keep_ratio=1.0), probe), logits(fm, probe))
    widths = compress_ffn(fm, keep_ratio=0.25).structure["ffn_widths"]
    assert widths[1] == round(widths[0] / 4) and widths[0] == widths[-1]


def test_a_mixture_of_experts_ffn_is_refused_with_the_reason():
    """Qwen2-MoE: each layer routes tokens to several expert FFNs, so there is no single FFN whose
    neurons saliency could rank; the message says so and names what to use instead."""
    backbone = tiny_backbone("qwen2_moe", **_DECODER, num_experts=4, num_experts_per_tok=2,
                             moe_intermediate_size=32, shared_expert_intermediate_size=64)
    with pytest.raises(NotImplementedError) as info:
        FMClassifier(backbone, NUM_LABELS)
    msg = str(info.value)
    assert "'qwen2_moe'" in msg and "mixture of experts" in msg and "qwen2" in msg


# -- where the families are listed --------------------------------------------------------------------
def test_cli_info_lists_every_family_and_how_it_is_found(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network probe
    assert main(["info"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("model families"))
    for family, how in supported_families().items():
        assert f"{family} ({how})" in line


def test_readme_table_has_one_row_per_tested_family():
    text = README.read_text()
    section = text.split("### Supported model families", 1)[1].split("\n#", 1)[0]
    rows = [l.split("|")[1:-1] for l in section.splitlines() if l.startswith("| `")]
    families = {cells[0].strip().strip("`"): cells[2].strip() for cells in rows}
    assert families == supported_families()
