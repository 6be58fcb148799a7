"""What does losing a SuperNode mid-run cost? The same FedPFT run on three real SuperNodes
(loopback: one ``flower-superlink``, three ``flower-supernode`` processes), once without faults and
once with node 2 SIGKILLed (with its ClientApp) as soon as round 1's checkpoint is written, i.e.
during round 2. Prints, per run: rounds completed, final FM accuracy, the clients each round
aggregated and why the others failed, and the wall time.

The job: the offline vision default (``vit-tiny-fmnist``, a 1.2 M-parameter ViT) on ``digits``,
3 clients (all sampled every round), 5 rounds, FedPFT with layer- and neuron-level alignment
(t = 2), ``min-replies=2``. After the kill, the SuperLink notices the missing heartbeats (about a
minute: Flower's 30 s interval x patience 2) and answers round 2's message with
``node_unavailable``; rounds 3-5 find the node disconnected and send it nothing.

    OMP_NUM_THREADS=1 python benchmarks/flower_faults.py [--rounds 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from fedpft_lite.config import FedConfig  # noqa: E402
from fedpft_lite.federated import CKPT  # noqa: E402
from fedpft_lite.flower.loopback import LoopbackDeployment, wait_for  # noqa: E402


def job(rounds: int, out: Path) -> FedConfig:
    return FedConfig(model="vit-tiny-fmnist", task="digits", method="fedpft", num_clients=3,
                     fraction=1.0, rounds=rounds, partition="iid", local_epochs=1, batch_size=16,
                     lr=3e-3, align_before=True, align_before_steps=20, align_during=True,
                     align_every=2, align_steps=20, eval_proxy="final", device="cpu",
                     output_dir=str(out))


def one_run(cfg: FedConfig, kill_node: int | None, timeout_s: float) -> dict:
    t = time.perf_counter()
    with LoopbackDeployment(3) as deployment:
        run = deployment.submit(cfg, round_timeout_s=300, min_replies=2)
        if kill_node is not None:
            ckpt = Path(cfg.output_dir) / CKPT / "checkpoint.json"
            wait_for(lambda: ckpt.exists() or run.poll() is not None, timeout_s, "round 1's checkpoint")
            deployment.kill_node(kill_node)
        code = run.wait(timeout=timeout_s)
        if code != 0:
            raise RuntimeError(f"`flwr run` exited with {code}\n{deployment.logs()}")
    wall = time.perf_counter() - t
    h = json.loads((Path(cfg.output_dir) / "history.json").read_text())
    return {"rounds_completed": len(h), "final_fm_accuracy": h[-1]["fm_accuracy"],
            "proxy_accuracy": h[-1].get("proxy_accuracy"), "wall_s": round(wall, 1),
            "clients": [r["clients"] for r in h],
            "failed": {r["round"]: [(f["client"], f["reason"]) for f in r["failed"]]
                       for r in h if "failed" in r}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timeout-s", type=float, default=1800)
    ap.add_argument("--out", default=None, help="where the two runs write (default: a temp folder)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="flower_faults_"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; runs in {out}")
    res = {}
    for name, kill in (("no faults", None), ("node 2 killed in round 2", 2)):
        res[name] = one_run(job(args.rounds, out / name.replace(" ", "_")), kill, args.timeout_s)
        print(f"{name}: {json.dumps(res[name])}", flush=True)
    print("| run | rounds completed | final FM accuracy | wall s |\n|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['rounds_completed']} | {r['final_fm_accuracy']:.4f} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
