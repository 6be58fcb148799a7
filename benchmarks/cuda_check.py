"""The GPU path, end to end: every method (FedPFT with both alignments) on CUDA with bf16
autocast, same-seed reproducibility on the device, and wall time next to the CPU.

The model is MiniLM-*shaped* (6 layers, hidden 384, FFN 1536) with random weights and the real
MiniLM tokenizer, so it runs where the real weights are not installed; accuracy is not the
point here (it is ~chance), mechanics and speed are.

    python benchmarks/cuda_check.py --device cuda [--rounds 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
import transformers

from fedpft_lite.config import FedConfig
from fedpft_lite.federated import run_federated
from fedpft_lite.models import FMClassifier, resolve_model_source


def build_model(folder: str) -> str:
    tok = transformers.AutoTokenizer.from_pretrained(resolve_model_source("minilm")[0], local_files_only=True)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=384, num_hidden_layers=6,
                                  num_attention_heads=12, intermediate_size=1536)
    torch.manual_seed(0)
    FMClassifier(transformers.AutoModel.from_config(cfg), num_labels=5, pooling="mean").save_pretrained(folder, tok)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--also-cpu", action="store_true", help="time the same jobs on the CPU too")
    ap.add_argument("--methods", default="fedpetuning,fedot,fedpft")
    args = ap.parse_args()
    folder = build_model(tempfile.mkdtemp())
    base = FedConfig(model=folder, task="bbc-news", max_train=800, max_test=400, max_public=512, num_clients=8,
                     fraction=0.5, rounds=args.rounds, lr=3e-3, align_steps=20, align_every=1)
    devices = [args.device] + (["cpu"] if args.also_cpu else [])
    print(f"torch {torch.__version__}, cuda available {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    for device in devices:
        for method in args.methods.split(","):
            align = dict(align_before=True, align_during=True) if method == "fedpft" else {}
            cfg = base.replace(method=method, device=device, **align)
            t0 = time.time()
            h1 = run_federated(cfg, progress=False)
            t1 = time.time() - t0
            h2 = run_federated(cfg, progress=False)
            same = [{k: v for k, v in r.items() if k != "seconds"} for r in h1] == \
                   [{k: v for k, v in r.items() if k != "seconds"} for r in h2]
            last = h1[-1]
            print(f"{device:5s} {method:12s} {t1:7.1f} s  same-seed identical: {same}  "
                  f"fm_acc {last['fm_accuracy']:.3f}  proxy_acc {last.get('proxy_accuracy', float('nan')):.3f}  "
                  f"aligned rounds {[r['round'] for r in h1 if r['aligned']]}  "
                  f"bytes down/up {last['bytes_down']}/{last['bytes_up']}", flush=True)
    if torch.cuda.is_available():
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
