"""Batched client training: the sampled clients of a round in one forward/backward pass.

Every client of a round starts from the same global state on the same frozen proxy; the clients
differ only in their LoRA matrices and classification head, and in their data. So instead of C
passes of B examples each (``training.local_train`` once per client, what ``LocalClients`` does
by default), :func:`local_train_batched` runs one pass of C x B examples per step:

* the frozen weights see one big batch of C x B rows: one large matmul instead of C small ones
  (on a GPU a BERT-base client step at batch 32 is launch-bound, so C clients cost about one);
* every module holding trainable weights (LoRA's A and B, the head) is swapped for a
  :class:`PerClientLinear` that holds the C clients' copies stacked, ``(C, out, in)``, and applies
  client c's copy to client c's B rows with one batched matmul (``torch.bmm``);
* the loss is the sum over clients of each client's mean loss. Client c's weights touch only its
  own rows, so the gradient of that sum with respect to them is exactly the gradient of client
  c's own loss: one backward pass gives every client its own gradient;
* each client keeps its own tensors and its own AdamW, and its gradient norm is clipped on its
  own, with the same calls as ``training.train_step`` (:func:`training.clip_and_step`).

Clients of unequal size: each step stacks only the clients that still have a batch. A client
that has run out sits the step out: its weights are not in the stack, get no gradient, and its
optimiser does not step (AdamW would otherwise move them by momentum and weight decay). The
clients' batches of one step are padded to a common shape: to the same number of rows B by
repeating a row of the client's own batch with loss weight 0 (its gradient is exactly 0), and
to the same number of tokens with padding tokens whose attention mask is 0 (attention gives
them weight 0, mean pooling skips them). Each client sees its batches in its own order (its
own loader, as in the sequential executor).

Equivalence: with dropout off (LoRA, hidden, attention and head dropout 0) the clients' states
equal the sequential executor's up to float rounding (the matmuls add in another order);
``tests/test_batched_clients.py`` states and checks the tolerance. With dropout on, both draw
masks from seeded generators but not the same masks: the sequential executor re-seeds before
each client, while here one mask is drawn for the whole C x B batch, and the attention dropout
inside ``scaled_dot_product_attention`` cannot be seeded per row. The batched run is still
reproducible (same seed, same masks).

peft's own mixed-adapter batches (``adapter_names=...``) loop over adapters in Python, one
sub-batch each, which is what this module avoids.
"""
from __future__ import annotations

from contextlib import contextmanager
from itertools import chain, repeat

import torch
from torch import nn

from .evaluation import _to
from .training import adamw, autocast_for, clip_and_step


class PerClientLinear(nn.Module):
    """A linear layer with one weight (and bias) per client, for input rows grouped by client.

    ``weight`` is ``(C, out, in)`` and ``bias`` ``(C, out)``, set before every step to the stack
    of the active clients' tensors. The input's first dimension holds C equal groups of rows,
    client by client; each group goes through its own client's weight in one ``torch.bmm``."""

    def __init__(self, bias: bool):
        super().__init__()
        self.has_bias = bias
        self.weight = self.bias = None  # plain tensors (not parameters): set per step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, d_in = self.weight.shape[0], x.shape[-1]
        y = torch.bmm(x.reshape(c, -1, d_in), self.weight.transpose(1, 2))  # (C, rows*tokens, out)
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def trainable_owners(model: nn.Module) -> dict[str, list[str]]:
    """{path of a module owning trainable tensors: their names ('weight', 'bias')}. Each owner
    must be an ``nn.Linear`` (LoRA's A and B, the head), the only layers batched here."""
    owners: dict[str, list[str]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            path, attr = name.rsplit(".", 1)
            owners.setdefault(path, []).append(attr)
    for path in owners:
        if not isinstance(model.get_submodule(path), nn.Linear):
            raise TypeError(f"batched clients stack nn.Linear weights only; {path} is a "
                            f"{type(model.get_submodule(path)).__name__}")
    return owners


@contextmanager
def per_client_layers(model: nn.Module):
    """Swap every trainable ``nn.Linear`` of ``model`` for a :class:`PerClientLinear` (restored
    on exit, also after an error); yields ``{owner path: PerClientLinear}``."""
    owners = trainable_owners(model)
    originals, swapped = {}, {}
    try:
        for path, attrs in owners.items():
            parent, _, child = path.rpartition(".")
            originals[path] = model.get_submodule(path)
            swapped[path] = PerClientLinear(bias="bias" in attrs)
            setattr(model.get_submodule(parent), child, swapped[path])
        yield swapped
    finally:
        for path, module in originals.items():
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent), child, module)


