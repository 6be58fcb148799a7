"""FedPFT's neighbours (issue 14): FedOT-KD, FedBiOT and CRaSh as methods of the same round loop.

Tiny random-init BERTs (the session's 4-layer ``tiny_model``, and an 8-layer one built here) and
real bbc-news sentences: mechanics, not accuracy. What each method's proxy is, that a quick
federated run trains only the adapters and plugs them back into the FM, that distillation brings
the emulator nearer the FM, that FedBiOT re-aligns every round and resumes bit-identically, that
CRaSh's clusters are deterministic and its removed layers share (tie) their cluster's weights,
and that the neighbourhood experiments are defined with valid configs.
"""
import pytest
import torch
import transformers
from safetensors.torch import load_file

from fedpft_lite.arch import get_layers
from fedpft_lite.config import FedConfig
from fedpft_lite.distance import hidden_state_distance
from fedpft_lite.emulator import build_emulator
from fedpft_lite.experiments import NEIGHBOURHOOD, get_experiment
from fedpft_lite.federated import run_federated
from fedpft_lite.models import FMClassifier, load_foundation_model
from fedpft_lite.neighbourhood import (build_crash_proxy, cluster_layers, emulator_output_pair,
                                       unique_parameters)
from fedpft_lite.reproduce import plan


def small(tiny_model, **kw):
    base = dict(model=tiny_model, task="bbc-news", max_train=96, max_test=32, max_public=64,
                num_clients=4, fraction=0.5, rounds=2, batch_size=16, lr=5e-3, lora_r=4,
                max_length=32, eval_batch_size=32, device="cpu", eval_proxy="final",
                emulator_layers=1, align_steps=3, align_before_steps=6, align_lr=3e-3)
    base.update(kw)
    return FedConfig(**base)


def strip_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def run(cfg, **kw):
    servers = []
    h = run_federated(cfg, progress=False, on_round=lambda s, r: servers.append(s), **kw)
    return h, servers[-1]


@pytest.fixture(scope="module")
def runs(tiny_model):
    """One quick two-round run of each neighbour (and FedOT, the baseline they modify)."""
    return {m: run(small(tiny_model, method=m)) for m in ("fedot", "fedot-kd", "fedbiot", "crash")}


# -- every neighbour, end to end ----------------------------------------------------------------
@pytest.mark.parametrize("method", ["fedot-kd", "fedbiot", "crash"])
def test_a_quick_run_trains_only_the_adapters_and_plugs_them_into_the_fm(tiny_model, runs, method):
    h, server = runs[method]
    assert [r["round"] for r in h] == [1, 2]
    assert all(0 <= r["fm_accuracy"] <= 1 and r["bytes_up"] > 0 for r in h)
    assert 0 <= h[-1]["proxy_accuracy"] <= 1
    original, _ = load_foundation_model(tiny_model, num_labels=5)
    ref = dict(original.named_parameters())
    for name, p in server.fm.named_parameters():
        if "lora_" in name or name.startswith("classifier."):
            continue
        assert torch.equal(p.detach().cpu(), ref[name.replace(".base_layer", "")].detach()), name
    trained = {n.split(".layer.")[1].split(".")[0] for n, p in server.fm.named_parameters()
               if "lora_B" in n and p.detach().any()}
    assert trained == {"0", "3"}, f"{method} trained FM layers {trained}, not the adapters 0 and 3"
    # what clients send up is what FedOT's clients send: the adapters' LoRA and the head
    assert h[0]["bytes_up"] == runs["fedot"][0][0]["bytes_up"]


def test_the_emulators_hold_the_same_weights_as_fedots(runs):
    fedot = runs["fedot"][1].proxy
    for method in ("fedot-kd", "fedbiot"):
        proxy = runs[method][1].proxy
        assert proxy.structure["layer_map"] == fedot.structure["layer_map"] == [0, 2, 3]
        assert proxy.structure["method"] == method
    crash = runs["crash"][1].proxy
    assert len(get_layers(crash.backbone)) == 4                    # the FM's depth ...
    assert unique_parameters(crash) == unique_parameters(fedot)    # ... FedOT's weights
    assert runs["crash"][1].log["proxy_bytes"] == runs["fedot"][1].log["proxy_bytes"]


