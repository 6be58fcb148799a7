"""Causal-LM fine-tuning (issue 28): a decoder trained on its clients' text by next-token loss.

Tiny random-init decoders of each family's own causal-LM class (hidden 32, 4 layers, FFN 64):
mechanics only, no decoder weights install offline. The text is real (BBC News sentences, or a
file written here), the models are not pretrained, so perplexities are near the vocabulary size
and only their direction and bookkeeping are checked. What is checked: the wrapper computes the
family's own logits and loss; the sub-FM at keep 1.0 is exact and clients send LoRA only; a
language model's sub-FM saves and reloads (tied head included); every real next token is scored
once; FedPFT and FedOT run from the command line on a text file with perplexity in the history,
the other four methods in process;
clients can be non-IID by a column of your file; bad combinations are refused before any model
loads.
"""
import json
import math

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

from fedpft_lite.causal_lm import IGNORE, FMLanguageModel, next_token_loss
from fedpft_lite.cli import main
from fedpft_lite.compression import compress_ffn
from fedpft_lite.config import FedConfig
from fedpft_lite.data import Collator, encode, load_task, make_loader
from fedpft_lite.evaluation import evaluate
from fedpft_lite.federated import client_partitions, run_federated
from fedpft_lite.lora import add_lora, plug_back, trainable_state
from fedpft_lite.models import load_foundation_model
from fedpft_lite.training import local_train

from test_families import DECODERS, TINY_CONFIGS

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def tiny_causal_lm(family: str, **changes):
    """A random-init ``AutoModelForCausalLM`` of the family, the same weights every call."""
    config = AutoConfig.for_model(family, **{**TINY_CONFIGS[family], **changes})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def wrap(causal) -> FMLanguageModel:
    return FMLanguageModel(causal.base_model, causal.get_output_embeddings()).eval()


