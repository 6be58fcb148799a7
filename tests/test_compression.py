"""FedPFT Module 1 (sub-FM by FFN compression), the FedOT emulator baseline, LoRA plug-back,
sizes, save/load and the hidden-state distance.

Real model and data where the claim is about them (all-MiniLM-L6-v2 + bbc-news sentences, loaded
once per module); tiny random-init configs for mechanics; one BERT-base-shaped random model for
the paper's size figures. Runs in well under a minute on 2 CPU cores.
"""
import copy
import re

import pytest
import torch
import transformers

from fedpft_lite import ARCHITECTURES, FMClassifier, load_foundation_model, load_task
from fedpft_lite.arch import arch_of, ffn_linears, get_layers
from fedpft_lite.compression import compress_ffn, compressed_layers, neuron_saliency
from fedpft_lite.data import encode, make_loader
from fedpft_lite.distance import hidden_state_distance
from fedpft_lite.emulator import adapter_layers, build_emulator, default_adapter_layers
from fedpft_lite.lora import add_lora, load_trainable_state, plug_back, trainable_state
from fedpft_lite.sizes import transformer_layer_parameters
from fedpft_lite.training import local_train

NUM_LABELS = 5  # bbc-news topics


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run many small ops; on a loaded 2-core machine OpenMP's thread barriers make
    2 threads up to 5x slower than 1 (measured: 88 s vs 20 s for this file). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minilm():
    model, tokenizer = load_foundation_model("minilm", num_labels=NUM_LABELS, seed=0)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def bbc():
    return load_task("bbc-news", max_train=64, max_test=64)


@pytest.fixture(scope="module")
def text_batch(minilm, bbc):
    """8 real bbc-news test sentences, padded (so the attention mask matters)."""
    _, tok = minilm
    return dict(tok(bbc["test"]["text"][:8], padding=True, truncation=True, max_length=64,
                    return_tensors="pt"))


@pytest.fixture(scope="module")
def test_loader(minilm, bbc):
    _, tok = minilm
    return make_loader(encode(bbc["test"], tok, max_length=64), tok, batch_size=32)


@pytest.fixture(scope="module")
def train_loader(minilm, bbc):
    _, tok = minilm
    small = bbc["train"].select(range(16))
    return make_loader(encode(small, tok, max_length=64), tok, batch_size=8, shuffle=True, seed=0)


@pytest.fixture(scope="module")
def bert_base():
    """A BERT-base-shaped random-init FM (hidden 768, 12 layers, 12 heads, FFN 3072)."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                  intermediate_size=3072)
    return FMClassifier(transformers.AutoModel.from_config(cfg), 2).eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _tiny_bert(num_layers=3, hidden=8, ffn=16):
    cfg = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=num_layers,
                                  num_attention_heads=2, intermediate_size=ffn, vocab_size=50,
                                  max_position_embeddings=32)
    return transformers.BertModel(cfg)


def _lora_params(model, layer: int | None = None):
    arch = arch_of(model.backbone)
    prefix = f"backbone.{arch.layers}.{layer}." if layer is not None else ""
    return {n: p for n, p in model.named_parameters() if "lora_" in n and n.startswith(prefix)}


# -- Module 1: sub-FM construction ---------------------------------------------------------------
def test_keep_ratio_one_reproduces_fm_logits(minilm, text_batch):
    fm, _ = minilm
    sub = compress_ffn(fm, keep_ratio=1.0).eval()
    assert compressed_layers(sub) == []
    assert sub.structure["ffn_widths"] == [1536] * 6
    ref, out = _logits(fm, text_batch), _logits(sub, text_batch)
    assert ref.shape == (8, NUM_LABELS)
    assert (ref - out).abs().max().item() < 1e-5


def _hand_built_fm():
    """Tiny BERT (3 layers, hidden 8, FFN 16); layer 1's FFN has known heavy neurons."""
    torch.manual_seed(0)
    fm = FMClassifier(_tiny_bert(), num_labels=3).eval()
    layer = get_layers(fm.backbone)[1]
    w_in, w_out = layer.intermediate.dense, layer.output.dense  # (16, 8) and (8, 16)
    unit = torch.ones(8) / 8 ** 0.5
    with torch.no_grad():
        w_in.weight.copy_(0.01 * torch.randn(16, 8))
        w_out.weight.copy_(0.01 * torch.randn(8, 16))
        w_in.bias.copy_(torch.arange(16.0) * 0.1)
        w_out.bias.copy_(-torch.arange(8.0) * 0.1)
        w_in.weight[2] = 5.0 * unit             # s ~ 5.0   (W_in only)
        w_out.weight[:, 5] = 4.0 * unit         # s ~ 4.0   (W_out only)
        w_in.weight[14] = 3.0 * unit            # s ~ 4.24  (both)
        w_out.weight[:, 14] = 3.0 * unit
        w_in.weight[11] = 2.5 * unit            # s ~ 3.54  (both: beats each decoy below)
        w_out.weight[:, 11] = 2.5 * unit
        w_out.weight[:, 9] = 3.3 * unit         # decoy, s ~ 3.3: top-4 by W_out alone
        w_in.weight[7] = 3.2 * unit             # decoy, s ~ 3.2: top-4 by W_in alone
    return fm