# -- FedOT-KD: the distilled emulator ------------------------------------------------------------
def test_fedot_kd_distillation_brings_the_emulator_nearer_the_fm_on_public_data(tiny_model, runs):
    server = runs["fedot-kd"][1]
    log = server.log["before_rounds"]
    assert len(log["loss_curve"]) == 6                              # align_before_steps
    assert log["distance_after"] < log["distance_before"]
    assert log["loss_curve"][-1] < log["loss_curve"][0]
    # measured afresh with fedpft_lite.distance: FedOT's plain emulator vs the distilled one,
    # the emulator's output against the FM middle's output, on the held-out public examples
    from fedpft_lite.alignment import public_loader
    plain = build_emulator(server.fm, None, 1)
    pair = emulator_output_pair(plain)
    held_out = public_loader(server, (0xE41, 1), held_out=True)
    d_plain = hidden_state_distance(server.fm, plain, held_out, pairs=pair)[0]
    d_kd = hidden_state_distance(server.fm, server.proxy, held_out, pairs=pair)[0]
    assert d_kd < d_plain
    # only the emulator's middle layer changed (the adapters are FedOT's, bit for bit)
    fedot = runs["fedot"][1].proxy
    kd_layers, ot_layers = get_layers(server.proxy.backbone), get_layers(fedot.backbone)
    for i in (0, 2):
        for (n, a), (_, b) in zip(kd_layers[i].named_parameters(), ot_layers[i].named_parameters()):
            if "lora_" not in n:
                assert torch.equal(a, b), (i, n)
    assert any(not torch.equal(a, b) for a, b in zip(kd_layers[1].parameters(), ot_layers[1].parameters()))
    assert not any(r["aligned"] for r in runs["fedot-kd"][0])      # once, before FL only


# -- FedBiOT: re-aligned every round, resumable ----------------------------------------------------
def test_fedbiot_realigns_after_every_round_but_the_last_and_ships_the_emulator(tiny_model):
    h, server = run(small(tiny_model, method="fedbiot", rounds=3))
    assert [r["round"] for r in h if r["aligned"]] == [1, 2]
    assert [e["round"] for e in server.log["emulator_alignment"]] == [1, 2]
    assert "loss_curve" in server.log["before_rounds"]              # pre-aligned too
    for r in h[:2]:
        assert r["align_distance_after"] <= r["align_distance_before"] + 1e-6
    kd, _ = run(small(tiny_model, method="fedot-kd", rounds=3))
    emulator = sum(p.numel() * p.element_size() for p in get_layers(server.proxy.backbone)[1].parameters())
    for a, b in zip(h, kd):
        assert a["bytes_down"] - b["bytes_down"] == (emulator * 2 if a["aligned"] else 0)


def test_fedbiot_resume_equals_the_uninterrupted_run(tiny_model, tmp_path):
    cfg = small(tiny_model, method="fedbiot", rounds=3, eval_proxy="every")
    proxies = {}
    grab = lambda name: lambda s, r: proxies.__setitem__(name, {  # noqa: E731
        n: p.detach().clone() for n, p in s.proxy.state_dict().items()})
    full = run_federated(cfg.replace(output_dir=str(tmp_path / "full")), progress=False, on_round=grab("full"))
    cut = cfg.replace(output_dir=str(tmp_path / "cut"))
    run_federated(cut, progress=False, stop_after=1)
    owned = load_file(str(tmp_path / "cut" / "checkpoint" / "server_proxy.safetensors"))
    assert owned and all(k.startswith("backbone.encoder.layer.1.") for k in owned)  # the emulator only
    resumed = run_federated(cut.replace(resume=True), progress=False, on_round=grab("resumed"))
    assert strip_time(resumed) == strip_time(full)
    for name, p in proxies["full"].items():
        assert torch.equal(p, proxies["resumed"][name]), name


# -- CRaSh: clustering, removing, sharing ----------------------------------------------------------
def test_clustering_merges_the_most_similar_adjacent_layers_first():
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(64, 16, generator=g) for _ in range(3)]
    noise = lambda: 0.01 * torch.randn(64, 16, generator=g)  # noqa: E731
    reps = [base[0], base[0] + noise(), base[0] + noise(), base[1], base[1] + noise(), base[2]]
    clusters, merges = cluster_layers(reps, list(range(6)), 3)
    assert clusters == [[0, 1, 2], [3, 4], [5]]
    assert len(merges) == 3 and all(m["cka"] > 0.99 for m in merges)
    assert cluster_layers(reps, list(range(6)), 3) == (clusters, merges)   # deterministic
    assert cluster_layers(reps, list(range(1, 5)), 4)[0] == [[1], [2], [3], [4]]
    with pytest.raises(ValueError):
        cluster_layers(reps, list(range(6)), 0)


def _bert(num_layers=8):
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=16, num_hidden_layers=num_layers,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    return FMClassifier(transformers.AutoModel.from_config(cfg), num_labels=3).eval()


def _batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 120, (16, 12), generator=g),
             "attention_mask": torch.ones(16, 12, dtype=torch.long)} for _ in range(n)]


