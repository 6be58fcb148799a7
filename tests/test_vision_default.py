"""The offline vision default, ``vit-tiny-fmnist``: it ships inside the package, loads by name as a
backbone with a fresh head, its model card's numbers re-measure, and all three methods run on it.

The card's numbers are re-measured with the same functions the pretraining script used
(``scripts/pretrain_vision_default.py``), on the shipped files. Tolerances: the inputs and the
weights are the same, so only floating-point summation order can differ (thread count, CPU
vector path); that moves features by about 1e-6 relative and can flip only predictions lying
almost exactly on a decision boundary. We allow 2 of the 270 digits test images and 10 of the
10,000 Fashion-MNIST test images; on the machine that wrote the card both match exactly.
"""
import fnmatch
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedpft_lite.arch import arch_of, ffn_linears, get_layers
from fedpft_lite.compression import compress_ffn
from fedpft_lite.config import FedConfig
from fedpft_lite.emulator import build_emulator
from fedpft_lite.federated import run_federated
from fedpft_lite.models import CHECKPOINTS_DIR, OFFLINE_MODELS, VISION_DEFAULT, load_foundation_model

ROOT = Path(__file__).resolve().parents[1]
FOLDER = CHECKPOINTS_DIR / VISION_DEFAULT
CARD = json.loads((FOLDER / "card.json").read_text())
APT = "apt-get install -y dataset-fashion-mnist"


def _script():
    spec = importlib.util.spec_from_file_location("pretrain_vision_default",
                                                  ROOT / "scripts" / "pretrain_vision_default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def vit():
    return load_foundation_model(VISION_DEFAULT, num_labels=10)


# -- shipping and loading -------------------------------------------------------------------------
def test_checkpoint_ships_as_package_data():
    """Inside the package folder, and every file matched by pyproject's package-data (so a normal,
    non-editable install carries it too)."""
    assert VISION_DEFAULT in OFFLINE_MODELS
    assert FOLDER.parent.parent == Path(__import__("fedpft_lite").__file__).resolve().parent
    files = sorted(p.name for p in FOLDER.iterdir())
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md",
            "card.json", "pretraining_head.safetensors"} <= set(files)
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fedpft_lite"]
    for name in files:
        rel = f"checkpoints/{VISION_DEFAULT}/{name}"
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), f"{rel} is not package data"
    assert (FOLDER / "model.safetensors").stat().st_size < 10e6  # a few MB, committed to git


def test_loads_by_name_as_backbone_with_fresh_head(vit):
    model, processor = vit
    cfg = model.config
    assert cfg.model_type == "vit" and model.modality == "image"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (6, 128, 512)
    assert len(get_layers(model.backbone)) == 6
    assert model.backbone.pooler is None and model.pooling == "cls"
    # The pretrained weights, not a fresh initialisation.
    shipped = load_file(str(FOLDER / "model.safetensors"))
    for name, p in model.backbone.state_dict().items():
        assert torch.equal(p, shipped[name]), name
    assert sum(p.numel() for p in model.backbone.parameters()) == CARD["parameters"]["backbone"]
    # A fresh head: not the Fashion-MNIST one, and any number of labels.
    head = load_file(str(FOLDER / "pretraining_head.safetensors"))
    assert not torch.allclose(model.classifier.weight, head["classifier.weight"])
    assert not model.classifier.bias.detach().any()
    three, _ = load_foundation_model(VISION_DEFAULT, num_labels=3)
    assert three.classifier.out_features == 3
    # The processor gives what the backbone expects.
    assert type(processor).__name__.startswith("ViTImageProcessor")
    assert processor.size == {"height": 28, "width": 28}
    assert CARD["architecture"]["image_size"] == cfg.image_size == 28