def test_saliency_keeps_heaviest_neurons_hand_built():
    fm = _hand_built_fm()
    fm_layer = get_layers(fm.backbone)[1]
    w_in, w_out = fm_layer.intermediate.dense, fm_layer.output.dense
    expected = [2, 5, 11, 14]  # ascending, the original order

    s = neuron_saliency(w_in, w_out)
    manual = torch.sqrt((w_in.weight ** 2).sum(1) + (w_out.weight ** 2).sum(0))
    assert torch.allclose(s, manual)

    sub = compress_ffn(fm, keep_ratio=0.25, retained_layers=())
    assert sub.structure["kept_neurons"]["1"] == expected
    assert compressed_layers(sub) == [0, 1, 2]
    assert sub.structure["ffn_widths"] == [4, 4, 4]

    layer = get_layers(sub.backbone)[1]
    n_in, n_out = layer.intermediate.dense, layer.output.dense
    idx = torch.tensor(expected)
    assert n_in.weight.shape == (4, 8) and n_out.weight.shape == (8, 4)
    assert torch.equal(n_in.weight, w_in.weight[idx])          # rows of W_in
    assert torch.equal(n_in.bias, w_in.bias[idx])              # entries of b_in
    assert torch.equal(n_out.weight, w_out.weight[:, idx])     # columns of W_out
    assert torch.equal(n_out.bias, w_out.bias)                 # b_out whole

    # The sliced FFN computes exactly the FM's FFN restricted to the kept neurons.
    x = torch.randn(5, 8)
    act = fm_layer.intermediate.intermediate_act_fn
    manual_out = act(x @ w_in.weight[idx].T + w_in.bias[idx]) @ w_out.weight[:, idx].T + w_out.bias
    with torch.no_grad():
        assert torch.allclose(n_out(layer.intermediate(x)), manual_out, atol=1e-6)

    # The other (random-init) layers keep the top-4 by the same formula, independently computed.
    for i in (0, 2):
        a, b = ffn_linears(get_layers(fm.backbone)[i], arch_of(fm))
        norms = torch.linalg.vector_norm(torch.cat([a.weight, b.weight.T], dim=1), dim=1)
        assert sub.structure["kept_neurons"][str(i)] == sorted(torch.topk(norms, 4).indices.tolist())


def test_random_criterion_is_seeded_and_differs_from_saliency():
    fm = _hand_built_fm()
    a = compress_ffn(fm, 0.25, retained_layers=(), criterion="random", seed=1)
    b = compress_ffn(fm, 0.25, retained_layers=(), criterion="random", seed=1)
    assert a.structure["kept_neurons"] == b.structure["kept_neurons"]
    assert a.structure["kept_neurons"]["1"] != [2, 5, 11, 14]
    for kept in a.structure["kept_neurons"].values():
        assert kept == sorted(kept) and len(set(kept)) == 4


