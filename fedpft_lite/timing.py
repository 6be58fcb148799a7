"""How long a run will take, said before it starts: a short calibration on *this* machine.

A learner on a slow laptop or a free Colab CPU should see "about 4 min" before a cell starts, not
find out after. :func:`expected_seconds` times a few training steps and one evaluation batch of
the model the run trains, then multiplies by the run's own counts (client steps, distillation
steps, evaluation batches), all read from the config. It is an estimate: it ignores start-up
(model loading, tokenising, the sub-FM's saliency pass) and assumes the machine's load stays as
it was during the calibration. The demo and the notebooks' long cells print it.
"""
from __future__ import annotations

import math
import time

import torch

from .methods import is_alignment_round
from .training import train_step

#: A distillation step runs the teacher forward and the student forward and backward, on batches
#: twice a client's: about three client steps.
DISTIL_STEP_COST = 3


def data_sizes(cfg) -> tuple[int, int]:
    """Training and test examples a run uses: its caps ``max_train`` / ``max_test``, or where one
    is None (the whole split, as the vision experiments run) the task's own size, read by loading
    the task (offline tasks are cached, so this is quick after the first time)."""
    if cfg.max_train is not None and cfg.max_test is not None:
        return cfg.max_train, cfg.max_test
    from .data import load_task_for

    ds = load_task_for(cfg)
    return len(ds["train"]), len(ds["test"])


def run_counts(cfg) -> dict:
    """The numbers of client training steps, distillation steps and evaluation batches a run makes."""
    cfg = cfg.resolved()
    n_train, n_test = data_sizes(cfg)
    per_client = math.ceil(n_train / cfg.num_clients / cfg.batch_size) * cfg.local_epochs
    aligned = sum(is_alignment_round(r, cfg.align_every, cfg.rounds) for r in range(1, cfg.rounds + 1))
    distil = cfg.layer_level_steps * cfg.aligns_before + cfg.align_steps * aligned * cfg.aligns_during
    evals = math.ceil(cfg.rounds / cfg.eval_every) * math.ceil(n_test / cfg.eval_batch_size)
    evals *= 2 if cfg.eval_proxy == "every" else 1
    return {"client_steps": cfg.rounds * cfg.clients_per_round * per_client, "distil_steps": distil,
            "eval_batches": evals}


def calibrate(model, loader, batch_size: int, eval_batch_size: int, steps: int = 2) -> dict:
    """Seconds per training step and per evaluation batch of ``model`` on this machine: one untimed
    warm-up step, then ``steps`` timed ones on a batch of ``batch_size`` from ``loader``, and one
    timed forward pass scaled to ``eval_batch_size``. The model's weights are not changed (the
    optimiser's learning rate is 0)."""
    device = next(model.parameters()).device
    batch = {k: v[:batch_size].to(device) for k, v in next(iter(loader)).items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    train_step(model.train(), batch, opt)                  # warm-up: first-call allocations
    t = time.perf_counter()
    for _ in range(steps):
        train_step(model, batch, opt)
    step = (time.perf_counter() - t) / steps
    t = time.perf_counter()
    with torch.no_grad():
        model.eval()(**{k: v for k, v in batch.items() if k != "labels"})
    forward = (time.perf_counter() - t) * eval_batch_size / len(batch["labels"])   # text or images
    return {"step": step, "eval_batch": forward}


def expected_seconds(cfg, model, loader) -> float:
    """A rough run time for ``cfg``, before starting: :func:`calibrate` on ``model`` (the proxy the
    clients train, with LoRA; the FM gives an upper bound for every method) times the run's
    :func:`run_counts`. An estimate, not a promise: machines and loads differ."""
    cost = calibrate(model, loader, cfg.batch_size, cfg.eval_batch_size)
    n = run_counts(cfg)
    return (cost["step"] * (n["client_steps"] + DISTIL_STEP_COST * n["distil_steps"])
            + cost["eval_batch"] * n["eval_batches"])


def say_minutes(seconds: float) -> str:
    """``"about 40 s"`` or ``"about 3.5 min"``."""
    return f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.1f} min"
