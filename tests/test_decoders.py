"""Decoder language models and gated FFNs (issue 28), on tiny random-init models: mechanics only.

No decoder weights install from the package registries, so these models are random-init configs
of each family's own class (hidden 32, 4 layers, FFN 64), never presented as pretrained. What is
checked: a gated FFN's neuron is its gate row, its up row and its down column everywhere FedPFT
cuts or moves neurons (saliency, slicing, neuron-level alignment, the patch a server ships);
the fused layout (gate and up halves of one Linear) the same; decoders pool their last real
token; and a folder holding a decoder runs FedPFT and FedOT from the command line.
(``tests/test_families.py`` puts every decoder family through the common checks.)
"""
import copy
import json

import pytest
import torch
import transformers

from fedpft_lite.alignment import aligned_neurons, apply_ffn_patch, ffn_patch
from fedpft_lite.arch import arch_of, ffn_row_blocks, ffn_width, get_layers
from fedpft_lite.cli import main
from fedpft_lite.compression import compress_ffn, layer_saliency, neuron_saliency, slice_ffn
from fedpft_lite.config import FedConfig
from fedpft_lite.federated import LocalClients, run_federated
from fedpft_lite.lora import add_lora, plug_back, trainable_state
from fedpft_lite.models import FMClassifier, load_foundation_model, pool


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    """A folder as a user would have one for a hub decoder: a 4-layer random-init Llama (SwiGLU
    FFN, one key / value head for two query heads) saved by transformers, with the MiniLM
    tokenizer (the only tokenizer installed offline; a decoder's own would do the same here)."""
    _, tok = load_foundation_model("minilm", num_labels=5)
    config = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4,
                                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                      max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


class FusedGatedFFN(torch.nn.Module):
    """The fused layout (DINOv2 SwiGLU, ModernBERT's ``Wi``): one Linear computes both halves."""

    def __init__(self, hidden=32, width=64):
        super().__init__()
        self.gate_up = torch.nn.Linear(hidden, 2 * width)
        self.down = torch.nn.Linear(width, hidden)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(torch.nn.functional.silu(gate) * up)


def fused_gated_fm() -> FMClassifier:
    """A tiny BERT whose FFNs are swapped for :class:`FusedGatedFFN` (hand-built: no installed
    family has this layout with separate q / k / v projections)."""
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    backbone = transformers.AutoModel.from_config(config)
    for layer in backbone.encoder.layer:
        ffn = FusedGatedFFN()
        layer.intermediate.forward = lambda x, ffn=ffn: ffn(x)  # replaces dense + activation
        layer.intermediate.add_module("ffn", ffn)
        layer.output.dense = torch.nn.Identity()
    backbone.config.model_type = "fused-gated-bert"
    return FMClassifier(backbone, 3).eval()


def text_batch(seed=0, vocab=100):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def logits(model, batch):
    return model.eval()(**batch).logits


# -- a gated FFN's neuron: gate row, up row, down column ------------------------------------------
def test_a_gated_neuron_is_its_gate_row_up_row_and_down_column(tiny_decoder):
    fm, _ = load_foundation_model(tiny_decoder, num_labels=3)
    arch = arch_of(fm)
    assert (arch.ffn_gate, arch.ffn_in, arch.ffn_out) == ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    layer = get_layers(fm.backbone)[1]
    gate, up, down = (layer.get_submodule(p) for p in (arch.ffn_gate, arch.ffn_in, arch.ffn_out))
    s = layer_saliency(layer, arch)
    assert torch.allclose(s, neuron_saliency(up, down, gate))
    assert torch.allclose(s, torch.sqrt(gate.weight.pow(2).sum(1) + up.weight.pow(2).sum(1)
                                        + down.weight.pow(2).sum(0)))
    assert not torch.allclose(s, neuron_saliency(up, down))          # the gate counts
    keep = torch.tensor([3, 10, 40])
    cut = copy.deepcopy(layer)
    slice_ffn(cut, arch, keep)
    assert torch.equal(cut.get_submodule(arch.ffn_gate).weight, gate.weight[keep])
    assert torch.equal(cut.get_submodule(arch.ffn_in).weight, up.weight[keep])
    assert torch.equal(cut.get_submodule(arch.ffn_out).weight, down.weight[:, keep])
    sub = compress_ffn(fm, keep_ratio=0.25)
    assert sub.structure["ffn_widths"] == [64, 16, 16, 64]
    for i in sub.structure["compressed_layers"]:                     # the most salient 16, by s_j
        want = torch.sort(torch.topk(layer_saliency(get_layers(fm.backbone)[i], arch), 16).indices).values
        assert sub.structure["kept_neurons"][str(i)] == want.tolist()


