"""Why FedPETuning − FedPFT is what it is (issue 27): the same-seed gap on the VALIDATION split
against FedPFT's alignment budget, its keep ratio and the rounds, from the committed runs.

    python scripts/gap_curves.py      # -> data/results/reproduce/gap_curves.png and gap_curves.csv

Every point is a same-seed difference of validation accuracy (last round), FedPETuning minus a
FedPFT variant, both runs with lite Table 1's settings except the one varied:

* layer-level steps before FL: 0 (lite/ablation's FedPFT_B), 250 and 3000 (lite/gap-budget), 1000
  (lite Table 1's FedPFT);
* neuron-level steps per alignment: 0 (FedPFT_D), 20 (Table 1), 100 (lite/neuron-steps);
* keep ratio: 0.25 (Table 1), 0.5 and 0.75 (lite/gap-budget);
* rounds: both methods for 20 rounds, validation accuracy after every round (lite/gap-rounds).

FedPETuning's run of the same seed is lite Table 1's (10 rounds); in the rounds panel it is the
20-round FedPETuning run of lite/gap-rounds. Only registered seeds are used; the CSV holds every
point (seed by seed) and the plot shows each seed and their mean.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "data" / "results" / "reproduce"


def points():
    import pandas as pd

    from fedpft_lite.results import committed_summary

    def val(name, cell):
        s = committed_summary(name)
        if s is None:
            return {}
        rows = s[s.cell == cell]
        return dict(zip(rows.seed.astype(int), 100 * rows.fm_val_accuracy))

    ref = {**val("lite/table1", "FedPETuning"), **val("lite/table1-gap", "FedPETuning")}   # same runs where both
    series = {  # curve -> [(x, {seed: FedPFT variant's validation %})]
        "layer-level steps": [(0, val("lite/ablation", "FedPFT_B")), (250, val("lite/gap-budget", "layer steps=250")),
                              (1000, val("lite/table1", "FedPFT")), (3000, val("lite/gap-budget", "layer steps=3000"))],
        "neuron-level steps": [(0, val("lite/neuron-steps", "steps=0")), (20, val("lite/neuron-steps", "steps=20")),
                               (100, val("lite/neuron-steps", "steps=100"))],
        "keep ratio": [(0.25, val("lite/table1", "FedPFT")), (0.5, val("lite/gap-budget", "keep=0.5")),
                       (0.75, val("lite/gap-budget", "keep=0.75"))],
    }
    rows = []
    for curve, pts in series.items():
        for x, by_seed in pts:
            for seed, v in by_seed.items():
                if seed in ref:
                    rows.append(dict(curve=curve, x=x, seed=seed, gap=ref[seed] - v))
    rounds = committed_summary("lite/gap-rounds")
    if rounds is not None:
        for seed, g in rounds.groupby("seed"):
            runs = dict(zip(g.cell, g.run))
            if {"FedPETuning", "FedPFT"} <= set(runs):
                h = {c: json.loads((OUT / "runs" / runs[c] / "history.json").read_text()) for c in runs}
                for a, b in zip(h["FedPETuning"], h["FedPFT"]):
                    rows.append(dict(curve="rounds", x=a["round"], seed=int(seed),
                                     gap=100 * (a["fm_val_accuracy"] - b["fm_val_accuracy"])))
    return pd.DataFrame(rows, columns=["curve", "x", "seed", "gap"])


def main() -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = points()
    df.to_csv(OUT / "gap_curves.csv", index=False)
    curves = [c for c in ("layer-level steps", "neuron-level steps", "keep ratio", "rounds") if c in set(df.curve)]
    if not curves:
        print("no committed runs to plot yet")
        return 1
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.2), sharey=True, squeeze=False)
    for ax, curve in zip(axes[0], curves):
        d = df[df.curve == curve]
        for seed, g in d.groupby("seed"):
            ax.plot(g.x, g.gap, ".", color="grey", alpha=0.6, label="one seed" if seed == d.seed.min() else None)
        mean = d.groupby("x").gap.mean()
        ax.plot(mean.index, mean.values, "o-" if curve != "rounds" else "-", color="C3", label="mean over seeds")
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(1, color="C2", lw=0.8, ls=":", label="1 point (the paper's gap)")
        ax.set(xlabel=curve, title=f"gap vs {curve}")
        if curve in ("layer-level steps",):
            ax.set_xscale("symlog", linthresh=100)
    axes[0][0].set_ylabel("FedPETuning − FedPFT\n(validation, points)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "gap_curves.png", dpi=110)
    print(df.groupby(["curve", "x"]).gap.agg(["mean", "count"]).round(2).to_string())
    print(f"written: {OUT / 'gap_curves.png'}, {OUT / 'gap_curves.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
