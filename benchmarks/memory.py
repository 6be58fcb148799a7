"""Client memory of the proxies over the full FM: what a client must hold to train.

FedPETuning's client holds the whole FM, FedPFT's the sub-FM, FedOT's the emulator. This builds
the three from the same FM (as in ``step_time.py``), saves each, and then measures each in a
**fresh process** that loads only that model, adds LoRA (r 8, alpha 48) + head, and runs
``--steps`` training steps on one fixed batch of real bbc-news sentences:

* on the CPU: peak resident memory of the process (``ru_maxrss``) minus its resident memory
  after the imports, i.e. model + activations + gradients + optimiser state + allocator slack;
* on CUDA: ``torch.cuda.max_memory_allocated`` over the steps.

It prints absolute figures, the parameter bytes, and the proxy / FM ratios, side by side.

Usage::

    python benchmarks/memory.py                         # MiniLM and BERT-base shape, CPU
    python benchmarks/memory.py --models bert-base --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from step_time import MODELS, build_fm, machine_line, make_batch  # noqa: E402

LABELS = ("full FM", "sub-FM", "emulator")


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(folder: str, label: str, device: str, steps: int) -> dict:
    """Runs in its own process: load one client model, train ``steps`` steps, report memory.
    The batch comes ready-made from the parent (``batch.pt``), so no data loading inflates the peak."""
    from fedpft_lite.emulator import adapter_layers
    from fedpft_lite.lora import LoraSettings, add_lora
    from fedpft_lite.models import FMClassifier
    from fedpft_lite.training import make_optimizer, train_step

    batch = torch.load(Path(folder).parent / "batch.pt")
    dev = torch.device(device)
    base = rss_mib()
    model = FMClassifier.from_pretrained(folder)
    layers = adapter_layers(model) if label == "emulator" else None
    model = add_lora(model, LoraSettings(r=8, alpha=48, dropout=0.1), layers=layers).to(dev).train()
    opt = make_optimizer(model, lr=8e-4)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    batch = {k: v.to(dev) for k, v in batch.items()}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(steps):
        train_step(model, batch, opt, grad_clip=1.0, amp=False)
    out = {"param_mib": params / 2**20}
    if dev.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux
        out["peak_mib"] = peak - base
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--child", nargs=2, metavar=("FOLDER", "LABEL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.child:
        print(json.dumps(child(*args.child, args.device, args.steps)))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        p.error(f"--models must name some of {', '.join(MODELS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda asked for, but torch sees no CUDA device")

    from fedpft_lite.compression import compress_ffn
    from fedpft_lite.emulator import build_emulator

    print(machine_line(torch.device(args.device)))
    print(f"batch {args.batch_size} x {args.seq_len} tokens, {args.steps} training steps, LoRA r 8 + head, "
          f"AdamW, fp32; each model measured in a fresh process")
    for name in models:
        with tempfile.TemporaryDirectory() as tmp:
            batch, num_labels = make_batch(args.batch_size, args.seq_len)
            torch.save(batch, Path(tmp) / "batch.pt")
            fm = build_fm(name, num_labels)
            for label, model in zip(LABELS, (fm, compress_ffn(fm), build_emulator(fm))):
                model.save_pretrained(Path(tmp) / label.replace(" ", "_"))
            del fm
            res = {}
            for label in LABELS:
                cmd = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps),
                       "--child", str(Path(tmp) / label.replace(" ", "_")), label]
                run = subprocess.run(cmd, capture_output=True, text=True, check=True)
                res[label] = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"\n{name}: peak {'CUDA allocated' if args.device.startswith('cuda') else 'RSS over imports'}")
        print(f"  {'client model':10s} {'params MiB':>10s} {'peak MiB':>9s} {'params ratio':>13s} {'peak ratio':>11s}")
        for label in LABELS:
            r, f = res[label], res["full FM"]
            print(f"  {label:10s} {r['param_mib']:10.1f} {r['peak_mib']:9.1f} "
                  f"{r['param_mib'] / f['param_mib']:13.3f} {r['peak_mib'] / f['peak_mib']:11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
