"""The record of a federated run: one row per round, saved as JSON and CSV, shown as a DataFrame,
and plotted (accuracy and bytes per round, methods side by side)."""
from __future__ import annotations

import json
from pathlib import Path


class History(list):
    """A list of per-round dicts (``round``, ``fm_accuracy``, ``proxy_accuracy``, ``train_loss``,
    ``bytes_down``, ``bytes_up``, ``seconds``, ``aligned``, ...)."""

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame(list(self)).set_index("round") if self else pd.DataFrame()

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "history.json").write_text(json.dumps(list(self), indent=1))
        self.to_frame().to_csv(folder / "history.csv")

    @classmethod
    def load(cls, folder: str | Path) -> "History":
        return cls(json.loads((Path(folder) / "history.json").read_text()))

    def final(self, key: str = "fm_accuracy"):
        vals = [r[key] for r in self if r.get(key) is not None]
        return vals[-1] if vals else None


def plot_histories(histories: dict[str, History], metric: str = "fm_accuracy", ax=None,
                   title: str | None = None):
    """One line per method: ``metric`` over rounds."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for (label, h), color in zip(histories.items(), sns.color_palette("tab10", len(histories))):
        rows = [r for r in h if r.get(metric) is not None]
        ax.plot([r["round"] for r in rows], [r[metric] for r in rows], marker="o", ms=3,
                label=label, color=color)
        aligned = [r for r in rows if r.get("aligned")]
        if aligned:
            ax.scatter([r["round"] for r in aligned], [r[metric] for r in aligned], marker="*",
                       s=90, color=color, zorder=3)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.set_xlabel("round")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or metric.replace("_", " ") + " per round")
    ax.legend(frameon=False, fontsize=8)
    sns.despine(ax=ax)
    return ax


def plot_bytes(histories: dict[str, History], ax=None):
    """Mean bytes per round sent down (server -> clients) and up (clients -> server), per method."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    names = list(histories)
    down = [np.mean([r["bytes_down"] for r in histories[n]]) / 2**20 for n in names]
    up = [np.mean([r["bytes_up"] for r in histories[n]]) / 2**20 for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, down, 0.4, label="down (server -> clients)")
    ax.bar(x + 0.2, up, 0.4, label="up (clients -> server)")
    ax.set_xticks(x, names)
    ax.set_ylabel("MiB per round")
    ax.legend(frameon=False, fontsize=8)
    return ax