def test_bert_base_sizes_match_paper(bert_base):
    sub = compress_ffn(bert_base, keep_ratio=0.25, retained_layers=(0, 11))
    assert sub.structure["ffn_widths"] == [3072] + [768] * 10 + [3072]
    assert compressed_layers(sub) == list(range(1, 11))
    n_sub, n_fm = transformer_layer_parameters(sub), transformer_layer_parameters(bert_base)
    assert round(n_sub / 1e6, 1) == 49.6
    assert round(n_fm / 1e6, 1) == 85.1
    assert round(n_sub / 2 ** 20) == 47
    assert round(n_fm / 2 ** 20) == 81
    # The default retained layers (first and last) are the paper's 0 and 11.
    assert compress_ffn(bert_base).structure["ffn_widths"] == sub.structure["ffn_widths"]


# -- the FedOT emulator ------------------------------------------------------------------------
def test_emulator_layer_map_is_uniform_drop():
    fm = FMClassifier(_tiny_bert(num_layers=12, hidden=32, ffn=128), 2).eval()
    # 12 layers, 2 adapters per end: middle = 2..9 (8 layers), keep middle[round(i*7/(k-1))].
    expected = {
        1: [6],
        2: [2, 9],
        3: [2, 6, 9],
        4: [2, 4, 7, 9],
        5: [2, 4, 6, 7, 9],
        6: [2, 3, 5, 6, 8, 9],
        8: [2, 3, 4, 5, 6, 7, 8, 9],
    }
    for k, middle in expected.items():
        em = build_emulator(fm, num_adapter_layers=2, emulator_layers=k)
        assert em.structure["layer_map"] == [0, 1] + middle + [10, 11], k
        assert em.structure["adapters"] == [0, 1, k + 2, k + 3]
        assert adapter_layers(em) == [0, 1, k + 2, k + 3]
        assert len(get_layers(em.backbone)) == em.config.num_hidden_layers == k + 4
        # Proxy layer i is a copy of FM layer layer_map[i].
        for i, fm_i in enumerate(em.structure["layer_map"]):
            a = get_layers(em.backbone)[i].attention.self.query.weight
            assert torch.equal(a, get_layers(fm.backbone)[fm_i].attention.self.query.weight)


def test_emulator_default_budget_closest_to_sub_fm():
    torch.manual_seed(0)
    fm = FMClassifier(_tiny_bert(num_layers=12, hidden=32, ffn=128), 2).eval()
    target = transformer_layer_parameters(compress_ffn(fm))
    for a in (1, 2, 3):
        default = build_emulator(fm, num_adapter_layers=a)
        gap = abs(transformer_layer_parameters(default) - target)
        for k in range(1, 12 - 2 * a + 1):
            other = build_emulator(fm, num_adapter_layers=a, emulator_layers=k)
            assert gap <= abs(transformer_layer_parameters(other) - target), (a, k)
    assert default_adapter_layers(12) == 2 and default_adapter_layers(6) == 1
    assert build_emulator(fm).structure["num_adapter_layers"] == 2


def test_emulator_default_budget_bert_base(bert_base):
    em = build_emulator(bert_base)
    assert em.structure["num_adapter_layers"] == 2
    assert em.structure["emulator_layers"] == 3
    assert len(em.structure["layer_map"]) == 7  # the paper: 47 M = 7 of BERT-base's 12 layers
    assert round(transformer_layer_parameters(em) / 2 ** 20) == 47
    assert bert_base.config.num_hidden_layers == 12


@pytest.mark.parametrize("kwargs", [dict(num_adapter_layers=6), dict(num_adapter_layers=7),
                                    dict(num_adapter_layers=0), dict(emulator_layers=0),
                                    dict(num_adapter_layers=2, emulator_layers=9)])
def test_emulator_bad_arguments(kwargs):
    fm = FMClassifier(_tiny_bert(num_layers=12), 2)
    with pytest.raises(ValueError):
        build_emulator(fm, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(keep_ratio=0), dict(keep_ratio=1.5), dict(keep_ratio=-0.25),
                                    dict(criterion="magnitude"), dict(retained_layers=(0, 3))])
def test_compress_bad_arguments(kwargs):
    fm = FMClassifier(_tiny_bert(num_layers=3), 2)
    with pytest.raises(ValueError):
        compress_ffn(fm, **kwargs)


def test_compress_rejects_emulator():
    fm = FMClassifier(_tiny_bert(num_layers=6), 2)
    with pytest.raises(ValueError, match="emulator"):
        compress_ffn(build_emulator(fm))


