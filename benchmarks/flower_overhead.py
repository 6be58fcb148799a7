"""What does running the clients through Flower cost, next to the in-process simulator?

Runs the same small job twice -- ``run_federated`` (clients in this process) and
``fedpft_lite.flower.run_simulation`` (``flwr run`` on a local simulation SuperLink: the ServerApp
in a subprocess, the ClientApps in one Ray actor; the README's numbers were measured before this
moved off Flower's deprecated Python engine, whose ServerApp ran in a thread) -- and prints wall
time (medians of interleaved repeats), the engine's start-up (Ray, the actor, the clients loading
the proxy and their data), the per-round overhead, the ratios, whether the
two histories are identical, and what the messages carried. One thread per process and one
ClientApp actor, so both run the clients one after another on the same cores.

    OMP_NUM_THREADS=1 python benchmarks/flower_overhead.py [--model minilm] [--rounds 3] [--repeats 2]

``--bytes`` prints only the bytes table (per round, per method; no training).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from fedpft_lite.config import FedConfig  # noqa: E402
from fedpft_lite.federated import run_federated, setup, _attach_lora  # noqa: E402
from fedpft_lite.lora import state_bytes  # noqa: E402


def job(model: str, rounds: int) -> FedConfig:
    return FedConfig(model=model, task="bbc-news", method="fedpft", max_train=800, max_test=200,
                     max_public=200, num_clients=4, fraction=0.5, rounds=rounds, batch_size=16,
                     lr=3e-3, max_length=48, partition="dirichlet", alpha=1.0, device="cpu",
                     align_before=True, align_during=True, align_every=2, align_steps=5,
                     eval_batch_size=64)


def strip(h):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in h]


def once(cfg: FedConfig) -> dict:
    """One in-process run, then one Flower simulation of the same job."""
    from fedpft_lite.flower import run_simulation

    t = time.perf_counter()
    local = run_federated(cfg, progress=False)
    local_wall = time.perf_counter() - t
    out = Path(tempfile.mkdtemp(prefix="flower_overhead_"))
    t = time.perf_counter()
    flower = run_simulation(cfg.replace(output_dir=str(out)), client_cpus=os.cpu_count())
    flower_wall = time.perf_counter() - t
    log = json.loads((out / "results.json").read_text())["log"]
    shutil.rmtree(out)   # proxy, checkpoint and results of the Flower run
    local_rounds = sum(r["seconds"] for r in local)
    flower_rounds = sum(r["seconds"] for r in flower)
    return {"in_process_wall_s": local_wall, "in_process_rounds_s": local_rounds,
            "flower_wall_s": flower_wall, "flower_rounds_s": flower_rounds,
            # everything but the rounds: in-process the setup; in Flower also Ray, the ClientApp
            # actor, and the clients loading the proxy and their data (overlapping the setup)
            "start_overhead_s": (flower_wall - flower_rounds) - (local_wall - local_rounds),
            "per_round_overhead_s": (flower_rounds - local_rounds) / cfg.rounds,
            "ratio_wall": flower_wall / local_wall, "ratio_rounds": flower_rounds / local_rounds,
            "histories_identical": strip(local) == strip(flower), "wire": log["flower"]}


def overhead(cfg: FedConfig, repeats: int) -> dict:
    """Medians over ``repeats`` interleaved pairs (the machine may be shared)."""
    runs = [once(cfg) for _ in range(repeats)]
    res = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]
           if k not in ("wire", "histories_identical")}
    res["each_run"] = [{k: round(v, 2) for k, v in r.items() if isinstance(v, float)} for r in runs]
    res["histories_identical"] = all(r["histories_identical"] for r in runs)
    res["wire"] = runs[-1]["wire"]
    return res


def bytes_table(model: str) -> list[dict]:
    """Per method: what one client receives once (the proxy folder) and per round (state)."""
    from fedpft_lite.flower.records import proxy_files_bytes, state_record

    rows = []
    for method in ("fedpetuning", "fedot", "fedpft"):
        cfg = job(model, 1).replace(method=method, align_before=False, align_during=False)
        server = setup(cfg, progress=False)
        with tempfile.TemporaryDirectory() as d:
            server.proxy.save_pretrained(d, preprocessor=server.preprocessor)
            proxy = proxy_files_bytes(d)
        fm = sum(p.numel() * p.element_size() for p in server.fm.parameters())
        _attach_lora(server)
        rows.append({"method": method, "fm_weight_bytes": fm, "proxy_folder_bytes": proxy,
                     "state_bytes": state_bytes(server.global_state),
                     "state_wire_bytes": state_record(server.global_state).count_bytes()})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved pairs of runs (medians)")
    ap.add_argument("--bytes", action="store_true", help="only the bytes table")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    import flwr
    print(f"flwr {flwr.__version__}")
    for row in bytes_table(a.model):
        print("bytes", json.dumps(row))
    if a.bytes:
        return
    cfg = job(a.model, a.rounds)
    print("job:", json.dumps({k: v for k, v in cfg.to_dict().items() if k in (
        "model", "method", "max_train", "num_clients", "fraction", "rounds", "batch_size",
        "align_every", "align_steps")}))
    res = overhead(cfg, a.repeats)
    wire = res.pop("wire")
    for k, v in res.items():
        print(f"{k}: {v}")
    print("flower wire bytes per round:", json.dumps(wire["rounds"]))
    print(f"proxy published once: {wire['proxy_folder_bytes']} bytes (weights {wire['proxy_weight_bytes']})")


if __name__ == "__main__":
    main()
