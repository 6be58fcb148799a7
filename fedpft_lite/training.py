"""Local training on a client: a few epochs of AdamW on the trainable state (LoRA + head).

Only parameters with ``requires_grad`` are optimised (``add_lora`` froze the rest), so the same
function trains the FM (FedPETuning), the sub-FM (FedPFT) and the emulator (FedOT).
"""
from __future__ import annotations

import contextlib

import torch
from tqdm.auto import tqdm

from .evaluation import _to


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA when asked (safe for LoRA fine-tuning: no loss scaling needed);
    a no-op on CPU/MPS, where fp32 is both safe and, for these sizes, not slower."""
    device = torch.device(device)
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    return adamw([p for p in model.parameters() if p.requires_grad], lr, weight_decay)


def adamw(params: list, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """The clients' optimiser over ``params`` (one client's LoRA + head tensors)."""
    if not params:
        raise ValueError("no trainable parameters: call add_lora() first")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def train_step(model, batch: dict, optimizer, grad_clip: float | None = 1.0, amp: bool = False) -> float:
    """One optimiser step on one batch; returns the batch loss."""
    device = next(model.parameters()).device
    with autocast_for(device, amp):
        loss = model(**batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_and_step([p for p in model.parameters() if p.requires_grad], optimizer, grad_clip)
    return float(loss.detach())


def clip_and_step(params: list, optimizer, grad_clip: float | None) -> None:
    """Clip the gradient norm of ``params`` (one client's trainable tensors) to ``grad_clip``,
    then take the optimiser step: the end of every client step, sequential or batched."""
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def local_train(model, loader, *, lr: float, epochs: int = 1, grad_clip: float | None = 1.0,
                weight_decay: float = 0.0, device="cpu", amp: bool = False, max_steps: int | None = None,
                progress: bool = False, desc: str = "local") -> dict:
    """Train ``model`` in place on ``loader``; returns mean loss, steps and examples seen."""
    model.train()
    opt = make_optimizer(model, lr, weight_decay)
    losses, seen, steps = [], 0, 0
    bar = tqdm(total=max_steps or epochs * len(loader), desc=desc, leave=False, disable=not progress)
    for _ in range(epochs):
        for batch in loader:
            batch = _to(batch, device)
            losses.append(train_step(model, batch, opt, grad_clip, amp))
            seen += len(batch["labels"])
            steps += 1
            bar.update()
            if max_steps is not None and steps >= max_steps:
                break
        if max_steps is not None and steps >= max_steps:
            break
    bar.close()
    model.eval()
    return {"loss": sum(losses) / max(len(losses), 1), "steps": steps, "examples": seen}
