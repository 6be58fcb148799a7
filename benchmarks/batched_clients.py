"""Samples per second of the sequential and the batched client executor and of a plain loop.

One round's client work, three ways, on the same LoRA model (the FM with LoRA r=8, alpha=48,
dropout 0.1 on every layer's attention projections + the head: FedPETuning's client model):

* ``sequential``  ``federated.client_update`` for each client in turn (``client_parallelism=1``,
                  the default executor: load the global state, AdamW over its batches, report);
* ``batched``     ``federated.client_updates_batched`` for all clients at once
                  (``client_parallelism = clients``: one forward/backward over all their batches);
* ``plain loop``  a plain PyTorch training loop over the same batches: one model, one AdamW,
                  forward / backward / clip / step at the client batch size, nothing else (what a
                  Hugging Face-style loop without federated bookkeeping does).

The three run interleaved (each repeat runs each once, in an order rotated by the repeat) after
one untimed warm-up each; the table gives the median samples/s and the batched / sequential
ratio of the same repeats. Inputs are random token ids of exactly ``--seq-len`` tokens, every
client with ``--steps`` batches of ``--batch-size`` (random weights and tokens time the same).

Shapes: ``bert-base`` (hidden 768, 12 layers, 12 heads, FFN 3072, vocab 30522) or ``small``
(hidden 256, 4 layers, 4 heads, FFN 1024) for a quick look. On a GPU it also prints the
projected training time of a paper-scale Table 1 cell (100 rounds x 10 clients x 42 steps of
batch 32) at the measured batched rate, when run at that shape.

Usage::

    python benchmarks/batched_clients.py                               # auto device, defaults per device
    python benchmarks/batched_clients.py --device cpu --shape small --clients 4 --steps 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

SHAPES = {"bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072),
          "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024)}
#: A paper-scale Table 1 cell (SST-2, BERT-base): 100 rounds, 10 of 100 clients, ~42 steps each.
PAPER_CELL = dict(rounds=100, clients=10, steps=42, batch_size=32, seq_len=64)
EXECUTORS = ("sequential", "batched", "plain loop")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="bert-base")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--clients", type=int, default=None, help="clients of the round (default: 10 on "
                   "a GPU, 4 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="batches per client (default: 10 on a "
                   "GPU, 2 on CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 on a GPU, 8 on CPU")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default: 5 on a GPU, "
                   "2 on CPU)")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (default: bf16 autocast, "
                   "as cfg.amp); CPU runs are always fp32")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    args = p.parse_args(argv)
    for name in ("clients", "steps", "batch_size", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.seq_len < 8:
        p.error("--seq-len must be >= 8")
    return args


def build_model(shape: str, device):
    """The FM of ``shape`` (random init, seeded) with LoRA on all layers: the client model."""
    from transformers import AutoModel, BertConfig

    from fedpft_lite.lora import LoraSettings, add_lora
    from fedpft_lite.models import FMClassifier

    torch.manual_seed(0)
    fm = FMClassifier(AutoModel.from_config(BertConfig(**SHAPES[shape])), num_labels=2)
    return add_lora(fm, LoraSettings(r=8, alpha=48, dropout=0.1)).to(device)


def client_data(clients: int, steps: int, batch_size: int, seq_len: int):
    """Each client's examples (an encoded ``datasets.Dataset``, as ``Server.client_examples``):
    ``steps * batch_size`` rows of random token ids, all ``seq_len`` long, random binary labels."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    n = steps * batch_size
    return [Dataset.from_dict({"input_ids": torch.randint(1000, 30000, (n, seq_len), generator=g).tolist(),
                               "attention_mask": [[1] * seq_len] * n,
                               "label": torch.randint(0, 2, (n,), generator=g).tolist()})
            for _ in range(clients)]


class PadOnly:
    """What ``data.Collator`` reads from a tokenizer: the padding id (BERT's 0)."""
    pad_token_id = 0