def stack_batches(batches: list[dict], pad_id: int) -> tuple[dict, torch.Tensor]:
    """One input batch of C x B rows from C client batches, and each row's loss weight.

    Rows: a client with fewer than B rows repeats its first row, with weight 0; the others have
    weight 1 / (the client's real rows), so the weighted sum of the row losses is the sum of the
    clients' mean losses. Tokens: shorter batches are padded with ``pad_id`` (input ids) or 0
    (attention mask, token types) up to the longest."""
    rows = max(len(b["labels"]) for b in batches)
    inputs, weights = [], []
    for b in batches:
        n = len(b["labels"])
        keep = torch.cat([torch.arange(n), torch.zeros(rows - n, dtype=torch.long)])
        inputs.append({k: v[keep] for k, v in b.items()})
        weights.append(torch.cat([torch.full((n,), 1.0 / n), torch.zeros(rows - n)]))
    out = {}
    for key in inputs[0]:
        parts = [x[key] for x in inputs]
        if parts[0].dim() == 2 and key != "pixel_values":         # (rows, tokens)
            tokens = max(p.shape[1] for p in parts)
            fill = pad_id if key == "input_ids" else 0
            parts = [nn.functional.pad(p, (0, tokens - p.shape[1]), value=fill) for p in parts]
        out[key] = torch.cat(parts)
    return out, torch.cat(weights)


def local_train_batched(model, loaders: list, *, lr: float, epochs: int = 1,
                        grad_clip: float | None = 1.0, weight_decay: float = 0.0, device="cpu",
                        amp: bool = False, pad_id: int = 0) -> list[dict]:
    """Train C clients together, one loader each, all starting from ``model``'s trainable state.

    ``model`` is the shared proxy with LoRA (its frozen weights serve every client; its own
    trainable tensors are only read, as the clients' starting point). Same optimiser math as
    :func:`training.local_train` for each client: AdamW at ``lr``, gradient norm clipped to
    ``grad_clip``, ``epochs`` passes over its loader. Returns, per client, ``{"state": {name:
    tensor} (the model's parameter names), "loss": mean batch loss, "steps", "examples"}``."""
    start = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    clients = [{n: t.clone().requires_grad_(True) for n, t in start.items()} for _ in loaders]
    optimizers = [adamw(list(c.values()), lr, weight_decay) for c in clients]
    streams = [chain.from_iterable(repeat(loader, epochs)) for loader in loaders]
    losses = [[] for _ in loaders]
    seen = [0] * len(loaders)
    model.train()
    with per_client_layers(model) as layers:
        while True:
            batches = [next(stream, None) for stream in streams]   # None: this client is done
            step = [(c, b) for c, b in enumerate(batches) if b is not None]
            if not step:
                break
            active = [c for c, _ in step]
            batch, weight = stack_batches([b for _, b in step], pad_id)
            batch, weight = _to(batch, device), weight.to(device)
            labels = batch.pop("labels")
            for path, layer in layers.items():       # the active clients' weights, stacked
                layer.weight = torch.stack([clients[c][path + ".weight"] for c in active])
                layer.bias = (torch.stack([clients[c][path + ".bias"] for c in active])
                              if layer.has_bias else None)
            with autocast_for(device, amp):
                logits = model(**batch).logits
                row_loss = nn.functional.cross_entropy(logits, labels, reduction="none")
            row_loss = row_loss.float() * weight
            for c in active:
                optimizers[c].zero_grad(set_to_none=True)
            row_loss.sum().backward()
            per_client = row_loss.detach().view(len(active), -1).sum(1)
            for i, (c, b) in enumerate(step):
                clip_and_step(list(clients[c].values()), optimizers[c], grad_clip)
                losses[c].append(per_client[i])
                seen[c] += len(b["labels"])
    model.eval()
    return [{"state": {n: t.detach() for n, t in c.items()},
             "loss": float(torch.stack(ls).mean()) if ls else 0.0, "steps": len(ls), "examples": s}
            for c, ls, s in zip(clients, losses, seen)]