def test_crash_proxy_is_deterministic_and_ties_each_clusters_layers():
    fm = _bert(8)
    a = build_crash_proxy(fm, _batches(), num_adapter_layers=1, emulator_layers=3)
    b = build_crash_proxy(fm, _batches(), num_adapter_layers=1, emulator_layers=3)
    s = a.structure
    assert s["clusters"] == b.structure["clusters"] and s["shared_from"] == b.structure["shared_from"]
    assert sorted(sum(s["clusters"], [])) == list(range(1, 7)) and len(s["clusters"]) == 3
    assert s["adapters"] == [0, 7] and s["kept"] == [c[len(c) // 2] for c in s["clusters"]]
    layers, fm_layers = get_layers(a.backbone), get_layers(fm.backbone)
    assert len(layers) == 8
    for i, src in enumerate(s["shared_from"]):
        assert layers[i] is layers[src]                    # one module object: tied weights
        for p, q in zip(layers[i].parameters(), fm_layers[src].parameters()):
            assert torch.equal(p, q)                       # the kept layer, unchanged
    assert unique_parameters(a) == unique_parameters(build_emulator(fm, 1, 3))
    # a change to a kept layer is a change to every slot that shares it
    rep = s["kept"][0]
    with torch.no_grad():
        get_layers(a.backbone)[rep].output.dense.bias.add_(1.0)
    for i, src in enumerate(s["shared_from"]):
        if src == rep:
            assert torch.equal(layers[i].output.dense.bias, layers[rep].output.dense.bias)
    # the FM is untouched, and a different public set may cluster differently but still validly
    assert all(torch.equal(p, q) for p, q in zip(fm.parameters(), _bert(8).parameters()))
    with pytest.raises(ValueError, match="clusters"):
        build_crash_proxy(fm, _batches(), num_adapter_layers=1, emulator_layers=7)


# -- configs and the registry ----------------------------------------------------------------------
def test_neighbour_configs_fail_early_and_clearly():
    for m in ("fedot-kd", "fedbiot", "crash"):
        FedConfig(method=m).validate()
        with pytest.raises(ValueError, match="alignment"):
            FedConfig(method=m, align_before=True).validate()
    with pytest.raises(ValueError, match="emulator_layers must be >= 1"):
        FedConfig(method="crash", emulator_layers=0).validate()
    with pytest.raises(ValueError, match="method must be one of"):
        FedConfig(method="fedbiot2").validate()


@pytest.mark.parametrize("name", ["lite/neighbourhood", "lite/neighbourhood-vision"])
def test_the_neighbourhood_experiments_plan_valid_configs(name):
    exp = get_experiment(name)
    assert [c.label for c in exp.cells] == list(NEIGHBOURHOOD) == ["FedOT", "FedOT-KD", "FedBiOT", "CRaSh", "FedPFT"]
    assert len(exp.seeds) >= 3 and exp.scale == "lite"
    for quick in (False, True):
        configs = plan(exp, quick=quick, device="cpu")
        assert len(configs) == len(exp.cells) * len(exp.seeds)
        methods = {label: cfg.method for label, _, cfg in configs}
        assert methods == {"FedOT": "fedot", "FedOT-KD": "fedot-kd", "FedBiOT": "fedbiot",
                           "CRaSh": "crash", "FedPFT": "fedpft"}
    base = get_experiment("lite/table1" if name == "lite/neighbourhood" else "lite/vision")
    assert exp.base == base.base                           # the same data, rounds and settings


@pytest.mark.parametrize("method", ["fedbiot", "crash"])
def test_the_flower_app_refuses_what_it_cannot_keep_current(method):
    from fedpft_lite.flower.settings import fedconfig_from_run_config
    with pytest.raises(ValueError, match="does not run on the Flower app"):
        fedconfig_from_run_config({}, {"method": method})
    assert fedconfig_from_run_config({}, {"method": "fedot-kd"})[0].method == "fedot-kd"


# -- plug-back at the identity setting -----------------------------------------------------------
@pytest.mark.parametrize("method", ["fedot-kd", "fedbiot", "crash"])
def test_plug_back_is_exact_at_the_identity_setting(tiny_model, method):
    """With no compression (the emulator keeps every middle layer: FedOT-KD's and FedBiOT's
    distillation then has nothing to close, CRaSh's clusters are single layers) the proxy is the
    FM, so the FM with the aggregated adapters plugged back must compute exactly what the proxy
    computes with them: plug-back loses nothing and puts each adapter where it was trained."""
    n_middle = 4 - 2 * 1                          # tiny_model: 4 layers, 1 adapter layer per end
    h, server = run(small(tiny_model, method=method, emulator_layers=n_middle, lora_dropout=0.0))
    assert len(get_layers(server.proxy.backbone)) == 4
    if method == "crash":
        assert server.proxy.structure["clusters"] == [[1], [2]]
    batch = next(iter(server.test_loader))
    server.fm.eval(), server.proxy.eval()
    with torch.no_grad():
        fm_logits = server.fm(**{k: v for k, v in batch.items() if k != "labels"}).logits
        proxy_logits = server.proxy(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.equal(fm_logits, proxy_logits), (fm_logits - proxy_logits).abs().max()
    assert h[-1]["fm_accuracy"] == h[-1]["proxy_accuracy"]
