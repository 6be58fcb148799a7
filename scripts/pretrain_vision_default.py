"""Pretrain the offline vision default, ``vit-tiny-fmnist``: a small ViT on Fashion-MNIST.

No pretrained vision transformer ships in any package, so the project makes its own: a 6-layer
ViT (hidden 128, FFN 512, 4 heads, 7x7 patches on 28x28 images) trained from scratch, fully
seeded, on the 60,000 Fashion-MNIST training images with a 10-way head. Six layers keep FedPFT's
compression of the middle layers and FedOT's layer drop meaningful; 7x7 patches (16 tokens + CLS)
keep a training epoch near two minutes on one CPU core.

What it writes (``fedpft_lite/checkpoints/vit-tiny-fmnist/`` by default, package data):

* ``config.json`` + ``model.safetensors``: the ViT backbone, loadable by ``AutoModel`` and by
  ``fedpft_lite.models.load_foundation_model("vit-tiny-fmnist", num_labels=...)`` (fresh head);
* ``preprocessor_config.json``: the ``ViTImageProcessor`` (resize to 28x28, scale to [0, 1],
  normalise with mean = std = 0.5 per channel). Grey images enter as 3 identical channels,
  exactly as ``fedpft_lite.data.encode`` feeds them (``PIL.Image.convert("RGB")``);
* ``pretraining_head.safetensors``: the Fashion-MNIST head (``classifier.weight/bias``), so a
  test can re-measure the pretraining accuracy;
* ``card.json`` (numbers, machine-readable) and ``README.md`` (the model card).

Data: the Debian package ``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``),
idx files under ``/usr/share/datasets/fashion-mnist``. Run (about 8 minutes on one core)::

    OMP_NUM_THREADS=1 python scripts/pretrain_vision_default.py
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file

import fedpft_lite
from fedpft_lite.data import encode, load_task, make_loader
from fedpft_lite.evaluation import linear_probe
from fedpft_lite.models import CHECKPOINTS_DIR, VISION_DEFAULT, FMClassifier, load_foundation_model

DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
ARCH = dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=512,
            image_size=28, patch_size=7, num_channels=3, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0)
MEAN = STD = 0.5
HEAD_FILE = "pretraining_head.safetensors"


# -- data ----------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzipped or not): big-endian magic (dtype code, ndim), dims, then the data."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def find_file(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder} has no {stem}(.gz): install the Debian package with "
                            f"`apt-get install -y {DEBIAN_PACKAGE}` or pass --data-dir")


def load_fashion_mnist(folder: str | Path = DATA_DIR) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (60000x28x28 uint8, labels), 'test': (10000x28x28, labels)}."""
    folder = Path(folder)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(find_file(folder, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(find_file(folder, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        out[split] = (x, y)
    return out


def data_files_sha256(folder: str | Path = DATA_DIR) -> dict[str, str]:
    folder = Path(folder)
    files = [find_file(folder, f"{p}-{k}-idx{n}-ubyte") for p in ("train", "t10k")
             for k, n in (("images", 3), ("labels", 1))]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def debian_version(package: str = DEBIAN_PACKAGE) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def make_processor() -> transformers.ViTImageProcessor:
    return transformers.ViTImageProcessor(size={"height": ARCH["image_size"], "width": ARCH["image_size"]},
                                          image_mean=[MEAN] * 3, image_std=[STD] * 3,
                                          do_resize=True, do_rescale=True, do_normalize=True)


def to_pixels(x: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 3, 28, 28): what the processor does to 28x28 grey images."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float().div(255.0).sub(MEAN).div(STD)
    return t.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def processor_pixels(images: np.ndarray, processor) -> torch.Tensor:
    """The published path: PIL image -> RGB (as fedpft_lite.data.encode does) -> processor."""
    pil = [Image.fromarray(im).convert("RGB") for im in images]
    return processor(pil, return_tensors="pt")["pixel_values"]


def augment(x: torch.Tensor, g: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flip and a random translation of up to ``shift`` pixels (black fill)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = torch.nn.functional.pad(x, (shift,) * 4, value=(0.0 - MEAN) / STD)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=g).tolist()
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


# -- training and measuring ----------------------------------------------------------------------
def lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    """Linear warm-up, then cosine decay to 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain(x: np.ndarray, y: np.ndarray, args) -> tuple[FMClassifier, list[dict]]:
    torch.manual_seed(args.seed)
    backbone = transformers.ViTModel(transformers.ViTConfig(**ARCH))  # init seeded by args.seed
    pooler_state = {k: v.clone() for k, v in backbone.pooler.state_dict().items()}
    model = FMClassifier(backbone, num_labels=10, pooling="cls", seed=args.seed)  # drops pooler
    model._pooler_init = pooler_state  # shipped untrained, see save()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.999))
    pixels = to_pixels(x)
    labels = torch.from_numpy(y)
    g = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = len(labels) // args.batch_size  # drop the last partial batch
    total = steps_per_epoch * args.epochs
    log, step = [], 0
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(labels), generator=g)
        t0, c0, loss_sum, correct = time.time(), time.process_time(), 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            xb = augment(pixels[idx], g) if args.augment else pixels[idx]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, args.warmup_steps, args.lr)
            out = model(pixel_values=xb, labels=labels[idx])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            loss_sum += out.loss.item() * len(idx)
            correct += int((out.logits.argmax(-1) == labels[idx]).sum())
        n = steps_per_epoch * args.batch_size
        row = {"epoch": epoch + 1, "train_loss": round(loss_sum / n, 4),
               "train_accuracy": round(correct / n, 4), "seconds": round(time.time() - t0, 1),
               "cpu_seconds": round(time.process_time() - c0, 1)}
        log.append(row)
        print(json.dumps(row), flush=True)
    return model.eval(), log


def save(model: FMClassifier, processor, folder: Path) -> None:
    """Backbone in Hugging Face format (+ its untrained pooler, so AutoModel loads without a
    missing-weights report), processor, and the pretraining head on its own."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone = model.backbone
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    state.update({f"pooler.{k}": v.contiguous() for k, v in model._pooler_init.items()})
    backbone.config.save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(folder)
    save_file({"classifier.weight": model.classifier.weight.detach().contiguous(),
               "classifier.bias": model.classifier.bias.detach().contiguous()},
              str(folder / HEAD_FILE))


@torch.no_grad()
def head_accuracy(model: FMClassifier, images: np.ndarray, labels: np.ndarray, processor,
                  batch_size: int = 500) -> float:
    """Accuracy of ``model`` on grey images fed through the processor, as a user would feed them."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        px = processor_pixels(images[i:i + batch_size], processor)
        correct += int((model(pixel_values=px).logits.argmax(-1).numpy() == labels[i:i + batch_size]).sum())
    return correct / len(labels)


def load_with_pretraining_head(folder: str | Path):
    """The shipped model with its Fashion-MNIST head put back (for re-measuring the card)."""
    from safetensors.torch import load_file
    model, processor = load_foundation_model(str(folder), num_labels=10)
    result = model.load_state_dict(load_file(str(Path(folder) / HEAD_FILE)), strict=False)
    if result.unexpected_keys or any(k.startswith("classifier.") for k in result.missing_keys):
        raise KeyError(f"{HEAD_FILE} does not match the head: {result}")
    return model.eval(), processor


def digits_probe(model: FMClassifier, processor) -> dict:
    """Frozen-backbone linear probe on load_task('digits') with linear_probe's defaults."""
    enc = encode(load_task("digits"), processor)
    return linear_probe(model, make_loader(enc["train"], processor, 64),
                        make_loader(enc["test"], processor, 64), progress=False)


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


# -- the model card ------------------------------------------------------------------------------
CARD = """# vit-tiny-fmnist: a small ViT pretrained on Fashion-MNIST (fedpft_lite's offline vision default)

Made by `scripts/pretrain_vision_default.py` in this repository; every number below was written
by that script from its own run (machine-readable in `card.json`).

**What it is for.** No pretrained vision transformer installs from a package registry, so this
checkpoint lets fedpft_lite's vision path (FedPFT / FedOT / FedPETuning on a ViT) run offline on
real pretrained weights. It is a *small teaching default*, not a substitute for a hub ViT such
as `google/vit-base-patch16-224-in21k`: its pretraining data is 60,000 grey 28x28 product images.

```python
from fedpft_lite.models import load_foundation_model
model, processor = load_foundation_model("{name}", num_labels=10)   # backbone + fresh head
```

## Architecture

Hugging Face `ViTModel` (`model_type` "vit"), pre-LayerNorm encoder:

| | |
|---|---|
| layers | {num_hidden_layers} |
| hidden size | {hidden_size} |
| FFN width | {intermediate_size} (GELU) |
| attention heads | {num_attention_heads} |
| input | {image_size}x{image_size}, {num_channels} channels (grey images repeated to RGB) |
| patches | {patch_size}x{patch_size} -> {n_patches} tokens + CLS |
| dropout | none in the backbone |
| parameters (backbone, as used: no pooler) | {params_backbone:,} |
| parameters in `model.safetensors` | {params_file:,} (includes ViT's pooler, {params_pooler:,}, left at its seeded initialisation: fedpft_lite pools the CLS token itself and drops the pooler; it is stored only so that `AutoModel.from_pretrained` loads without a missing-weights report) |
| file size | {size_mb:.2f} MB (`model.safetensors`, float32) |

Module names (transformers {transformers}): `layers.N.attention.{{q,k,v,o}}_proj`,
`layers.N.mlp.fc1` / `fc2`, as `fedpft_lite.arch.ARCHITECTURES["vit"]` expects.

Image processor (`preprocessor_config.json`): `ViTImageProcessor`, resize to {image_size}x{image_size}
(bilinear), rescale by 1/255, normalise with mean = std = 0.5 per channel. Pretraining fed
Fashion-MNIST's 28x28 images as `x/255`, normalised the same way and repeated to 3 channels; the
script checks that this equals the processor's output for `PIL.Image.convert("RGB")` images
(what `fedpft_lite.data.encode` does), maximum difference {processor_max_diff}. Smaller images
(scikit-learn's 8x8 digits) are upsampled to 28x28 by the processor.

## Data

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research,
https://github.com/zalandoresearch/fashion-mnist), licence MIT (Debian: Expat), copyright 2017
Zalando SE. Installed from the Debian package `{deb_package}` version `{deb_version}`
(`apt-get install -y {deb_package}`), idx files read from `{data_dir}`:
60,000 training images (all used for training, no validation split, no model selection) and the
10,000 test images (used only for the number below, once, after training).

SHA-256 of the files read:

{sha_lines}

## Training

| | |
|---|---|
| seed | {seed} (`torch.manual_seed` before building the model: backbone init; head init from `FMClassifier(seed={seed})`; one `torch.Generator` seeded {seed} for shuffling and augmentation) |
| objective | 10-way cross-entropy on the CLS token (`FMClassifier`, pooling "cls", head dropout 0.1) |
| optimiser | AdamW, lr {lr}, betas (0.9, 0.999), weight decay {weight_decay} (matrices outside the embeddings; none on biases, LayerNorms, embeddings), gradient clipping at norm 1.0 |
| schedule | linear warm-up over {warmup_steps} steps, then cosine decay to 0 |
| batch size | {batch_size} (last partial batch of each epoch dropped), {steps} steps |
| epochs | {epochs} |
| augmentation | {augmentation} |
| time | training {train_seconds:.0f} s wall clock, {train_cpu_seconds:.0f} s of CPU time (the machine was shared, so wall > CPU); {total_seconds:.0f} s wall for the whole script including evaluation |
| machine | {cpu}, {torch_threads} torch thread(s) ({cores_visible} cores visible, shared with other work: load average {load} at start); Python {python}, torch {torch}, transformers {transformers} |

Per epoch (training loss / accuracy on the augmented batches seen, wall / CPU seconds):

{epoch_lines}

Command:

```bash
{command}
```

## Measured

| measurement | value |
|---|---|
| Fashion-MNIST test accuracy, pretraining head (10,000 images, fed through the processor) | **{fmnist_acc:.4f}** |
| digits (`load_task("digits")`, 8x8 upsampled to 28x28), frozen-backbone linear probe, test accuracy | **{probe_acc:.4f}** ({probe_n_test} test / {probe_n_train} train images; train accuracy {probe_train_acc:.4f}) |
| same probe on the same architecture, random initialisation (seed {seed}), for reference | {random_probe_acc:.4f} |

The linear probe is `fedpft_lite.evaluation.linear_probe` with its defaults (full-batch AdamW,
100 epochs, lr 1e-2, weight decay 1e-4, seed 0, standardised CLS features) on
`load_task("digits")` (split seed 0: 70 % train, 15 % public, 15 % test).
`tests/test_vision_default.py` re-measures both bold numbers and compares them with `card.json`.

## Limits

Grey, 28x28, product photos only: colour and natural-image statistics are unknown to it. Small
and briefly trained; use a hub ViT for claims about the paper's CIFAR / Flowers results.
"""


def write_card(folder: Path, card: dict) -> None:
    a, r = card["architecture"], card["results"]
    t, d, m = card["training"], card["data"], card["machine"]
    text = CARD.format(
        name=card["name"], **a, n_patches=(a["image_size"] // a["patch_size"]) ** 2,
        params_backbone=card["parameters"]["backbone"], params_file=card["parameters"]["file"],
        params_pooler=card["parameters"]["pooler_unused"], size_mb=card["file_size_bytes"] / 1e6,
        transformers=m["transformers"], processor_max_diff=card["processor_check_max_abs_diff"],
        deb_package=d["debian_package"], deb_version=d["debian_version"], data_dir=d["data_dir"],
        sha_lines="\n".join(f"- `{k}`: `{v}`" for k, v in d["sha256"].items()),
        seed=t["seed"], lr=t["lr"], weight_decay=t["weight_decay"], warmup_steps=t["warmup_steps"],
        batch_size=t["batch_size"], steps=t["steps"], epochs=t["epochs"],
        augmentation=("random horizontal flip (p 0.5) and random translation by up to 2 pixels "
                      "(black fill)" if t["augment"] else "none"),
        train_seconds=t["train_seconds"], train_cpu_seconds=t["train_cpu_seconds"], total_seconds=card["total_seconds"],
        cpu=m["cpu"], torch_threads=m["torch_threads"], cores_visible=m["cores_visible"],
        load=m["load_average_at_start"], python=m["python"], torch=m["torch"],
        epoch_lines="\n".join(f"- epoch {e['epoch']}: loss {e['train_loss']}, accuracy "
                              f"{e['train_accuracy']}, {e['seconds']} s / {e['cpu_seconds']} s" for e in t["log"]),
        command=card["command"], fmnist_acc=r["fashion_mnist_test_accuracy"],
        probe_acc=r["digits_linear_probe"]["test_accuracy"],
        probe_train_acc=r["digits_linear_probe"]["train_accuracy"],
        probe_n_test=r["digits_linear_probe"]["n_test"], probe_n_train=r["digits_linear_probe"]["n_train"],
        random_probe_acc=r["digits_linear_probe_random_init"]["test_accuracy"])
    (folder / "README.md").write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--out", default=str(CHECKPOINTS_DIR / VISION_DEFAULT))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--no-augment", dest="augment", action="store_false")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-train", type=int, default=None, help="use the first N training images (smoke runs)")
    args = ap.parse_args(argv)

    t_start = time.time()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    info = machine()
    data = load_fashion_mnist(args.data_dir)
    xtr, ytr = data["train"]
    if args.max_train:
        xtr, ytr = xtr[:args.max_train], ytr[:args.max_train]
    xte, yte = data["test"]
    processor = make_processor()
    diff = float((processor_pixels(xtr[:64], processor) - to_pixels(xtr[:64])).abs().max())
    if diff > 1e-6:
        raise AssertionError(f"training pixels differ from the processor's by {diff}")

    t0, c0 = time.time(), time.process_time()
    model, log = pretrain(xtr, ytr, args)
    train_seconds, train_cpu_seconds = time.time() - t0, time.process_time() - c0
    out = Path(args.out)
    save(model, processor, out)

    # Measure what ships, loaded the way users load it.
    shipped, proc = load_with_pretraining_head(out)
    fmnist_acc = head_accuracy(shipped, xte, yte, proc)
    fresh, proc = load_foundation_model(str(out), num_labels=10)
    probe = digits_probe(fresh, proc)
    torch.manual_seed(args.seed)
    random_vit = FMClassifier(transformers.ViTModel(transformers.ViTConfig(**ARCH)), 10, seed=args.seed)
    random_probe = digits_probe(random_vit.eval(), proc)

    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    n_pooler = sum(v.numel() for v in model._pooler_init.values())
    card = {
        "name": VISION_DEFAULT,
        "architecture": {k: ARCH[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                              "num_attention_heads", "image_size", "patch_size", "num_channels")},
        "parameters": {"backbone": n_backbone, "pooler_unused": n_pooler, "file": n_backbone + n_pooler,
                       "pretraining_head": sum(p.numel() for p in model.classifier.parameters())},
        "file_size_bytes": (out / "model.safetensors").stat().st_size,
        "processor_check_max_abs_diff": diff,
        "data": {"name": "Fashion-MNIST", "licence": "MIT (Debian: Expat)", "debian_package": DEBIAN_PACKAGE,
                 "debian_version": debian_version(), "data_dir": str(args.data_dir),
                 "n_train": int(len(ytr)), "n_test": int(len(yte)), "classes": CLASSES,
                 "sha256": data_files_sha256(args.data_dir)},
        "training": {"seed": args.seed, "optimizer": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay,
                     "warmup_steps": args.warmup_steps, "schedule": "linear warm-up, cosine to 0",
                     "batch_size": args.batch_size, "epochs": args.epochs, "augment": args.augment,
                     "steps": (len(ytr) // args.batch_size) * args.epochs,
                     "grad_clip": 1.0, "train_seconds": round(train_seconds, 1),
                     "train_cpu_seconds": round(train_cpu_seconds, 1), "log": log},
        "results": {"fashion_mnist_test_accuracy": fmnist_acc,
                    "digits_linear_probe": probe,
                    "digits_linear_probe_random_init": random_probe},
        "machine": info,
        "command": "OMP_NUM_THREADS=1 python " + " ".join(shlex.quote(a) for a in
                                                          ["scripts/pretrain_vision_default.py", *sys.argv[1:]]),
        "fedpft_lite_version": fedpft_lite.__version__ if hasattr(fedpft_lite, "__version__") else None,
    }
    card["total_seconds"] = round(time.time() - t_start, 1)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    write_card(out, card)
    print(json.dumps({"fashion_mnist_test_accuracy": fmnist_acc, "digits_probe": probe["test_accuracy"],
                      "digits_probe_random_init": random_probe["test_accuracy"],
                      "train_seconds": round(train_seconds, 1), "out": str(out)}))


if __name__ == "__main__":
    main()
