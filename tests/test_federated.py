"""The federated engine: FedAvg, the three methods' rounds, reproducibility, resume, bad configs.

A tiny random-init BERT (real MiniLM tokenizer, real bbc-news sentences) keeps each run to a few
seconds; mechanics, not accuracy, are under test here.
"""
import json

import pytest
import torch
from safetensors.torch import load_file

from fedpft_lite.aggregation import fedavg
from fedpft_lite.config import FedConfig
from fedpft_lite.federated import round_lr, run_federated, sample_clients
from fedpft_lite.methods import is_alignment_round
from fedpft_lite.models import load_foundation_model


def small(tiny_model, **kw):
    base = dict(model=tiny_model, task="bbc-news", max_train=160, max_test=64, num_clients=4,
                fraction=0.5, rounds=2, batch_size=16, lr=5e-3, lora_r=4, max_length=32,
                eval_batch_size=32, partition="dirichlet", alpha=1.0, device="cpu",
                align_before=False, align_during=False)   # FedPFT's alignment: tests/test_alignment.py
    base.update(kw)
    return FedConfig(**base)


def strip_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# -- FedAvg ---------------------------------------------------------------------------------------
def test_fedavg_of_identical_states_is_that_state():
    s = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    for mode in ("weighted", "uniform"):
        out = fedavg([s, s, s], [1, 7, 2], mode)
        for k in s:
            torch.testing.assert_close(out[k], s[k])


def test_weighted_fedavg_weights_by_examples_and_uniform_does_not():
    a, b = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    assert torch.allclose(fedavg([a, b], [1, 3], "weighted")["w"], torch.full((2,), 0.75))
    assert torch.allclose(fedavg([a, b], [1, 3], "uniform")["w"], torch.full((2,), 0.5))


