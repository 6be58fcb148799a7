"""Foundation-model loading and the FMClassifier wrapper.

The real offline default (all-MiniLM-L6-v2) is loaded once per module; everything mechanical
(families, save/load) uses tiny random-init configs so the module stays fast on 2 CPU cores.
"""
import time

import pytest
import torch
import transformers

from fedpft_lite import ARCHITECTURES, FMClassifier, HubUnreachableError, load_foundation_model
from fedpft_lite.models import META_FILE, WEIGHTS_FILE

SENTENCES = [
    "The central bank raised interest rates by a quarter of a point on Thursday.",
    "The striker scored twice in the second half to win the cup final.",
    "A new smartphone with a foldable screen goes on sale next month.",
]
NUM_LABELS = 5


@pytest.fixture(scope="module")
def minilm():
    model, tokenizer = load_foundation_model("minilm", num_labels=NUM_LABELS, seed=0)
    return model, tokenizer


@pytest.fixture(scope="module")
def batch(minilm):
    _, tokenizer = minilm
    return tokenizer(SENTENCES, padding=True, truncation=True, max_length=64, return_tensors="pt")


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture
def unreachable_hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # port 9 (discard): connection refused
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# -- the real offline default ---------------------------------------------------------------------
def test_minilm_loads_offline_as_fmclassifier_with_tokenizer(minilm):
    model, tokenizer = minilm
    assert isinstance(model, FMClassifier)
    assert isinstance(tokenizer, transformers.PreTrainedTokenizerBase)
    assert not model.training, "load_foundation_model must return the model in eval mode"
    assert model.num_labels == NUM_LABELS
    assert model.config.model_type == "bert"
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert model.pooling == "mean", "sentence-transformer checkpoints should default to mean pooling"
    assert model.modality == "text"
    # A real vocabulary (not an empty placeholder tokenizer): known words are not [UNK].
    ids = tokenizer("the bank raised rates")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert len(tokenizer) > 20000


def test_minilm_logits_shape(minilm, batch):
    model, _ = minilm
    logits = _logits(model, batch)
    assert logits.shape == (len(SENTENCES), NUM_LABELS)
    assert torch.isfinite(logits).all()
    # Different sentences get different logits (the backbone is really used).
    assert not torch.equal(logits[0], logits[1])


def test_minilm_loss_with_labels(minilm, batch):
    model, _ = minilm
    labels = torch.tensor([0, 3, 4])
    with torch.no_grad():
        out = model(**batch, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    assert torch.allclose(out.loss, expected)


def test_same_seed_bit_identical_logits(minilm, batch):
    model, _ = minilm
    reference = _logits(model, batch)
    assert torch.equal(reference, _logits(model, batch)), "eval-mode forward must be deterministic"
    torch.manual_seed(12345)  # the head must not depend on the global RNG state
    torch.rand(1000)
    again, _ = load_foundation_model("minilm", num_labels=NUM_LABELS, seed=0)
    assert torch.equal(again.classifier.weight, model.classifier.weight)
    assert torch.equal(reference, _logits(again, batch))


def test_different_seed_different_logits(minilm, batch):
    model, _ = minilm
    other, _ = load_foundation_model("minilm", num_labels=NUM_LABELS, seed=1)
    # Same backbone weights, different head initialisation.
    assert torch.equal(other.backbone.embeddings.word_embeddings.weight,
                       model.backbone.embeddings.word_embeddings.weight)
    assert not torch.equal(other.classifier.weight, model.classifier.weight)
    assert not torch.allclose(_logits(model, batch), _logits(other, batch))


def test_unreachable_hub_model_fails_fast_naming_minilm(unreachable_hub):
    t0 = time.monotonic()
    with pytest.raises(HubUnreachableError) as info:
        load_foundation_model("fedpft-lite-tests/no-such-model", num_labels=2)
    assert time.monotonic() - t0 < 5.0
    msg = str(info.value)
    assert "'minilm'" in msg
    assert "fedpft-lite-tests/no-such-model" in msg
    assert isinstance(info.value, OSError)  # callers catching OSError (the CLI) still catch it


# -- the wrapper on tiny random-init configs ------------------------------------------------------
def _tiny_bert():
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(cfg)


def test_unsupported_family_lists_supported_ones():
    """A state-space model (Mamba): no attention projections for LoRA, so it is refused."""
    cfg = transformers.MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=100, state_size=4,
                                   intermediate_size=64)
    backbone = transformers.AutoModel.from_config(cfg)
    with pytest.raises(NotImplementedError) as info:
        FMClassifier(backbone, num_labels=3)
    msg = str(info.value)
    assert "'mamba'" in msg and "attention projections" in msg
    for family in ARCHITECTURES:
        assert family in msg
    assert {"bert", "roberta", "distilbert", "vit"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_labels=1), "num_labels"),
    (dict(num_labels=3, pooling="max"), "pooling"),
])
def test_bad_head_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FMClassifier(_tiny_bert(), **kwargs)


