"""FedPFT Module 2: what alignment changes, what it must not touch, and when it runs."""
import copy

import pytest
import torch

from fedpft_lite import alignment
from fedpft_lite.alignment import (activation_statistics, aggregate_apoz, distill,
                                   select_neurons_to_update)
from fedpft_lite.arch import ffn_linears, get_layers
from fedpft_lite.compression import compress_ffn
from fedpft_lite.config import FedConfig
from fedpft_lite.data import encode, load_task, make_loader
from fedpft_lite.distance import hidden_state_distance
from fedpft_lite.federated import run_federated
from fedpft_lite.gradient_probe import gradient_similarity
from fedpft_lite.lora import add_lora, trainable_state
from fedpft_lite.models import load_foundation_model


@pytest.fixture(scope="module")
def tiny(tiny_model):
    fm, tok = load_foundation_model(tiny_model, num_labels=5)
    ds = load_task("bbc-news", max_train=64, max_test=64)
    public = encode(ds["public"].select(range(256)), tok, 32)
    test = encode(ds["test"], tok, 32)
    return fm, tok, make_loader(public, tok, 32, shuffle=True), make_loader(test, tok, 32)


def test_layer_level_distillation_lowers_every_compressed_layers_held_out_distance(tiny):
    fm, _, public, test = tiny
    sub = compress_ffn(fm, keep_ratio=0.25)
    layers = sub.structure["compressed_layers"]
    before = hidden_state_distance(fm, sub, test)
    params = alignment.ffn_parameters(sub, layers, with_norm=True)
    with alignment.only_trainable(sub, params):
        curve = distill(fm, sub, public, layers, params, steps=40, lr=3e-3, device="cpu")
    after = hidden_state_distance(fm, sub, test)
    assert curve[-1] < curve[0]
    for i in layers:
        assert after[i] < before[i], f"layer {i}: {before[i]:.4f} -> {after[i]:.4f}"


def test_layer_level_distillation_changes_only_the_compressed_ffns_and_their_norms(tiny):
    fm, _, public, _ = tiny
    sub = compress_ffn(fm, keep_ratio=0.25)
    layers = sub.structure["compressed_layers"]
    start = {n: p.detach().clone() for n, p in sub.named_parameters()}
    params = alignment.ffn_parameters(sub, layers, with_norm=True)
    flags = {n: p.requires_grad for n, p in sub.named_parameters()}
    with alignment.only_trainable(sub, params):
        distill(fm, sub, public, layers, params, steps=5, lr=3e-3, device="cpu")
    assert flags == {n: p.requires_grad for n, p in sub.named_parameters()}  # restored
    allowed = {f"backbone.encoder.layer.{i}.{part}" for i in layers
               for part in ("intermediate.dense", "output.dense", "output.LayerNorm")}
    for n, p in sub.named_parameters():
        module = n.rsplit(".", 1)[0]
        if module in allowed:
            assert not torch.equal(p, start[n]), f"{n} should have been trained"
        else:
            assert torch.equal(p, start[n]), f"{n} must stay bit-identical"


def test_neuron_level_step_updates_only_the_selected_neurons(tiny):
    fm, _, public, _ = tiny
    sub = compress_ffn(fm, keep_ratio=0.5)
    layers = sub.structure["compressed_layers"]
    blocks = get_layers(sub.backbone)
    from fedpft_lite.arch import arch_of
    arch = arch_of(sub.backbone)
    apoz = {i: torch.linspace(0, 1, ffn_linears(blocks[i], arch)[0].out_features) for i in layers}
    sel = {i: select_neurons_to_update(apoz[i], 0.5) for i in layers}
    start = copy.deepcopy(sub.state_dict())
    masks, params = {}, []
    for i in layers:
        w_in, w_out = ffn_linears(blocks[i], arch)
        row = torch.zeros(w_in.out_features)
        row[sel[i]] = 1
        masks.update({w_in.weight: row[:, None], w_out.weight: row[None, :], w_in.bias: row})
        params += [w_in.weight, w_out.weight, w_in.bias]
    with alignment.only_trainable(sub, params):
        distill(fm, sub, public, layers, params, steps=5, lr=3e-3, device="cpu", grad_masks=masks)
    for i in layers:
        # highest APoZ (least active) = highest indices here
        n = len(apoz[i])
        assert sel[i].tolist() == list(range(n - len(sel[i]), n))
        frozen = torch.ones(n, dtype=torch.bool)
        frozen[sel[i]] = False
        pre = f"backbone.encoder.layer.{i}."
        w_in, b_in = sub.state_dict()[pre + "intermediate.dense.weight"], sub.state_dict()[pre + "intermediate.dense.bias"]
        w_out = sub.state_dict()[pre + "output.dense.weight"]
        assert torch.equal(w_in[frozen], start[pre + "intermediate.dense.weight"][frozen])
        assert torch.equal(b_in[frozen], start[pre + "intermediate.dense.bias"][frozen])
        assert torch.equal(w_out[:, frozen], start[pre + "output.dense.weight"][:, frozen])
        assert not torch.equal(w_in[~frozen], start[pre + "intermediate.dense.weight"][~frozen])
        assert not torch.equal(w_out[:, ~frozen], start[pre + "output.dense.weight"][:, ~frozen])
        assert torch.equal(sub.state_dict()[pre + "output.dense.bias"], start[pre + "output.dense.bias"])