def runners(model, data, cfg, device):
    """{executor: function running one round's client work}."""
    from fedpft_lite.federated import client_loader, client_update, client_updates_batched
    from fedpft_lite.lora import load_trainable_state, trainable_state
    from fedpft_lite.training import make_optimizer, train_step

    start = trainable_state(model)
    ks = list(range(len(data)))

    def sequential():
        for k in ks:
            client_update(cfg, model, start, data[k], PadOnly(), k, 1, cfg.lr, device)

    def batched():
        client_updates_batched(cfg, model, start, data, PadOnly(), ks, 1, cfg.lr, device)

    def plain_loop():
        load_trainable_state(model, start)
        model.train()
        opt = make_optimizer(model, cfg.lr)
        for k in ks:
            for batch in client_loader(cfg, data[k], PadOnly(), k, 1):
                train_step(model, {n: t.to(device) for n, t in batch.items()}, opt, cfg.grad_clip, cfg.amp)
        model.eval()

    return {"sequential": sequential, "batched": batched, "plain loop": plain_loop}


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    from fedpft_lite.config import FedConfig
    from fedpft_lite.utils import pick_device

    from step_time import machine_line, sync  # benchmarks/ is on sys.path when run as a script

    hf_logging.set_verbosity_error()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    clients = args.clients or (10 if gpu else 4)
    steps = args.steps or (10 if gpu else 2)
    batch_size = args.batch_size or (32 if gpu else 8)
    repeats = args.repeats or (5 if gpu else 2)
    amp = gpu and not args.no_amp
    cfg = FedConfig(batch_size=batch_size, lr=8e-4, amp=amp, max_length=args.seq_len)
    samples = clients * steps * batch_size

    print(machine_line(device), flush=True)
    print(f"{args.shape} shape (random init), LoRA r=8 alpha=48 dropout 0.1 on all layers + head, "
          f"AdamW, clip 1.0, {'bf16 autocast' if amp else 'fp32'}; {clients} clients x {steps} "
          f"batches of {batch_size} x {args.seq_len} tokens = {samples} samples per round; "
          f"1 warm-up then {repeats} interleaved repeat(s)", flush=True)
    model = build_model(args.shape, device)
    run = runners(model, client_data(clients, steps, batch_size, args.seq_len), cfg, device)
    for name in EXECUTORS:
        run[name]()
    seconds = {name: [] for name in EXECUTORS}
    cpu_seconds = {name: [] for name in EXECUTORS}
    for r in range(repeats):
        order = EXECUTORS[r % 3:] + EXECUTORS[:r % 3]
        for name in order:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            run[name]()
            sync(device)
            seconds[name].append(time.perf_counter() - t0)
            cpu_seconds[name].append(time.process_time() - c0)
        print(f"repeat {r + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.2f} s (CPU {cpu_seconds[n][-1]:.2f} s)"
                                             for n in EXECUTORS), flush=True)
    if gpu:
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")

    print()
    print(f"{'executor':<12} {'median s':>9} {'samples/s':>10} {'CPU s':>8} {'samples/CPU s':>14}")
    for name in EXECUTORS:
        med, cpu = statistics.median(seconds[name]), statistics.median(cpu_seconds[name])
        print(f"{name:<12} {med:>9.2f} {samples / med:>10.1f} {cpu:>8.2f} {samples / cpu:>14.1f}")
    speedup = statistics.median(s / b for s, b in zip(seconds["sequential"], seconds["batched"]))
    print(f"batched / sequential speed-up (median over repeats of the paired ratio): x {speedup:.2f}")
    print("CPU s: processor time of this process (all its threads); on a shared machine it "
          "counts only this process's work, wall time also waits for the other jobs")
    at_paper_shape = (args.shape == "bert-base" and batch_size == PAPER_CELL["batch_size"]
                      and args.seq_len == PAPER_CELL["seq_len"] and clients == PAPER_CELL["clients"])
    if gpu and at_paper_shape:
        cell = PAPER_CELL["rounds"] * PAPER_CELL["clients"] * PAPER_CELL["steps"] * PAPER_CELL["batch_size"]
        for name in ("sequential", "batched"):
            rate = samples / statistics.median(seconds[name])
            print(f"paper-scale Table 1 cell ({cell} client samples), client training only, "
                  f"{name}: {cell / rate / 60:.1f} min")
    print(machine_line(device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
