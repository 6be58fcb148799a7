"""Evaluation: accuracy of a classifier, and a frozen-feature linear probe (a difficulty reference)."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .causal_lm import next_token_counts
from .models import pool


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device="cpu", progress: bool = False,
             desc: str = "eval") -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``loader`` (model in eval mode).

    A causal language model (token ``labels``, one row per text) is scored per next token:
    ``accuracy`` is the share of next tokens predicted exactly (top-1), ``loss`` the mean
    next-token cross-entropy, ``perplexity`` its exponential and ``n`` the tokens scored."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum, tokens = 0.0, False
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        batch = _to(batch, device)
        out = model(**batch)
        labels = batch["labels"]
        if labels.dim() == 2:   # a language model's tokens
            tokens = True
            loss, right, scored = next_token_counts(out.logits, labels)
            loss_sum, correct, total = loss_sum + loss, correct + right, total + scored
            continue
        loss_sum += float(torch.nn.functional.cross_entropy(out.logits.float(), labels, reduction="sum"))
        correct += int((out.logits.argmax(-1) == labels).sum())
        total += len(labels)
    model.train(was_training)
    res = {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1), "n": total}
    if tokens:
        res["perplexity"] = math.exp(min(res["loss"], 50.0))   # exp(50) already means "none learned"
    return res


@torch.no_grad()
def pooled_features(model, loader, device="cpu", progress: bool = True, layers: str = "last"):
    """(features, labels) of the model's pooled representation.

    ``layers="last"``: the classifier's input (the last layer, pooled as the model pools);
    ``"all"``: the embeddings' and every earlier layer's output pooled the same way, then the
    classifier's input (always the last block), concatenated: a stronger frozen baseline when
    what a task needs sits in the middle layers."""
    if layers not in ("last", "all"):
        raise ValueError(f"layers must be 'last' or 'all', got {layers!r}")
    feats, labels = [], []
    captured = {}
    hook = model.classifier.register_forward_hook(lambda m, i, o: captured.__setitem__("x", i[0]))
    model.eval()
    try:
        for batch in tqdm(loader, desc="features", leave=False, disable=not progress):
            batch = _to(batch, device)
            out = model(**batch, output_hidden_states=layers == "all")
            x = captured["x"]                 # the classifier's input: the last layer, pooled
            if layers == "all":                # earlier layers pooled the same way, before it
                mask = batch.get("attention_mask")
                x = torch.cat([pool(h, mask, model.pooling) for h in out.hidden_states[:-1]] + [x], dim=-1)
            feats.append(x.float().cpu())
            labels.append(batch["labels"].cpu())
    finally:
        hook.remove()
    return torch.cat(feats), torch.cat(labels)


def _fit_probe(xtr, ytr, epochs: int, lr: float, weight_decay: float, seed: int) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(xtr.shape[1], int(ytr.max()) + 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(xtr), ytr).backward()
        opt.step()
    return head


@torch.no_grad()
def _accuracy(head, x, y) -> float:
    return float((head(x).argmax(-1) == y).float().mean())


def linear_probe(model, train_loader, test_loader, device="cpu", epochs: int = 100,
                 lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0,
                 progress: bool = True, layers: str = "last", val_loader=None,
                 weight_decays: tuple[float, ...] | None = None) -> dict[str, float]:
    """Train only a linear head on frozen pooled features (full-batch AdamW); test accuracy.

    How far a frozen foundation model gets without any fine-tuning: the floor every federated
    method should beat. With ``val_loader`` and several ``weight_decays`` the decay is chosen by
    validation accuracy (never by test accuracy); ``layers="all"`` probes every layer at once.
    """
    feats = [pooled_features(model, loader, device, progress, layers)
             for loader in (train_loader, test_loader) + ((val_loader,) if val_loader is not None else ())]
    return probe_features(*feats, epochs=epochs, lr=lr, weight_decay=weight_decay, seed=seed,
                          weight_decays=weight_decays) | {"layers": layers}


def probe_features(train, test, val=None, *, epochs: int = 100, lr: float = 1e-2,
                   weight_decay: float = 1e-4, seed: int = 0,
                   weight_decays: tuple[float, ...] | None = None) -> dict:
    """:func:`linear_probe` on features already computed: ``(x, y)`` pairs for each split."""
    (xtr, ytr), (xte, yte) = train, test
    mu, sd = xtr.mean(0), xtr.std(0).clamp(min=1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    res = {}
    if val is not None:
        xva, yva = (val[0] - mu) / sd, val[1]
        tried = {wd: _accuracy(_fit_probe(xtr, ytr, epochs, lr, wd, seed), xva, yva)
                 for wd in weight_decays or (weight_decay,)}
        weight_decay = max(tried, key=tried.get)
        res.update(val_accuracy=tried[weight_decay], weight_decay=weight_decay,
                   val_by_weight_decay={str(k): v for k, v in tried.items()}, n_val=len(yva))
    head = _fit_probe(xtr, ytr, epochs, lr, weight_decay, seed)
    res.update(train_accuracy=_accuracy(head, xtr, ytr), test_accuracy=_accuracy(head, xte, yte),
               n_train=len(ytr), n_test=len(yte))
    return res


#: Weight decays tried by :func:`frozen_baselines` (chosen on validation).
PROBE_WEIGHT_DECAYS = (1e-4, 1e-1, 1.0)


def frozen_baselines(model, preprocessor, ds, device="cpu", max_length: int = 64, seed: int = 0,
                     progress: bool = True) -> dict:
    """The strongest frozen-feature baseline a fine-tuning method has to beat.

    Linear probes on the frozen model's pooled last layer and on all its layers pooled and
    concatenated, each with its weight decay chosen on validation; the probe with the best
    validation accuracy is *the* baseline and gives ``test_accuracy``. Validation is the task's
    ``validation`` split, or a seeded 10 % of ``train`` for tasks without one: the test split
    never chooses anything."""
    from datasets import DatasetDict

    from .data import encode, make_loader

    if "validation" in ds:
        train, val = ds["train"], ds["validation"]
    else:
        cut = ds["train"].train_test_split(test_size=0.1, seed=seed, stratify_by_column="label")
        train, val = cut["train"], cut["test"]
    enc = encode(DatasetDict(train=train, validation=val, test=ds["test"]), preprocessor, max_length)
    # One pass per split: every layer pooled (the last layer's block is the classifier's input).
    feats = [pooled_features(model, make_loader(enc[s], preprocessor, 64), device, progress, "all")
             for s in ("train", "test", "validation")]
    width = model.config.hidden_size
    last = [(x[:, -width:], y) for x, y in feats]
    probes = {name: probe_features(*f, seed=seed, weight_decays=PROBE_WEIGHT_DECAYS)
              for name, f in (("last-layer pooled", last), ("all-layers pooled", feats))}
    best = max(probes, key=lambda k: probes[k]["val_accuracy"])
    return {"test_accuracy": probes[best]["test_accuracy"], "val_accuracy": probes[best]["val_accuracy"],
            "best": best, "probes": probes, "n_train": len(train), "n_val": len(val),
            "n_test": len(ds["test"])}