def test_a_fused_gate_and_up_linear_is_cut_by_both_halves():
    fm = fused_gated_fm()
    arch = arch_of(fm)
    assert arch.fused_gate and arch.ffn_gate is None and arch.ffn_in == "intermediate.ffn.gate_up"
    batch = text_batch()
    assert torch.equal(logits(compress_ffn(fm, keep_ratio=1.0), batch), logits(fm, batch))
    layer = get_layers(fm.backbone)[1]
    [(role, path, w, offsets)] = ffn_row_blocks(layer, arch)
    assert (role, offsets) == ("in", (0, 64)) and ffn_width(layer, arch) == 64
    keep = torch.tensor([1, 5, 63])
    cut = copy.deepcopy(layer)
    slice_ffn(cut, arch, keep)
    assert torch.equal(cut.get_submodule(path).weight, w.weight[torch.cat([keep, keep + 64])])
    assert torch.equal(cut.get_submodule(path).bias, w.bias[torch.cat([keep, keep + 64])])
    # the fused FFN cut to these neurons computes what the full one does with the others zeroed
    x = torch.randn(2, 5, 32)
    only = copy.deepcopy(layer.intermediate.ffn)
    with torch.no_grad():
        dropped = torch.ones(64, dtype=torch.bool)
        dropped[keep] = False
        only.down.weight[:, dropped] = 0
    torch.testing.assert_close(cut.intermediate.ffn(x), only(x))
    sub = compress_ffn(fm, keep_ratio=0.5)
    assert [ffn_width(l, arch) for l in get_layers(sub.backbone)] == sub.structure["ffn_widths"] == [64, 32, 32, 64]
    # a LoRA + head state trained anywhere plugs into the FM and the keep-1.0 proxy alike
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in trainable_state(add_lora(sub)).items()}
    full = plug_back(add_lora(copy.deepcopy(fm)), state)
    whole = plug_back(add_lora(compress_ffn(fm, keep_ratio=1.0)), state)
    assert torch.equal(logits(full, batch), logits(whole, batch))


# -- decoders pool their last real token ---------------------------------------------------------------
def test_last_token_pooling_finds_the_last_real_token_on_either_padding_side():
    h = torch.arange(2 * 5 * 1, dtype=torch.float).view(2, 5, 1)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert pool(h, right, "last").flatten().tolist() == [2.0, 9.0]
    assert pool(h, left, "last").flatten().tolist() == [4.0, 9.0]
    assert pool(h, None, "last").flatten().tolist() == [4.0, 9.0]


def test_a_decoder_classifies_from_its_last_token_and_padding_does_not_change_it(tiny_decoder):
    fm, _ = load_foundation_model(tiny_decoder, num_labels=3)
    assert fm.pooling == "last"
    batch = text_batch(vocab=1000)
    one = {k: v[1:, :6] for k, v in batch.items()}                      # row 1 without its padding
    torch.testing.assert_close(logits(fm, batch)[1:], logits(fm, one))
    first = FMClassifier(copy.deepcopy(fm.backbone), 3, pooling="cls").eval()
    changed = {"input_ids": one["input_ids"].clone(), "attention_mask": one["attention_mask"]}
    changed["input_ids"][0, 3] += 1                                      # a later token changes
    torch.testing.assert_close(logits(first, one), logits(first, changed))  # the first token sees none
    assert not torch.equal(logits(fm, one), logits(fm, changed))          # the last sees it


# -- both alignments on a gated sub-FM -------------------------------------------------------------------
def decoder_config(tiny_decoder, **kw):
    base = dict(model=tiny_decoder, task="bbc-news", max_train=96, max_test=32, max_public=64,
                num_clients=3, fraction=0.67, rounds=3, batch_size=16, lr=5e-3, lora_r=4, max_length=32,
                eval_batch_size=32, device="cpu", align_before=True, align_during=True, align_every=2,
                align_steps=3, align_before_steps=6)
    base.update(kw)
    return FedConfig(**base)