def test_activation_statistics_count_tokens_and_aggregate(tiny):
    fm, tok, _, test = tiny
    sub = compress_ffn(fm, keep_ratio=0.5)
    s = activation_statistics(sub, test, "cpu")
    n_tokens = sum(int(b["attention_mask"].sum()) for b in test)
    assert s["tokens"] == n_tokens
    for i in sub.structure["compressed_layers"]:
        assert s["zeros"][i].shape == (32,) and (s["zeros"][i] <= n_tokens).all()
    apoz = aggregate_apoz([s, s])
    for i, a in apoz.items():
        assert torch.allclose(a, s["zeros"][i] / n_tokens) and (0 <= a).all() and (a <= 1).all()
    with pytest.raises(ValueError):
        aggregate_apoz([])


def small(tiny_model, **kw):
    base = dict(model=tiny_model, method="fedpft", task="bbc-news", max_train=96, max_test=32,
                max_public=64, num_clients=4, fraction=0.5, rounds=4, batch_size=16, lr=5e-3,
                lora_r=4, max_length=32, align_steps=3, device="cpu", eval_proxy="never",
                align_before=False, align_during=False)   # each test switches on what it tests
    base.update(kw)
    return FedConfig(**base)


@pytest.mark.parametrize("rounds, t, expected", [(4, 2, [2]), (5, 2, [2, 4]), (3, 1, [1, 2])])
def test_neuron_level_alignment_runs_at_t_2t_before_the_last_round(tiny_model, rounds, t, expected):
    h = run_federated(small(tiny_model, rounds=rounds, align_during=True, align_every=t), progress=False)
    assert [r["round"] for r in h if r["aligned"]] == expected
    for r in h:
        if r["aligned"]:
            assert "align_loss_last" in r and r["align_distance_after"] <= r["align_distance_before"] + 1e-6


def test_the_teacher_carries_the_aggregated_state(tiny_model, monkeypatch):
    seen = []
    real = alignment.distill

    def lora_and_head(m):
        return {n: p.detach().clone() for n, p in m.named_parameters()
                if "lora_" in n or n.startswith("classifier.")}

    def spy(teacher, student, loader, layers, params, steps, lr, device, **kw):
        seen.append((lora_and_head(teacher), lora_and_head(student)))
        return real(teacher, student, loader, layers, params, steps, lr, device, **kw)

    servers = []
    monkeypatch.setattr(alignment, "distill", spy)
    run_federated(small(tiny_model, rounds=3, align_during=True, align_every=2), progress=False,
                  on_round=lambda s, r: servers.append((r["round"], {k: v.clone() for k, v in s.global_state.items()})))
    assert len(seen) == 1
    teacher_state, student_state = seen[0]
    aggregated = dict(servers)[2]
    for k, v in aggregated.items():  # FedAvg result of round 2, not the last client's state
        assert torch.equal(teacher_state[k], v), k
        assert torch.equal(student_state[k], v), k


def test_alignment_before_fl_is_logged_and_lowers_distance(tiny_model):
    servers = []
    run_federated(small(tiny_model, rounds=1, align_before=True, align_during=False, align_steps=30,
                        align_lr=3e-3),
                  progress=False, on_round=lambda s, r: servers.append(s))
    log = servers[-1].log["before_rounds"]
    assert log["layers"] == [1, 2]
    assert sum(log["distance_after"]) < sum(log["distance_before"])