# -- plug-back ----------------------------------------------------------------------------------
def test_plug_back_sub_fm(minilm, text_batch, train_loader):
    fm, _ = minilm
    ref = _logits(fm, text_batch)
    sub = add_lora(compress_ffn(fm))
    state0 = trainable_state(sub)
    assert all(torch.count_nonzero(v) == 0 for k, v in state0.items() if "lora_B" in k)

    fm_l = add_lora(copy.deepcopy(fm)).eval()
    assert len(_lora_params(fm_l)) == 2 * 4 * 6  # A and B on q, k, v, o of all 6 layers
    assert state0.keys() == {n for n, p in fm_l.named_parameters() if p.requires_grad}
    plug_back(fm_l, state0)
    assert torch.equal(_logits(fm_l, text_batch), ref), "B = 0 must give the FM's function exactly"

    local_train(sub, train_loader, lr=1e-3, max_steps=2)
    state1 = trainable_state(sub)
    assert any(torch.count_nonzero(v) > 0 for k, v in state1.items() if "lora_B" in k)
    plug_back(fm_l, state1)
    params = dict(fm_l.named_parameters())
    for k, v in state1.items():
        assert torch.equal(params[k], v), k
    assert (_logits(fm_l, text_batch) - ref).abs().max().item() > 1e-4
    # Plug-back touched only LoRA + head: the FM's own weights (full FFNs included) are intact.
    fm_state = fm.state_dict()
    frozen = {k.replace(".base_layer", ""): v for k, v in fm_l.state_dict().items()
              if "lora_" not in k and not k.startswith("classifier.")}
    assert frozen.keys() == {k for k in fm_state if not k.startswith("classifier.")}
    for k, v in frozen.items():
        assert torch.equal(v, fm_state[k]), k


def test_plug_back_emulator_only_adapters_change(minilm, text_batch, train_loader):
    fm, _ = minilm
    ref = _logits(fm, text_batch)
    em = build_emulator(fm)  # 6 layers: 1 adapter per end, 2 emulator layers
    layer_map = em.structure["layer_map"]
    assert layer_map[0] == 0 and layer_map[-1] == 5
    add_lora(em, layers=adapter_layers(em))
    fm_l = add_lora(copy.deepcopy(fm)).eval()

    plug_back(fm_l, trainable_state(em))
    assert torch.equal(_logits(fm_l, text_batch), ref)

    before = {n: p.detach().clone() for n, p in _lora_params(fm_l).items()}
    local_train(em, train_loader, lr=1e-3, max_steps=2)
    state = trainable_state(em)
    fm_layers_in_state = {int(k.split(".")[3]) for k in state if "lora_" in k}
    assert fm_layers_in_state == {0, 5}  # FM naming: the adapters' FM indices
    plug_back(fm_l, state)

    for layer in range(6):
        lora = _lora_params(fm_l, layer)
        assert len(lora) == 8
        changed = [n for n, p in lora.items() if not torch.equal(p, before[n])]
        if layer in (0, 5):
            assert any("lora_B" in n for n in changed), layer
            for n, p in lora.items():
                assert torch.equal(p, state[n])
        else:  # the middle (emulated) layers keep B = 0: the FM's own function
            assert changed == [], layer
            assert all(torch.count_nonzero(p) == 0 for n, p in lora.items() if "lora_B" in n)
    assert torch.equal(fm_l.classifier.weight, state["classifier.weight"])
    assert (_logits(fm_l, text_batch) - ref).abs().max().item() > 1e-4


def test_emulator_plug_back_is_exact_at_the_identity_setting(minilm, text_batch, train_loader):
    """An emulator that drops no layer is the FM: the trained adapters plugged back must give
    exactly the proxy's outputs. So when FedOT loses accuracy at plug-back (the vision default),
    that is the dropped layers, not plug-back."""
    fm, _ = minilm
    em = build_emulator(fm, emulator_layers=4)       # 6 layers, 1 adapter per end, all 4 kept
    assert em.structure["layer_map"] == list(range(6))
    add_lora(em, layers=adapter_layers(em))
    local_train(em, train_loader, lr=1e-3, max_steps=2)
    fm_l = add_lora(copy.deepcopy(fm)).eval()
    plug_back(fm_l, trainable_state(em))
    em.eval()
    torch.testing.assert_close(_logits(fm_l, text_batch), _logits(em, text_batch), rtol=0, atol=1e-5)