def test_save_pretrained_round_trip_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = FMClassifier(_tiny_bert(), num_labels=3, pooling="mean", dropout=0.2, seed=7).eval()
    with torch.no_grad():  # weights no fresh model could have by chance
        model.classifier.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.backbone.encoder.layer[0].intermediate.dense.weight.mul_(3.0)
    ids = torch.randint(1, 100, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits

    folder = model.save_pretrained(tmp_path / "saved")
    for name in ("config.json", WEIGHTS_FILE, META_FILE):
        assert (folder / name).is_file()

    torch.manual_seed(999)  # a different global RNG state for the rebuilt backbone's init
    loaded = FMClassifier.from_pretrained(folder).eval()
    assert isinstance(loaded, FMClassifier)
    assert loaded.num_labels == 3 and loaded.pooling == "mean" and loaded.dropout.p == 0.2
    with torch.no_grad():
        after = loaded(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)


def test_from_pretrained_rejects_foreign_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=META_FILE):
        FMClassifier.from_pretrained(tmp_path)


def _tiny_text_backbone(family):
    common = dict(vocab_size=100, max_position_embeddings=64)
    if family == "bert":
        return _tiny_bert()
    if family == "roberta":
        cfg = transformers.RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, **common)
        return transformers.RobertaModel(cfg)
    if family == "distilbert":
        cfg = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
        return transformers.DistilBertModel(cfg)
    raise AssertionError(family)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_text_families_forward_shape(family, pooling):
    model = FMClassifier(_tiny_text_backbone(family), num_labels=4, pooling=pooling).eval()
    assert model.modality == "text"
    assert model.config.model_type == family
    ids = torch.randint(3, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                    labels=torch.tensor([0, 3]), output_hidden_states=True)
    assert out.logits.shape == (2, 4)
    assert torch.isfinite(out.logits).all()
    assert out.loss is not None and out.loss.ndim == 0
    assert out.hidden_states is not None and len(out.hidden_states) == 3  # embeddings + 2 layers


def test_vit_forward_shape():
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, image_size=16, patch_size=8, num_channels=3)
    model = FMClassifier(transformers.ViTModel(cfg), num_labels=10).eval()
    assert model.modality == "image"
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(3, 3, 16, 16)).logits
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()


def test_pooler_dropped_and_head_init_seeded():
    backbone = _tiny_bert()
    assert backbone.pooler is not None
    a = FMClassifier(backbone, num_labels=3, seed=3)
    assert a.backbone.pooler is None
    assert not any(k.startswith("backbone.pooler") for k in a.state_dict())
    b = FMClassifier(_tiny_bert(), num_labels=3, seed=3)
    c = FMClassifier(_tiny_bert(), num_labels=3, seed=4)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.count_nonzero(a.classifier.bias) == 0
