"""Client training-step time of the proxies over the full FM, measured side by side.

For each foundation model this builds three clients' models from the same FM:

* ``full FM``   FedPETuning's client model: the whole FM;
* ``sub-FM``    FedPFT's proxy: FFN compressed to 25 % in every layer but the first and last;
* ``emulator``  FedOT's proxy: adapter layers at both ends + a uniform layer-drop emulator whose
                size matches the sub-FM's (the package defaults).

Each gets LoRA on the attention projections (the paper's r = 8, alpha = 48, dropout 0.1) and the
classification head, AdamW over those trainable parameters, and is timed on one fixed batch with
``fedpft_lite.training.train_step`` (forward, backward, clip, step). For the FM and the sub-FM
LoRA goes on all layers; for the emulator on its adapter layers only by default (FedOT keeps the
emulator frozen; the backward pass still runs through every layer down to the bottom adapters),
or on all its layers with ``--emulator-lora all``.

The three models are timed interleaved (round r runs each once, in an order rotated by r) after
warm-up steps, so drifting machine load hits all of them alike; the table reports median step
times and, as the measured ratio, the median over rounds of the proxy's time over the FM's time
in the same round.
Next to each measured ratio it prints the analytic one: matmul FLOPs of the transformer layers
(Q/K/V/O projections, attention scores and weighted sum, FFN) of the proxy over the FM. That is
the limit the measured ratio approaches when the layers dominate the step; embeddings, the head,
LoRA, the optimiser and framework overhead do not shrink, so measured ratios sit above it (the
emulator with LoRA on its adapters only also runs fewer LoRA modules than the FM, so it can come
in below). On a CPU that other jobs keep busy, multi-threaded timings are erratic (OpenMP thread
barriers wait for descheduled threads): compare with ``--threads 1``.

Usage::

    python benchmarks/step_time.py                      # both models, auto device
    python benchmarks/step_time.py --models minilm --steps 10 --device cpu

Models: ``minilm`` (the real all-MiniLM-L6-v2, offline) and ``bert-base`` (a random-init model
of BERT-base's shape: hidden 768, 12 layers, 12 heads, FFN 3072; random weights time the same).
Inputs: real bbc-news training sentences, padded / truncated to ``--seq-len`` tokens.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import torch

MODELS = ("minilm", "bert-base")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS),
                   help=f"comma-separated, from {', '.join(MODELS)} (default: both)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, mps")
    p.add_argument("--steps", type=int, default=None,
                   help="timed rounds per model (default: 10 on a GPU, 3 on CPU to stay within a "
                        "few minutes)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per model first (default: 3 on a GPU, 1 on CPU)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (default: fp32)")
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--emulator-lora", choices=("adapters", "all"), default="adapters",
                   help="LoRA on the emulator's adapter layers only (FedOT: the emulator stays "
                        "frozen; what fedpft_lite.federated trains) or on all its layers")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for CPU runs (default: torch's own default)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be >= 1")
    if args.warmup is not None and args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


# -- analytic FLOPs ----------------------------------------------------------------------------------
def layer_matmul_flops(seq: int, hidden: int, ffn_width: int) -> int:
    """Forward matmul FLOPs (2 per multiply-add) of one encoder layer on one sequence."""
    projections = 2 * seq * 4 * hidden * hidden        # Q, K, V, attention output
    attention = 2 * 2 * seq * seq * hidden             # Q K^T and (softmax) V, all heads together
    ffn = 2 * 2 * seq * hidden * ffn_width             # up- and down-projection
    return projections + attention + ffn


def model_layer_flops(model, seq: int) -> int:
    from fedpft_lite.arch import arch_of, ffn_linears, get_layers

    arch = arch_of(model.backbone)
    total = 0
    for layer in get_layers(model.backbone):
        w_in, _ = ffn_linears(layer, arch)
        total += layer_matmul_flops(seq, w_in.in_features, w_in.out_features)
    return total


# -- models and data --------------------------------------------------------------------------------
def build_fm(name: str, num_labels: int):
    from transformers import AutoModel, BertConfig

    from fedpft_lite import FMClassifier, load_foundation_model

    if name == "minilm":
        fm, _ = load_foundation_model("minilm", num_labels=num_labels)
        return fm
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072)  # vocab 30522 = the MiniLM tokenizer's
    return FMClassifier(AutoModel.from_config(cfg), num_labels)


def make_batch(batch_size: int, seq_len: int):
    """Real bbc-news sentences, padded / truncated to exactly ``seq_len`` tokens."""
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoTokenizer

    from fedpft_lite import load_task
    from fedpft_lite.models import resolve_model_source

    disable_progress_bar()
    ds = load_task("bbc-news", max_train=batch_size)["train"]
    tok = AutoTokenizer.from_pretrained(resolve_model_source("minilm")[0], local_files_only=True)
    enc = tok(list(ds["text"]), padding="max_length", truncation=True, max_length=seq_len,
              return_tensors="pt")
    batch = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    batch["labels"] = torch.tensor(list(ds["label"]))
    return batch, len(ds.features["label"].names)


def build_clients(fm, device, lr: float, emulator_lora: str = "adapters"):
    """{label: (model, optimiser)}: full FM, sub-FM and emulator, each with LoRA + head trainable."""
    from fedpft_lite.compression import compress_ffn
    from fedpft_lite.emulator import adapter_layers, build_emulator
    from fedpft_lite.lora import LoraSettings, add_lora
    from fedpft_lite.training import make_optimizer

    lora = LoraSettings(r=8, alpha=48, dropout=0.1)
    sub = compress_ffn(fm)        # keep_ratio 0.25, first and last layer whole
    em = build_emulator(fm)       # adapters n // 6 per end, emulator depth matched to sub-FM size
    models = {"full FM": add_lora(fm, lora), "sub-FM": add_lora(sub, lora),
              "emulator": add_lora(em, lora, layers=adapter_layers(em) if emulator_lora == "adapters"
                                   else None)}
    out = {}
    for label, m in models.items():
        m.to(device).train()
        out[label] = (m, make_optimizer(m, lr=lr))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(clients: dict, batch: dict, device, steps: int, warmup: int, amp: bool):
    from fedpft_lite.training import train_step

    labels = list(clients)
    for label in labels:
        model, opt = clients[label]
        for _ in range(warmup):
            train_step(model, batch, opt, grad_clip=1.0, amp=amp)
    times = {label: [] for label in labels}
    for r in range(steps):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            model, opt = clients[label]
            sync(device)
            t0 = time.perf_counter()
            train_step(model, batch, opt, grad_clip=1.0, amp=amp)  # returns float(loss): syncs
            sync(device)
            times[label].append(time.perf_counter() - t0)
    return times


# -- main ---------------------------------------------------------------------------------------
def machine_line(device) -> str:
    dev = str(device)
    if device.type == "cuda":
        dev += f" ({torch.cuda.get_device_name(device)})"
    import peft
    import transformers
    n = torch.get_num_threads()
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({n} thread{'' if n == 1 else 's'}), transformers "
            f"{transformers.__version__}, peft {peft.__version__}, Python "
            f"{platform.python_version()}; device {dev}")


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    from fedpft_lite.arch import get_layers
    from fedpft_lite.utils import pick_device

    hf_logging.set_verbosity_error()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    device = pick_device(args.device)
    gpu = device.type != "cpu"
    steps = args.steps if args.steps is not None else (10 if gpu else 3)
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    amp = args.amp and device.type == "cuda"

    print(machine_line(device), flush=True)
    print(f"batch {args.batch_size} x {args.seq_len} tokens (real bbc-news sentences), "
          f"{'bf16 autocast' if amp else 'fp32'}, {warmup} warm-up step(s) then {steps} interleaved "
          f"timed round(s) per model; LoRA r=8 alpha=48 on attention + head (all layers; emulator: "
          f"{'adapter layers only' if args.emulator_lora == 'adapters' else 'all its layers'}), "
          "AdamW", flush=True)
    batch, num_labels = make_batch(args.batch_size, args.seq_len)
    batch = {k: v.to(device) for k, v in batch.items()}

    rows = []
    for name in args.models:
        t0 = time.perf_counter()
        fm = build_fm(name, num_labels)
        clients = build_clients(fm, device, args.lr, args.emulator_lora)
        flops = {label: model_layer_flops(m, args.seq_len) for label, (m, _) in clients.items()}
        em = clients["emulator"][0]
        print(f"[{name}] built in {time.perf_counter() - t0:.1f} s; emulator keeps FM layers "
              f"{em.structure['layer_map']}; timing ...", flush=True)
        times = time_interleaved(clients, batch, device, steps, warmup, amp)
        med = {label: statistics.median(ts) for label, ts in times.items()}
        for label in clients:
            rows.append({
                "model": name, "client model": label,
                "layers": len(get_layers(clients[label][0].backbone)),
                "median ms": 1000 * med[label],
                "min ms": 1000 * min(times[label]), "max ms": 1000 * max(times[label]),
                # Paired: each round's proxy time over the same round's FM time, then the median
                # (cancels load that drifts between rounds better than a ratio of medians).
                "measured": statistics.median(t / f for t, f in zip(times[label], times["full FM"])),
                "FLOP limit": flops[label] / flops["full FM"],
            })
        del clients, fm
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print()
    print("Client LoRA training step (forward + backward + clip + AdamW), ratios over the full FM")
    header = (f"{'model':<10} {'client model':<12} {'layers':>6} {'median ms':>10} {'min ms':>9} "
              f"{'max ms':>9} {'measured ratio':>15} {'FLOP limit':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<10} {r['client model']:<12} {r['layers']:>6} {r['median ms']:>10.1f} "
              f"{r['min ms']:>9.1f} {r['max ms']:>9.1f} {r['measured']:>15.3f} {r['FLOP limit']:>11.3f}")
    print("-" * len(header))
    print("measured ratio: median over rounds of (proxy step time / full-FM step time, same round)")
    print("FLOP limit: matmul FLOPs of the transformer layers (projections, attention scores and "
          "weighted sum, FFN), proxy / FM.")
    print(machine_line(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