def test_load_trainable_state_is_strict():
    torch.manual_seed(0)
    fm = FMClassifier(_tiny_bert(num_layers=3, hidden=16, ffn=32), 3)
    sub = add_lora(compress_ffn(fm))
    state = trainable_state(sub)
    fm_l = add_lora(copy.deepcopy(fm))
    name = next(k for k in state if "lora_A" in k)

    wrong_key = dict(state)
    wrong_key[name.replace("encoder.layer.0.", "encoder.layer.7.")] = wrong_key.pop(name)
    with pytest.raises(KeyError):
        load_trainable_state(fm_l, wrong_key)
    with pytest.raises(KeyError):
        plug_back(fm_l, wrong_key)
    typo = dict(state)
    typo[name.replace("lora_A", "lora_a")] = typo.pop(name)
    with pytest.raises(KeyError):
        plug_back(fm_l, typo)

    wrong_shape = dict(state)
    wrong_shape[name] = torch.zeros(state[name].shape[0] + 1, state[name].shape[1])
    with pytest.raises(ValueError):
        load_trainable_state(fm_l, wrong_shape)
    with pytest.raises(ValueError):
        plug_back(fm_l, wrong_shape)

    missing = dict(state)
    missing.pop(name)
    with pytest.raises(KeyError):
        load_trainable_state(fm_l, missing)  # require_all by default
    plug_back(fm_l, missing)  # plug-back accepts a partial state (emulator adapters)


def test_fm_never_modified(minilm, text_batch):
    fm, _ = minilm
    before = _state_copy(fm)
    ref = _logits(fm, text_batch)
    n_layers, structure = fm.config.num_hidden_layers, copy.deepcopy(fm.structure)
    fm_ptrs = {p.data_ptr() for p in fm.parameters()}

    proxies = [compress_ffn(fm), compress_ffn(fm, 0.5, criterion="random", seed=3),
               build_emulator(fm), build_emulator(fm, num_adapter_layers=2, emulator_layers=1)]
    for proxy in proxies:
        assert not fm_ptrs & {p.data_ptr() for p in proxy.parameters()}, "proxy shares FM storage"
        add_lora(proxy)
        with torch.no_grad():  # scribble over every proxy tensor
            for p in proxy.parameters():
                p.add_(1.0)
    _assert_same_state(_state_copy(fm), before)
    assert fm.config.num_hidden_layers == n_layers == 6
    assert len(get_layers(fm.backbone)) == 6
    assert fm.structure == structure
    assert not any("lora_" in n for n, _ in fm.named_parameters())
    assert torch.equal(_logits(fm, text_batch), ref)


# -- save / load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sub-fm", "emulator"])
def test_save_load_round_trip(minilm, text_batch, tmp_path, kind):
    fm, tok = minilm
    proxy = compress_ffn(fm) if kind == "sub-fm" else build_emulator(fm)
    proxy.eval()
    ref = _logits(proxy, text_batch)
    proxy.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    torch.manual_seed(123)  # a different RNG state for the rebuilt backbone's initialisation
    loaded = FMClassifier.from_pretrained(tmp_path).eval()
    assert loaded.structure == proxy.structure
    assert loaded.config.num_hidden_layers == proxy.config.num_hidden_layers
    _assert_same_state(_state_copy(loaded), _state_copy(proxy))
    assert torch.equal(_logits(loaded, text_batch), ref)

    again, tok2 = load_foundation_model(str(tmp_path), num_labels=NUM_LABELS)
    assert isinstance(again, FMClassifier) and not again.training
    assert again.structure == proxy.structure
    assert again.pooling == proxy.pooling == "mean"
    _assert_same_state(_state_copy(again), _state_copy(proxy))
    assert torch.equal(_logits(again, text_batch), ref)
    assert tok2("the bank raised rates")["input_ids"] == tok("the bank raised rates")["input_ids"]