def test_fedavg_rejects_mismatched_states():
    with pytest.raises(KeyError):
        fedavg([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [1, 1])
    with pytest.raises(ValueError):
        fedavg([], [])
    with pytest.raises(ValueError):
        fedavg([{"a": torch.zeros(1)}], [1], "median")


# -- schedule -------------------------------------------------------------------------------------
def test_alignment_rounds_are_multiples_of_t_before_the_last_round():
    assert [r for r in range(1, 31) if is_alignment_round(r, 10, 30)] == [10, 20]
    assert [r for r in range(1, 32) if is_alignment_round(r, 10, 31)] == [10, 20, 30]
    assert not any(is_alignment_round(r, 5, 20) for r in (0, 1, 4, 6, 9))


def test_a_run_where_neuron_level_alignment_would_never_run_is_refused():
    # the trap: t = rounds aligns nowhere useful; say so instead of silently never aligning
    with pytest.raises(ValueError, match="never runs"):
        FedConfig(method="fedpft", rounds=10, align_every=10).validate()
    FedConfig(method="fedpft", rounds=10, align_every=10, align_during=False).validate()
    FedConfig(method="fedot", rounds=10, align_every=10).validate()   # FedOT has no alignment


def test_lr_decays_linearly_but_never_wastes_the_last_round():
    cfg = FedConfig(rounds=4, lr=1.0)
    assert [round_lr(cfg, r) for r in range(1, 5)] == [1.0, 0.75, 0.5, 0.25]
    assert round_lr(cfg.replace(lr_decay="none"), 4) == 1.0


def test_client_sampling_is_seeded_and_sized():
    cfg = FedConfig(num_clients=100, fraction=0.1, seed=3)
    a = sample_clients(cfg, 1)
    assert len(a) == 10 and len(set(a)) == 10 and a == sample_clients(cfg, 1)
    assert a != sample_clients(cfg, 2) and a != sample_clients(cfg.replace(seed=4), 1)


# -- runs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fedpetuning", "fedot", "fedpft"])
def test_two_rounds_change_the_fm_only_through_the_plugged_state(tiny_model, method):
    servers = []
    h = run_federated(small(tiny_model, method=method), progress=False,
                      on_round=lambda server, row: servers.append(server))
    server = servers[-1]
    assert [r["round"] for r in h] == [1, 2]
    for r in h:
        assert 0 <= r["fm_accuracy"] <= 1 and r["bytes_up"] > 0 and r["bytes_down"] > 0
        assert len(r["clients"]) == 2
    original, _ = load_foundation_model(tiny_model, num_labels=5)
    ref = dict(original.named_parameters())
    for name, p in server.fm.named_parameters():
        if "lora_" in name or name.startswith("classifier."):
            continue
        base = name.replace(".base_layer", "")
        assert torch.equal(p.detach().cpu(), ref[base].detach()), f"{method} changed FM weight {name}"
    assert any(p.detach().any() for n, p in server.fm.named_parameters() if "lora_B" in n), \
        "no LoRA B moved away from zero: nothing was trained"
    assert not torch.equal(server.fm.classifier.weight.detach().cpu(), original.classifier.weight.detach())
    if method == "fedot":  # only the adapters (FM layers 0 and 3) were trained
        for name, p in server.fm.named_parameters():
            if "lora_B" in name and (".layer.1." in name or ".layer.2." in name):
                assert not p.detach().any(), f"FedOT trained a middle (emulated) layer: {name}"


def test_same_seed_same_history_other_seed_different(tiny_model):
    a = run_federated(small(tiny_model, seed=1), progress=False)
    b = run_federated(small(tiny_model, seed=1), progress=False)
    c = run_federated(small(tiny_model, seed=2), progress=False)
    assert strip_time(a) == strip_time(b)
    assert strip_time(a) != strip_time(c)


def test_resume_after_round_k_equals_the_uninterrupted_run(tiny_model, tmp_path):
    full = run_federated(small(tiny_model, rounds=3, output_dir=str(tmp_path / "full")), progress=False)
    cut = small(tiny_model, rounds=3, output_dir=str(tmp_path / "cut"))
    part = run_federated(cut, progress=False, stop_after=1)
    assert len(part) == 1 and not (tmp_path / "cut" / "results.json").exists()
    with pytest.raises(FileExistsError, match="resume"):  # an unfinished run is not clobbered
        run_federated(cut, progress=False)
    assert not (tmp_path / "cut" / "checkpoint" / "server_proxy.safetensors").exists()  # no alignment
    resumed = run_federated(cut.replace(resume=True), progress=False)
    assert strip_time(resumed) == strip_time(full)
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert strip_time(saved) == strip_time(full)
    # A finished run's results are never overwritten unless asked.
    with pytest.raises(FileExistsError, match="overwrite"):
        run_federated(small(tiny_model, rounds=3, output_dir=str(tmp_path / "full")), progress=False)
    before = (tmp_path / "full" / "results.json").read_text()
    with pytest.raises(ValueError, match="differs"):
        _resume_with_changed_config(tiny_model, tmp_path)
    assert (tmp_path / "full" / "results.json").read_text() == before


def _resume_with_changed_config(tiny_model, tmp_path):
    cfg = small(tiny_model, rounds=3, output_dir=str(tmp_path / "changed"))
    run_federated(cfg, progress=False, stop_after=1)
    run_federated(cfg.replace(resume=True, lr=1.0), progress=False)


FFN_PARTS = ("intermediate.dense", "output.dense", "output.LayerNorm")


def aligned_names(layers):
    """What alignment may change in a BERT-style sub-FM: the compressed layers' FFNs and norms."""
    return {f"backbone.encoder.layer.{i}.{part}.{w}" for i in layers for part in FFN_PARTS
            for w in ("weight", "bias")}


def test_fedpft_resume_with_both_alignments_equals_the_uninterrupted_run(tiny_model, tmp_path):
    # layer-level alignment before round 1, neuron-level in rounds 1, 2 (before the checkpoint)
    # and 3 (after it): the checkpoint must carry the sub-FM's FFNs as the server aligned them
    cfg = small(tiny_model, method="fedpft", rounds=4, align_before=True, align_during=True,
                align_every=1, align_steps=2, align_before_steps=4, max_public=64, eval_proxy="every")
    proxies = {}
    grab = lambda name: lambda s, r: proxies.__setitem__(name, {  # noqa: E731
        n: p.detach().clone() for n, p in s.proxy.state_dict().items()})
    full = run_federated(cfg.replace(output_dir=str(tmp_path / "full")), progress=False,
                         on_round=grab("full"))
    assert [r["round"] for r in full if r["aligned"]] == [1, 2, 3]
    cut = cfg.replace(output_dir=str(tmp_path / "cut"))
    run_federated(cut, progress=False, stop_after=2)
    ckpt = tmp_path / "cut" / "checkpoint"
    owned = load_file(str(ckpt / "server_proxy.safetensors"))
    assert set(owned) == aligned_names([1, 2])    # only the aligned FFN slices, not the proxy
    resumed = run_federated(cut.replace(resume=True), progress=False, on_round=grab("resumed"))
    assert strip_time(resumed) == strip_time(full)
    for name, p in proxies["full"].items():    # the whole proxy, bit for bit
        assert torch.equal(p, proxies["resumed"][name]), name
    for name in ("full", "cut"):
        proxies[name] = load_file(str(tmp_path / name / "global_state.safetensors"))
    assert proxies["full"].keys() == proxies["cut"].keys()
    assert all(torch.equal(v, proxies["cut"][k]) for k, v in proxies["full"].items())


def test_a_fedpft_checkpoint_of_minilm_holds_only_the_aligned_ffns(tmp_path):
    """The real offline MiniLM (6 layers, keep 0.25, layers 1-4 compressed): the checkpoint's
    server-owned file is the four compressed FFNs and their LayerNorms, ~4.7 MB of a 76 MB
    sub-FM (the whole proxy was written every round before)."""
    cfg = FedConfig(method="fedpft", model="minilm", task="bbc-news", max_train=32, max_test=16,
                    max_public=40, num_clients=4, fraction=0.5, rounds=3, batch_size=8,
                    max_length=32, align_every=1, align_steps=1, align_before_steps=1,
                    device="cpu", eval_proxy="never", output_dir=str(tmp_path))
    run_federated(cfg, progress=False, stop_after=1)
    ckpt = tmp_path / "checkpoint"
    owned = ckpt / "server_proxy.safetensors"
    assert set(load_file(str(owned))) == aligned_names([1, 2, 3, 4])
    proxy_bytes = json.loads((ckpt / "checkpoint.json").read_text())["log"]["proxy_bytes"]
    size = owned.stat().st_size
    assert proxy_bytes > 70e6 and size < 5e6 and size < proxy_bytes / 15, (size, proxy_bytes)


# -- bad configs fail before any model is loaded ---------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"method": "fedsgd"}, "method must be one of"),
    ({"fraction": 0.0}, "fraction"),
    ({"num_clients": 50, "max_train": 10}, "smaller than num_clients"),
    ({"partition": "zipf"}, "partition must be one of"),
    ({"alpha": 0.0}, "alpha"),
    ({"aggregation": "median"}, "aggregation"),
    ({"resume": True}, "output_dir"),
    ({"method": "fedot", "align_before": True}, "alignment"),
    ({"keep_ratio": 1.5}, "keep_ratio"),
])
def test_bad_configs_fail_early_and_clearly(changes, message, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("a model was loaded before the config was checked")
    monkeypatch.setattr("fedpft_lite.federated.load_foundation_model", no_loading)
    with pytest.raises(ValueError, match=message):
        run_federated(FedConfig(**changes), progress=False)


def test_unknown_config_keys_and_files(tmp_path):
    with pytest.raises(ValueError, match="unknown config keys"):
        FedConfig.from_dict({"methd": "fedpft"})
    p = tmp_path / "c.yaml"
    p.write_text("method: fedot\nrounds: 3\nretained_layers: [0, -1]\n")
    cfg = FedConfig.from_file(p)
    assert cfg.method == "fedot" and cfg.rounds == 3
    assert cfg.with_overrides(["rounds=5", "lr=0.01"]).rounds == 5
    with pytest.raises(FileNotFoundError):
        FedConfig.from_file(tmp_path / "missing.yaml")


def test_a_text_model_on_an_image_task_is_refused_before_any_training():
    with pytest.raises(ValueError, match="holds images but model 'minilm' is a text model.*vit-tiny-fmnist"):
        run_federated(FedConfig(method="fedpetuning", model="minilm", task="digits", num_clients=2,
                                rounds=1), progress=False)