def test_neuron_level_alignment_moves_only_the_selected_gated_neurons_and_the_patch_carries_them(tiny_decoder):
    """After a FedPFT run with both alignments, the published sub-FM plus the FFN patch (gate rows,
    up rows, down columns of the aligned neurons) is the server's proxy; the gate rows travel."""
    class Publishing(LocalClients):
        def start(self, server):
            self.published = copy.deepcopy(server.proxy)

    clients, servers = Publishing(), []
    history = run_federated(decoder_config(tiny_decoder), progress=False, clients=clients,
                            on_round=lambda server, row: servers.append(server))
    assert [r["round"] for r in history if r["aligned"]] == [2]
    server = servers[-1]
    before = server.log["before_rounds"]
    assert before["layers"] == [1, 2] and sum(before["distance_after"]) < sum(before["distance_before"])
    neurons = aligned_neurons(server.log)
    assert set(neurons) == {1, 2} and all(0 < len(v) < 16 for v in neurons.values())
    patch = ffn_patch(server.proxy, neurons)
    assert {k.split(".", 1)[1] for k in patch} == {"index", "w_gate", "w_in", "w_out"}   # no biases in Llama
    aligned = {n.replace(".base_layer", ""): p for n, p in server.proxy.named_parameters()
               if "lora_" not in n and not n.startswith("classifier.")}

    def same(model):
        return all(torch.equal(p, aligned[n]) for n, p in model.named_parameters() if not n.startswith("classifier."))

    published = clients.published
    assert not same(published)
    without_gate = {k: v for k, v in patch.items() if not k.endswith(".w_gate")}
    partial = copy.deepcopy(published)
    apply_ffn_patch(partial, without_gate)
    assert not same(partial), "neuron-level alignment should have moved gate rows too"
    apply_ffn_patch(published, patch)
    assert same(published)


# -- the command line on a decoder folder ---------------------------------------------------------------
@pytest.mark.parametrize("method, extra", [
    ("fedpft", ["align_before=true", "align_during=true", "align_every=1", "align_steps=2",
                "align_before_steps=2"]),
    ("fedot", []),
])
def test_a_decoder_folder_runs_from_the_command_line(tiny_decoder, tmp_path, method, extra):
    out = tmp_path / method
    rc = main(["run", "--no-progress", "--output-dir", str(out), "--set", f"model={tiny_decoder}",
               "task=bbc-news", f"method={method}", "num_clients=2", "fraction=1.0", "rounds=2",
               "max_train=64", "max_test=32", "max_public=64", "batch_size=16", "max_length=32",
               "lora_r=4", "lr=5e-3", "device=cpu", "eval_batch_size=32", *extra])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert res["rounds"] == 2 and len(history) == 2 and 0 <= res["fm_accuracy"] <= 1
    assert all(0 <= r["fm_accuracy"] <= 1 for r in history)
    if method == "fedpft":
        assert res["log"]["before_rounds"]["layers"] and any(r["aligned"] for r in history)


@pytest.mark.parametrize("method", ["fedpetuning", "fedot-kd", "fedbiot", "crash"])
def test_the_other_methods_run_on_a_decoder(tiny_decoder, method):
    """The rest of the six on the same decoder: LoRA on the full model, and the three neighbours
    whose server distils or clusters on public data (emulators built from a decoder's layers)."""
    history = run_federated(decoder_config(tiny_decoder, method=method, rounds=2, align_before=False,
                                           align_during=False), progress=False)
    assert len(history) == 2 and all(0 <= r["fm_accuracy"] <= 1 for r in history)


def test_gpt2s_conv1d_becomes_a_linear_with_the_same_function():
    """GPT-2 stores each projection's weight as (in, out) in transformers' Conv1D; wrapped in
    FMClassifier, every one is an nn.Linear with the transposed weight, and the backbone computes
    what it did, to float rounding."""
    from transformers.pytorch_utils import Conv1D
    config = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2, n_inner=64)
    torch.manual_seed(0)
    backbone = transformers.AutoModel.from_config(config).eval()
    convs = {n: m.weight.detach().clone() for n, m in backbone.named_modules() if isinstance(m, Conv1D)}
    assert len(convs) == 2 * 4                                        # c_attn, c_proj, c_fc, mlp.c_proj
    batch = text_batch()
    with torch.no_grad():
        before = backbone(**batch).last_hidden_state
    fm = FMClassifier(backbone, 3).eval()
    assert not any(isinstance(m, Conv1D) for m in fm.modules())
    for name, weight in convs.items():
        assert torch.equal(fm.backbone.get_submodule(name).weight, weight.t())
    with torch.no_grad():
        after = fm.backbone(**batch, use_cache=False).last_hidden_state
    torch.testing.assert_close(after, before)
    assert fm.pooling == "last" and arch_of(fm).attention == ("attn.c_attn", "attn.c_proj")
