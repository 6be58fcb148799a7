"""Evaluation: accuracy of a classifier, and a frozen-feature linear probe (a difficulty reference)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device="cpu", progress: bool = False,
             desc: str = "eval") -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``loader`` (model in eval mode)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        batch = _to(batch, device)
        out = model(**batch)
        labels = batch["labels"]
        loss_sum += float(torch.nn.functional.cross_entropy(out.logits.float(), labels, reduction="sum"))
        correct += int((out.logits.argmax(-1) == labels).sum())
        total += len(labels)
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1), "n": total}


@torch.no_grad()
def pooled_features(model, loader, device="cpu", progress: bool = True):
    """(features, labels) of the model's pooled representation (the classifier's input)."""
    feats, labels = [], []
    captured = {}
    hook = model.classifier.register_forward_hook(lambda m, i, o: captured.__setitem__("x", i[0]))
    model.eval()
    try:
        for batch in tqdm(loader, desc="features", leave=False, disable=not progress):
            batch = _to(batch, device)
            model(**batch)
            feats.append(captured["x"].float().cpu())
            labels.append(batch["labels"].cpu())
    finally:
        hook.remove()
    return torch.cat(feats), torch.cat(labels)


def linear_probe(model, train_loader, test_loader, device="cpu", epochs: int = 100,
                 lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0,
                 progress: bool = True) -> dict[str, float]:
    """Train only a linear head on frozen pooled features (full-batch AdamW); test accuracy.

    How far a frozen foundation model gets without any fine-tuning: the floor every federated
    method should beat.
    """
    xtr, ytr = pooled_features(model, train_loader, device, progress)
    xte, yte = pooled_features(model, test_loader, device, progress)
    mu, sd = xtr.mean(0), xtr.std(0).clamp(min=1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
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
    with torch.no_grad():
        train_acc = float((head(xtr).argmax(-1) == ytr).float().mean())
        test_acc = float((head(xte).argmax(-1) == yte).float().mean())
    return {"train_accuracy": train_acc, "test_accuracy": test_acc,
            "n_train": len(ytr), "n_test": len(yte)}
