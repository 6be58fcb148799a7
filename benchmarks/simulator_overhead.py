"""How much does the federated simulator cost on top of the training it does?

Runs the same optimizer steps on the same batches twice, side by side and interleaved:
  (a) the simulator: ``run_federated`` rounds (state loading, FedAvg, bookkeeping, a tiny eval),
  (b) a plain loop: the same proxy, the same client batches in the same order, forward /
      backward / clip / AdamW step, nothing else,
and prints the median time ratio (a) / (b). Goal: <= 1.05.

    python benchmarks/simulator_overhead.py [--method fedpft] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from fedpft_lite.config import FedConfig
from fedpft_lite.federated import derived_seed, run_round, sample_clients, setup, _attach_lora
from fedpft_lite.lora import load_trainable_state
from fedpft_lite.training import make_optimizer


def plain_loop(server, cfg) -> float:
    """The same batches as the simulator's rounds, through a bare training loop."""
    t0 = time.perf_counter()
    for rnd in range(1, cfg.rounds + 1):
        for k in sample_clients(cfg, rnd):
            load_trainable_state(server.proxy, server.global_state)
            torch.manual_seed(derived_seed(cfg.seed, rnd, k, 0x7EA1))
            model = server.proxy.train()
            opt = make_optimizer(model, cfg.lr)
            params = [p for p in model.parameters() if p.requires_grad]
            for batch in server.client_loader(k, rnd):
                loss = model(**batch).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
    return time.perf_counter() - t0


def simulator(server, cfg) -> float:
    t0 = time.perf_counter()
    for rnd in range(1, cfg.rounds + 1):
        run_round(server, rnd)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="fedpft")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=640)
    args = ap.parse_args()
    cfg = FedConfig(method=args.method, task="bbc-news", align_before=False, align_during=False,
                    max_train=args.max_train, max_test=16, num_clients=4,
                    fraction=1.0, rounds=2, batch_size=16, lr=3e-3, device="cpu", eval_proxy="never",
                    amp=False)
    server = setup(cfg, progress=False)
    _attach_lora(server)
    init = dict(server.global_state)
    sim, plain = [], []
    for _ in range(args.repeats):
        server.global_state = dict(init)
        sim.append(simulator(server, cfg))
        server.global_state = dict(init)
        plain.append(plain_loop(server, cfg))
    steps = sum(len(server.client_loader(k, r)) for r in range(1, cfg.rounds + 1) for k in sample_clients(cfg, r))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, device cpu")
    print(f"job: {cfg.method} on minilm / bbc-news, {cfg.rounds} rounds x {cfg.clients_per_round} clients, "
          f"{steps} optimizer steps of batch {cfg.batch_size} per run, {args.repeats} interleaved repeats")
    print(f"simulator  s: {[round(x, 2) for x in sim]}  median {statistics.median(sim):.2f}")
    print(f"plain loop s: {[round(x, 2) for x in plain]}  median {statistics.median(plain):.2f}")
    print(f"ratio simulator / plain loop: {statistics.median(sim) / statistics.median(plain):.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
