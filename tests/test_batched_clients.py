"""Batched client training (``client_parallelism > 1``, ``fedpft_lite.batched``) against the
sequential executor, on CPU with a tiny random-init BERT.

Tolerance: per-client states, their losses, FedPFT's activation statistics and the global state
after a round agree within ``rtol = 1e-5, atol = 1e-6`` (fp32; measured differences ~5e-8 on
weights of size ~0.2). The batched pass adds the same products in another order (one ``bmm``
over all clients instead of one matmul per client), nothing else differs. Two clients' states
differ from each other by ~1e-2, so a client trained on the wrong batches, stepped after its
data ran out or clipped with another's norm would fail the check.

Dropout is off in the equality checks (LoRA, hidden, attention and head dropout 0): the
sequential executor re-seeds the global generator before each client, the batched pass draws one
mask for all clients' rows, and the attention dropout inside ``scaled_dot_product_attention``
cannot be seeded per row, so with dropout on both train with different (equally distributed)
masks. With dropout on, the batched executor is checked to be reproducible on its own.
"""
import pytest
import torch
import transformers

from fedpft_lite.config import FedConfig
from fedpft_lite.federated import (LocalClients, _attach_lora, finish_round, round_lr, run_federated,
                                   sample_clients, setup)
from fedpft_lite.models import FMClassifier, load_foundation_model

TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_model_no_dropout(tmp_path_factory):
    """conftest's tiny BERT with every dropout at 0 (hidden, attention, head)."""
    _, tok = load_foundation_model("minilm", num_labels=5)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = FMClassifier(transformers.AutoModel.from_config(cfg), num_labels=5, pooling="mean", dropout=0.0)
    folder = tmp_path_factory.mktemp("tiny_no_dropout")
    model.save_pretrained(folder, preprocessor=tok)
    return str(folder)


def small(model, **kw):
    """3 of 4 Dirichlet clients per round; round 1 samples clients of 25, 55 and 48 examples:
    2, 4 and 3 steps of batch 16, last batches of 9, 7 and 16 rows."""
    base = dict(model=model, task="bbc-news", max_train=160, max_test=64, max_public=32, num_clients=4,
                fraction=0.75, rounds=2, batch_size=16, lr=5e-3, lora_r=4, max_length=32,
                eval_batch_size=32, partition="dirichlet", alpha=0.5, device="cpu", align_before=False,
                align_during=False, eval_proxy="never")
    base.update(kw)
    return FedConfig(**base)


def one_round(cfg):
    """Round 1 of ``cfg`` on a fresh server: (client updates, history row, server)."""
    cfg = cfg.validate().resolved()
    server = setup(cfg, progress=False)
    _attach_lora(server)
    sampled, lr = sample_clients(cfg, 1), round_lr(cfg, 1)
    updates = LocalClients().train(server, 1, sampled, lr, server.method.wants_activations(server, 1))
    return updates, finish_round(server, 1, sampled, lr, updates, 0.0), server


@pytest.mark.parametrize("method, parallelism, epochs", [("fedpft", 3, 1), ("fedot", 2, 2),
                                                          ("fedpetuning", 3, 1)])
def test_batched_clients_match_sequential_ones(tiny_model_no_dropout, method, parallelism, epochs):
    """Same per-client states, losses and (FedPFT) activation statistics, hence the same global
    state after the round. FedPFT aligns in round 1 (t = 1), so its clients report statistics
    and the server's neuron-level alignment uses them; FedOT trains 2 local epochs in groups of
    2 + 1 clients."""
    cfg = small(tiny_model_no_dropout, method=method, lora_dropout=0.0, local_epochs=epochs,
                align_during=method == "fedpft", align_every=1, align_steps=3)
    seq, seq_row, seq_server = one_round(cfg)
    bat, bat_row, bat_server = one_round(cfg.replace(client_parallelism=parallelism))

    steps = [len(seq_server.client_loader(u.k, 1)) for u in seq]
    for group in (steps[i:i + parallelism] for i in range(0, len(steps), parallelism)):
        if len(group) > 1:   # clients run out of batches while others of their pass go on
            assert len(set(group)) > 1, f"clients trained together should take unequal steps, got {steps}"
    gap = max((seq[0].state[n] - seq[1].state[n]).abs().max() for n in seq[0].state)
    assert gap > 1e3 * TOL["atol"], "two clients' states must differ far beyond the tolerance"
    for s, b in zip(seq, bat):
        assert (s.k, s.num_examples) == (b.k, b.num_examples)
        assert list(s.state) == list(b.state)
        torch.testing.assert_close(b.state, s.state, **TOL)
        assert b.loss == pytest.approx(s.loss, rel=TOL["rtol"])
        assert (s.stats is None) == (b.stats is None) == (method != "fedpft")
        if s.stats is not None:
            assert s.stats["tokens"] == b.stats["tokens"] and s.stats["bytes"] == b.stats["bytes"]
            torch.testing.assert_close(b.stats["abs_sum"], s.stats["abs_sum"], **TOL)
            torch.testing.assert_close(b.stats["zeros"], s.stats["zeros"], **TOL)
    torch.testing.assert_close(bat_server.global_state, seq_server.global_state, **TOL)
    torch.testing.assert_close(bat_server.server_owned_state(), seq_server.server_owned_state(), **TOL)
    assert bat_row["aligned"] == seq_row["aligned"] == (method == "fedpft")
    assert bat_row["fm_accuracy"] == seq_row["fm_accuracy"]


def test_batched_executor_with_dropout_is_reproducible(tiny_model, tmp_path):
    """Dropout on (the paper's 0.1 in LoRA, the tiny BERT's 0.1 elsewhere): the same seed gives
    the same history and final state; another seed another one."""
    cfg = small(tiny_model, method="fedpft", client_parallelism=2, align_during=True, align_every=1,
                align_steps=3, eval_proxy="every")
    runs = []
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        history = run_federated(cfg.replace(seed=seed, output_dir=str(tmp_path / name)), progress=False)
        runs.append([{k: v for k, v in r.items() if k != "seconds"} for r in history])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert runs[0][0]["aligned"]
    from safetensors.torch import load_file
    torch.testing.assert_close(load_file(str(tmp_path / "a" / "global_state.safetensors")),
                               load_file(str(tmp_path / "b" / "global_state.safetensors")), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "batched", None])
def test_a_bad_client_parallelism_fails_before_anything_loads(bad):
    with pytest.raises(ValueError, match="client_parallelism must be"):
        FedConfig(client_parallelism=bad).validate()
    with pytest.raises(ValueError, match="client_parallelism must be"):
        run_federated(FedConfig(model="no/such-model", client_parallelism=bad), progress=False)


def test_client_parallelism_at_its_default_leaves_run_keys_unchanged():
    """Every committed run under data/results/reproduce/runs/ keeps its key (the field is in
    ``reproduce.ADDED_LATER``); a batched run gets its own key."""
    import json
    from pathlib import Path

    from fedpft_lite.reproduce import run_key

    runs = sorted((Path(__file__).resolve().parents[1] / "data/results/reproduce/runs").glob("*/results.json"))
    assert runs, "no committed runs found"
    for path in runs:
        saved = json.loads(path.read_text())["config"]
        cfg = FedConfig.from_dict(saved)
        assert path.parent.name in (run_key(cfg, "cpu"), run_key(cfg, "cuda")), path
        assert run_key(cfg.replace(client_parallelism=4), "cpu") != run_key(cfg, "cpu")
