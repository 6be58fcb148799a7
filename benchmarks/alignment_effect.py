"""Does alignment help? FedPFT with and without sub-FM alignment on MiniLM + bbc-news.

1. Gradient-error probe (seed 0): the same LoRA + head state in the FM and in the sub-FM, before
   and after layer-level alignment; cosine similarity and relative error of the LoRA gradients,
   averaged over test batches.
2. Short federated runs, same seeds, FedPFT_N (no alignment) vs FedPFT (both alignments):
   final plugged-in FM accuracy, mean and spread over seeds.

    python benchmarks/alignment_effect.py [--seeds 0,1,2] [--rounds 4] [--align-steps 30]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from fedpft_lite.config import FedConfig
from fedpft_lite.federated import run_federated, setup
from fedpft_lite.gradient_probe import gradient_similarity
from fedpft_lite.lora import LoraSettings, add_lora, trainable_state
from fedpft_lite.training import local_train


def probe(args) -> dict:
    cfg = FedConfig(method="fedpft", task="bbc-news", max_train=2400, max_test=256, max_public=args.max_public,
                    align_steps=args.align_steps, align_lr=args.align_lr, num_clients=20, seed=0,
                    batch_size=16, device="cpu")
    server = setup(cfg, progress=False)
    server.progress = False
    fm, sub = server.fm, server.proxy
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    # A state with signal: a few local steps of one client on the unaligned sub-FM.
    sub_l = add_lora(copy.deepcopy(sub), lora, seed=0)
    local_train(sub_l, server.client_loader(0, 1), lr=3e-3, max_steps=20)
    state = trainable_state(sub_l)
    fm_l = add_lora(copy.deepcopy(fm), lora, seed=0)
    batches = [b for _, b in zip(range(4), server.test_loader)]

    def measure(proxy):
        p = add_lora(copy.deepcopy(proxy), lora, seed=0)
        rs = [gradient_similarity(fm_l, p, b, state) for b in batches]
        return {k: statistics.mean(r[k] for r in rs) for k in ("cosine", "relative_error")}

    before = measure(sub)
    from fedpft_lite.alignment import layer_level_alignment
    log = layer_level_alignment(server, progress=False)
    after = measure(server.proxy)
    return {"unaligned": before, "layer_aligned": after,
            "distance_before": log["distance_before"], "distance_after": log["distance_after"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--align-every", type=int, default=2)
    ap.add_argument("--align-steps", type=int, default=30)
    ap.add_argument("--align-lr", type=float, default=6e-4)
    ap.add_argument("--max-public", type=int, default=1600)
    ap.add_argument("--out", default="benchmarks/results/alignment_effect.json")
    args = ap.parse_args()
    t0 = time.time()
    result = {"args": vars(args), "probe": probe(args)}
    p = result["probe"]
    print(f"gradient probe (seed 0, 4 test batches): cosine {p['unaligned']['cosine']:.3f} -> "
          f"{p['layer_aligned']['cosine']:.3f}, relative error {p['unaligned']['relative_error']:.3f} -> "
          f"{p['layer_aligned']['relative_error']:.3f} after layer-level alignment", flush=True)
    base = FedConfig(method="fedpft", task="bbc-news", max_train=2400, max_test=1000, max_public=args.max_public,
                     num_clients=20, fraction=0.25, partition="dirichlet", alpha=1.0,
                     rounds=args.rounds, lr=3e-3, batch_size=16, eval_proxy="final",
                     align_every=args.align_every, align_steps=args.align_steps, align_lr=args.align_lr)
    runs = {"FedPFT_N (no alignment)": dict(align_before=False, align_during=False),
            "FedPFT (both)": dict(align_before=True, align_during=True)}
    acc = {name: [] for name in runs}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name, extra in runs.items():
            h = run_federated(base.replace(seed=seed, **extra), progress=False)
            acc[name].append(h.final("fm_accuracy"))
            print(f"seed {seed} {name:24s} FM accuracy {100 * acc[name][-1]:.2f} %  "
                  f"proxy {100 * h.final('proxy_accuracy'):.2f} %  aligned rounds "
                  f"{[r['round'] for r in h if r['aligned']]}", flush=True)
    result["accuracy"] = acc
    from fedpft_lite.stats import describe_difference, mean_interval, paired_difference
    print("\nmethod                    FM accuracy %: mean ± 95 % CI half-width over seeds, per seed")
    for name, a in acc.items():
        print(f"{name:24s}  {mean_interval([100 * x for x in a])}   {[round(100 * x, 2) for x in a]}")
    (none, none_acc), (both, both_acc) = acc.items()
    diff = paired_difference(dict(enumerate(100 * x for x in both_acc)), dict(enumerate(100 * x for x in none_acc)))
    print(describe_difference(diff, both, none))
    result["seconds"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"{result['seconds']} s; written to {args.out}")


if __name__ == "__main__":
    main()