def token_batch(seed=0):
    """Two texts of token ids, the second right-padded: its padding labelled IGNORE."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = ids.masked_fill(mask == 0, IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("family", DECODERS)
def test_the_wrapper_computes_the_familys_own_logits_and_next_token_loss(family):
    causal = tiny_causal_lm(family)
    batch = token_batch()
    with torch.no_grad():
        theirs = causal(**batch, use_cache=False)
        ours = wrap(causal)(**batch)   # GPT-2: its Conv1D now Linear, the same function
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=1e-5)
    # and the loss is the mean over exactly the real next tokens: 8 + 5 of them
    per_token = next_token_loss(ours.logits, batch["labels"], reduction="sum")
    torch.testing.assert_close(per_token / 13, ours.loss)


def test_sub_fm_at_keep_one_is_exact_and_clients_train_and_send_lora_only():
    fm = wrap(tiny_causal_lm("llama"))
    batch = token_batch()
    sub = compress_ffn(fm, keep_ratio=1.0)
    with torch.no_grad():
        assert torch.equal(sub(**batch).logits, fm(**batch).logits)
    fm, sub = add_lora(fm), add_lora(sub)
    local_train(sub, [token_batch(s) for s in range(3)], lr=5e-2)
    state = trainable_state(sub)
    assert state and all("lora_" in name for name in state), "no head, no embeddings: LoRA only"
    assert not any(p.requires_grad for p in sub.lm_head.parameters())
    plug_back(fm, state)
    with torch.no_grad():   # keep 1.0: the FM with the plugged-in LoRA is the trained proxy
        torch.testing.assert_close(fm(**batch).logits, sub(**batch).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(fm(**batch).logits, wrap(tiny_causal_lm("llama"))(**batch).logits)


@pytest.mark.parametrize("family,tie", [("llama", True), ("llama", False), ("gpt2", True), ("phi", False)])
def test_a_compressed_language_model_saves_and_reloads_tied_head_included(family, tie, tmp_path):
    fm = wrap(tiny_causal_lm(family, tie_word_embeddings=tie))
    assert fm.tied == tie
    sub = compress_ffn(fm, keep_ratio=0.5)
    sub.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "fedpft_lite.json").read_text())
    assert meta["objective"] == "causal-lm" and meta["tied"] == tie
    again = FMLanguageModel.from_pretrained(tmp_path)
    assert again.tied == tie and again.structure == sub.structure
    batch = token_batch()
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, sub(**batch).logits)
    with pytest.raises(ValueError, match="objective='causal-lm'"):
        load_foundation_model(str(tmp_path))   # a classifier asked of a language model's folder


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """A folder as a user has one for a hub decoder: a 4-layer random-init LlamaForCausalLM (tied
    head) saved by transformers, with the MiniLM tokenizer (the one installed offline)."""
    _, tok = load_foundation_model("minilm", num_labels=2)
    config = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4,
                                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                      max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                                      tie_word_embeddings=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama-lm")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_every_real_next_token_is_scored_once(lm_folder):
    fm, tok = load_foundation_model(str(lm_folder), objective="causal-lm")
    texts = load_task("bbc-news", max_test=12, objective="causal-lm")["test"]
    enc = encode(texts, tok, max_length=24, causal_lm=True)
    batch = Collator(tok)([enc[i] for i in range(4)])
    assert torch.equal(batch["labels"] == IGNORE, batch["attention_mask"] == 0)   # padding only
    res = evaluate(fm, make_loader(enc, tok, batch_size=5))
    assert res["n"] == sum(len(ids) - 1 for ids in enc["input_ids"])   # the first token has no context
    assert res["perplexity"] == pytest.approx(math.exp(res["loss"]))
    assert 0 <= res["accuracy"] <= 1


@pytest.mark.parametrize("method", ["fedpft", "fedot"])
def test_a_decoder_fine_tunes_on_a_text_file_from_the_command_line(method, lm_folder, tmp_path, capsys):
    sentences = load_task("bbc-news", objective="causal-lm")["train"]["text"][:200]
    text = tmp_path / "news.txt"
    text.write_text("\n".join(sentences) + "\n")
    out = tmp_path / method
    assert main(["run", "--no-progress", "--output-dir", str(out), "--set", f"method={method}",
                 f"model={lm_folder}", f"task={text}", "objective=causal-lm", "num_clients=4",
                 "fraction=0.5", "rounds=3", "align_every=1", "align_steps=3", "align_before_steps=5",
                 "lr=3e-3", "max_length=32", "batch_size=8", "device=cpu"]) == 0
    assert "final full-FM test perplexity" in capsys.readouterr().out
    rows = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["fm_perplexity"] == pytest.approx(math.exp(r["fm_loss"]))
    assert rows[-1]["fm_perplexity"] < rows[0]["fm_perplexity"]   # training on the text helped
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["objective"] == "causal-lm" and results["labels"] == {"0": "all"}


@pytest.mark.parametrize("method", ["fedpetuning", "fedot-kd", "fedbiot", "crash"])
def test_every_other_method_fine_tunes_a_language_model(method, lm_folder):
    cfg = FedConfig(method=method, model=str(lm_folder), task="bbc-news", objective="causal-lm", num_clients=4,
                    fraction=0.5, rounds=2, align_before_steps=3, align_steps=2, lr=3e-3, max_train=80, max_test=20,
                    max_public=32, max_length=24, batch_size=8, device="cpu").validate()
    rows = run_federated(cfg, progress=False)
    assert [r["round"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["fm_perplexity"]) and r["bytes_up"] > 0 for r in rows)


def test_clients_can_be_non_iid_by_a_column_of_your_file(tmp_path):
    rows = [("text", "source")] + [(f"sentence {i} from {s}", s) for s in ("bbc", "wiki", "forum")
                                   for i in range(20)]
    csv = tmp_path / "sources.csv"
    csv.write_text("\n".join(",".join(r) for r in rows) + "\n")
    cfg = FedConfig(task=str(csv), objective="causal-lm", label_column="source", num_clients=3,
                    partition="shards", labels_per_client=1, public_fraction=0.0,
                    method="fedpetuning").validate()
    ds = load_task(cfg.task, **cfg.task_options(), objective=cfg.objective)
    sources = ds["train"]["label"]
    parts = client_partitions(cfg, sources)
    assert sorted(len({sources[i] for i in part}) for part in parts) == [1, 1, 1]
    assert sorted({sources[i] for part in parts for i in part}) == [0, 1, 2]   # one source each


@pytest.mark.parametrize("changes,message", [
    (dict(task="{txt}"), "only objective 'causal-lm' can use"),
    (dict(objective="causal-lm", task="digits"), "holds images"),
    (dict(objective="causal-lm", client_parallelism=2), "client_parallelism=1"),
    (dict(objective="masked-lm"), "objective must be one of"),
])
def test_bad_combinations_are_refused_before_anything_loads(changes, message, tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("one line\n")
    changes = {k: v.format(txt=txt) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(ValueError, match=message):
        FedConfig(**changes).validate()


def test_an_encoder_is_refused_as_a_language_model(tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model("bert", **TINY_CONFIGS["bert"])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs a decoder language model"):
        load_foundation_model(str(tmp_path), objective="causal-lm")


def test_cli_info_names_the_objectives(capsys):
    assert main(["info"]) == 0
    assert "objectives: classification, causal-lm" in capsys.readouterr().out