def test_digits_batches_fit_the_vit(vit):
    """8x8 grey digits come out of data.encode as 3x28x28 and run through the model."""
    from fedpft_lite.data import encode, load_task, make_loader
    model, processor = vit
    enc = encode(load_task("digits"), processor)
    batch = next(iter(make_loader(enc["train"], processor, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 28, 28)
    px = batch["pixel_values"]
    assert torch.equal(px[:, 0], px[:, 1]) and torch.equal(px[:, 0], px[:, 2])  # grey -> RGB
    assert float(px.min()) == -1.0 and float(px.max()) > 0.5  # black background, bright ink
    with torch.no_grad():
        assert model(**batch).logits.shape == (4, 10)


def test_model_card_states_the_measured_numbers():
    text = (FOLDER / "README.md").read_text()
    r = CARD["results"]
    assert f"{r['fashion_mnist_test_accuracy']:.4f}" in text
    assert f"{r['digits_linear_probe']['test_accuracy']:.4f}" in text
    assert "MIT" in text and CARD["data"]["debian_version"] in text
    assert CARD["command"] in text and f"{CARD['parameters']['backbone']:,}" in text
    assert CARD["training"]["seed"] == 0


# -- re-measuring the card ------------------------------------------------------------------------
def test_digits_linear_probe_matches_card(script, vit):
    model, processor = vit
    probe = script.digits_probe(model, processor)
    card = CARD["results"]["digits_linear_probe"]
    assert probe["n_test"] == card["n_test"] and probe["n_train"] == card["n_train"]
    assert abs(probe["test_accuracy"] - card["test_accuracy"]) <= 2 / card["n_test"] + 1e-9
    # Pretraining is worth something on a new task: better than the same ViT at random init.
    assert card["test_accuracy"] > CARD["results"]["digits_linear_probe_random_init"]["test_accuracy"]


@pytest.mark.slow
def test_fashion_mnist_accuracy_matches_card(script):
    if not Path(script.DATA_DIR).exists():
        if os.environ.get("CI"):   # .ci/run installs it: in CI a missing dataset is a failure
            pytest.fail(f"Fashion-MNIST is not installed in CI ({APT}, see .ci/run)")
        pytest.skip(f"Fashion-MNIST is not installed ({APT})")
    data = script.load_fashion_mnist()
    assert script.data_files_sha256() == CARD["data"]["sha256"]  # the same data as the card's
    model, processor = script.load_with_pretraining_head(FOLDER)
    x, y = data["test"]
    acc = script.head_accuracy(model, x, y, processor)
    assert abs(acc - CARD["results"]["fashion_mnist_test_accuracy"]) <= 10 / len(y) + 1e-9


# -- the methods on it ----------------------------------------------------------------------------
def test_compression_keeps_first_and_last_layer_whole(vit):
    fm, _ = vit
    sub = compress_ffn(fm, keep_ratio=0.25)
    arch = arch_of(fm)
    widths = [ffn_linears(layer, arch)[0].out_features for layer in get_layers(sub.backbone)]
    assert widths == [512, 128, 128, 128, 128, 512] == sub.structure["ffn_widths"]
    for i in (0, 5):  # whole and untouched
        fm_layer, sub_layer = get_layers(fm.backbone)[i], get_layers(sub.backbone)[i]
        for (n, a), (_, b) in zip(fm_layer.named_parameters(), sub_layer.named_parameters()):
            assert torch.equal(a, b), (i, n)
    em = build_emulator(fm)
    assert em.structure["layer_map"][0] == 0 and em.structure["layer_map"][-1] == 5
    assert len(em.structure["layer_map"]) < 6  # some middle layers dropped


@pytest.mark.parametrize("method", ["fedpetuning", "fedot", "fedpft"])
def test_two_federated_rounds_on_digits(method):
    # FedPFT as the paper's method: layer-level alignment before FL, neuron-level after round 1
    cfg = FedConfig(method=method, model=VISION_DEFAULT, task="digits", num_clients=4, fraction=0.5,
                    rounds=2, batch_size=32, lr=3e-3, max_train=256, max_test=128,
                    eval_proxy="final", seed=0, align_every=1, align_steps=5)
    h = run_federated(cfg, progress=False)
    assert len(h) == 2 and [r["aligned"] for r in h] == [method == "fedpft", False]
    row = h[-1]
    assert math.isfinite(row["fm_accuracy"]) and 0.0 <= row["fm_accuracy"] <= 1.0
    assert math.isfinite(row["proxy_accuracy"]) and math.isfinite(row["train_loss"])
    assert row["bytes_up"] > 0