# -- every supported family --------------------------------------------------------------------------
def _tiny_family(family):
    torch.manual_seed(0)
    common = dict(vocab_size=100, max_position_embeddings=64)
    if family == "bert":
        bb = transformers.BertModel(transformers.BertConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, **common))
    elif family == "roberta":
        bb = transformers.RobertaModel(transformers.RobertaConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, **common))
    elif family == "distilbert":
        bb = transformers.DistilBertModel(transformers.DistilBertConfig(
            dim=32, n_layers=4, n_heads=2, hidden_dim=64, **common))
    elif family == "vit":
        bb = transformers.ViTModel(transformers.ViTConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
            image_size=16, patch_size=8, num_channels=3))
    else:
        raise AssertionError(family)
    fm = FMClassifier(bb, num_labels=3).eval()
    if family == "vit":
        batch = {"pixel_values": torch.randn(2, 3, 16, 16)}
    else:
        ids = torch.randint(3, 100, (2, 9))
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        batch = {"input_ids": ids, "attention_mask": mask}
    return fm, batch


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "vit"])
def test_every_family_compress_emulate_plug_back(family):
    fm, batch = _tiny_family(family)
    arch = arch_of(fm)
    assert fm.config.model_type == family
    ref = _logits(fm, batch)
    assert ref.shape == (2, 3)

    sub = compress_ffn(fm, keep_ratio=0.25)
    widths = [ffn_linears(l, arch)[0].out_features for l in get_layers(sub.backbone)]
    assert widths == sub.structure["ffn_widths"] == [64, 16, 16, 64]
    assert [ffn_linears(l, arch)[1].in_features for l in get_layers(sub.backbone)] == widths

    em = build_emulator(fm)
    assert em.structure["layer_map"][0] == 0 and em.structure["layer_map"][-1] == 3
    assert len(get_layers(em.backbone)) == len(em.structure["layer_map"]) < 4

    for proxy in (sub, em):
        assert _logits(proxy.eval(), batch).shape == (2, 3)
        add_lora(proxy, layers=adapter_layers(proxy))
        assert _logits(proxy, batch).shape == (2, 3)
        fm_l = add_lora(copy.deepcopy(fm)).eval()
        lora = _lora_params(fm_l)
        assert len(lora) == 2 * 4 * 4  # A, B x 4 attention projections x 4 layers
        head = re.compile(rf"^backbone\.{re.escape(arch.layers)}\.\d+\.")
        in_layer = [head.sub("", n) for n in lora]  # path inside the layer
        assert not any(p.startswith((arch.ffn_in + ".", arch.ffn_out + ".")) for p in in_layer)
        assert {p.split(".lora_")[0] for p in in_layer} == set(arch.attention)
        plug_back(fm_l, trainable_state(proxy))
        assert torch.equal(_logits(fm_l, batch), ref), (family, proxy.structure.get("method"))


def test_unsupported_family_raises_listing_supported():
    cfg = transformers.MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=100, state_size=4,
                                   intermediate_size=64)
    mamba = transformers.AutoModel.from_config(cfg)     # a state-space model: no attention for LoRA
    with pytest.raises(NotImplementedError) as info:
        FMClassifier(mamba, num_labels=2)
    for family in ARCHITECTURES:
        assert family in str(info.value)
    assert "mamba" in str(info.value)

    # A model whose backbone was swapped after construction is caught by every entry point too.
    smuggled = FMClassifier(_tiny_bert(), num_labels=2)
    smuggled.backbone = mamba
    for fn in (compress_ffn, build_emulator, add_lora):
        with pytest.raises(NotImplementedError) as info:
            fn(smuggled)
        assert all(family in str(info.value) for family in ("bert", "roberta", "distilbert", "vit"))


# -- saliency beats random on the real model ------------------------------------------------------
def test_saliency_closer_to_fm_than_random(minilm, test_loader):
    fm, _ = minilm
    n = sum(len(b["labels"]) for b in test_loader)
    assert n == 64
    mean = {}
    for criterion in ("saliency", "random"):
        sub = compress_ffn(fm, keep_ratio=0.25, criterion=criterion, seed=0)
        layers = compressed_layers(sub)
        assert layers == [1, 2, 3, 4]
        d = hidden_state_distance(fm, sub, test_loader)
        assert len(d) == 6 and d[0] == 0.0  # layer 0 is kept whole and sees the same input
        mean[criterion] = sum(d[i] for i in layers) / len(layers)
    assert 0 < mean["saliency"] < mean["random"], mean
