"""One federated run scored on the task's validation split: how the lite settings were chosen.

    python scripts/validation_run.py TAG key=value ...    # FedConfig overrides of BASE below

Appends one JSON line (the overrides, final validation accuracy of the plugged-in FM, proxy
accuracy, the curve, per-round training loss, wall seconds) to data/results/selection/
validation_runs.jsonl. Settings are chosen on these numbers, never on the test split.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

from fedpft_lite.config import FedConfig
from fedpft_lite.federated import run_federated

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
BASE = dict(model="minilm", task="bbc-word-order", max_length=64, max_train=3000, max_test=2000,
            max_public=2560, num_clients=20, fraction=0.2, partition="iid", rounds=10, local_epochs=1,
            batch_size=16, lr=1e-3, keep_ratio=0.25, align_steps=20, align_every=2, align_fraction=0.5,
            align_lr=6e-4, align_before_steps=200, eval_every=5, eval_proxy="final", device="cpu")
OUT = Path(__file__).resolve().parents[1] / "data" / "results" / "selection" / "validation_runs.jsonl"

if __name__ == "__main__":
    tag = sys.argv[1]
    cfg = FedConfig(**BASE).with_overrides(sys.argv[2:])
    changed = {k: v for k, v in cfg.to_dict().items() if v != BASE.get(k, FedConfig().to_dict()[k])}
    t0 = time.time()
    h = run_federated(cfg, progress=False)
    res = {"tag": tag, **changed, "fm": h.final("fm_val_accuracy"), "proxy": h.final("proxy_accuracy"),
           "fm_curve": [r.get("fm_val_accuracy") for r in h], "loss": [round(r["train_loss"], 3) for r in h],
           "wall": round(time.time() - t0)}
    print(json.dumps(res), flush=True)
    with open(OUT, "a") as f:
        f.write(json.dumps(res) + "\n")