def test_cached_layer_level_alignment_gives_the_same_history(tiny_model, tmp_path):
    cfg = small(tiny_model, rounds=3, align_before=True, align_during=True, align_every=2,
                align_steps=3, align_before_steps=12, align_lr=3e-3)
    plain = run_federated(cfg, progress=False)
    logs = []
    grab = lambda s, r: logs.append(s.log["before_rounds"])  # noqa: E731
    first = run_federated(cfg.replace(cache_dir=str(tmp_path)), progress=False, on_round=grab)
    entries = list(tmp_path.glob("layer_level_*"))
    assert len(entries) == 1 and logs[-1]["cached"] is None
    assert len(logs[-1]["loss_curve"]) == 12                  # align_before_steps, not align_steps
    second = run_federated(cfg.replace(cache_dir=str(tmp_path)), progress=False, on_round=grab)
    assert logs[-1]["cached"] == str(entries[0])
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(plain) == strip(first) == strip(second)
    # an entry that lost its weights (a copy without git-ignored files) is recomputed, not read
    (entries[0] / "weights.safetensors").unlink()
    third = run_federated(cfg.replace(cache_dir=str(tmp_path)), progress=False, on_round=grab)
    assert logs[-1]["cached"] is None and (entries[0] / "weights.safetensors").exists()
    assert strip(third) == strip(plain)
    # another seed (or any other server-side input) is another entry, never a wrong reuse
    run_federated(cfg.replace(cache_dir=str(tmp_path), seed=1), progress=False)
    assert len(list(tmp_path.glob("layer_level_*"))) == 2


def test_gradient_probe_is_exact_for_an_uncompressed_proxy_and_lower_for_a_compressed_one(tiny):
    fm, _, _, test = tiny
    batch = next(iter(test))
    fm_l = add_lora(copy.deepcopy(fm), seed=0)
    same = add_lora(compress_ffn(fm, keep_ratio=1.0), seed=0)
    small_sub = add_lora(compress_ffn(fm, keep_ratio=0.25), seed=0)
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(v.shape, generator=g) * 0.05 if "lora_B" in k else v)
             for k, v in trainable_state(same).items()}
    exact = gradient_similarity(fm_l, same, batch, state)
    assert exact["cosine"] > 0.9999 and exact["relative_error"] < 1e-4
    approx = gradient_similarity(fm_l, small_sub, batch, state)
    assert approx["cosine"] < exact["cosine"] and approx["relative_error"] > 1e-3



def test_alignment_sits_below_the_round_loop():
    # derived_seed lives in utils, so nothing the round loop imports imports it back, not even
    # inside a function (the old alignment <-> federated circle); the old import path still works
    import ast
    import importlib
    from fedpft_lite import federated, utils
    for name in ("alignment", "methods", "utils", "lora", "compression", "distance", "data"):
        path = importlib.import_module(f"fedpft_lite.{name}").__file__
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module != "federated", f"fedpft_lite.{name} imports .federated"
    assert federated.derived_seed is utils.derived_seed


def test_an_interrupted_layer_level_alignment_continues_to_the_uninterrupted_result(tiny_model, tmp_path,
                                                                                   monkeypatch):
    """A long alignment killed mid-way (a session's end) continues from its last save and ends
    exactly where an uninterrupted one does: same loss curve, same weights, same history."""
    from safetensors.torch import load_file
    cfg = small(tiny_model, rounds=2, align_before=True, align_during=False, align_before_steps=10,
                align_lr=3e-3)
    monkeypatch.setattr(alignment, "LAYER_LEVEL_CHECKPOINT_EVERY", 4)
    logs = []
    grab = lambda s, r: logs.append(s.log["before_rounds"])  # noqa: E731
    plain = run_federated(cfg.replace(cache_dir=str(tmp_path / "a")), progress=False, on_round=grab)
    plain_log = logs[-1]

    real, calls = alignment.distillation_loss, []

    def dies_at_step_7(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt("the session ended")
        return real(*args, **kwargs)
    monkeypatch.setattr(alignment, "distillation_loss", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        run_federated(cfg.replace(cache_dir=str(tmp_path / "b")), progress=False)
    partial, = (tmp_path / "b").glob("layer_level_*.partial/distill.pt")
    assert torch.load(partial, weights_only=False)["step"] == 4     # the last save before the kill
    assert not list((tmp_path / "b").glob("layer_level_*/weights.safetensors"))   # no entry stored

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(alignment, "distillation_loss", counted)
    calls.clear()
    resumed = run_federated(cfg.replace(cache_dir=str(tmp_path / "b")), progress=False, on_round=grab)
    assert len(calls) == 6                                        # steps 5-10 only: continued, not redone
    assert logs[-1]["loss_curve"] == plain_log["loss_curve"] and len(plain_log["loss_curve"]) == 10
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed) == strip(plain)
    a, = (tmp_path / "a").glob("layer_level_*/weights.safetensors")
    b, = (tmp_path / "b").glob("layer_level_*/weights.safetensors")
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not partial.parent.exists()                            # removed once the entry is stored
