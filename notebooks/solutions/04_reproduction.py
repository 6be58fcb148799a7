# Reference solutions to the exercises of notebooks/04_reproduction.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (ex_summary, choice_summary, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# One row per seed, one column per cell: subtract within each seed, then an interval over seeds.
from fedpft_lite.stats import mean_interval

acc = 100 * ex_summary.pivot_table(index="seed", columns="cell", values="fm_accuracy")
iv = mean_interval((acc["FedPFT"] - acc["FedOT"]).dropna())
paired_gap = (iv.mean, iv.half)

# %% EXERCISE 2
# Choose on validation, report test: the cells' means over seeds; fm_accuracy plays no part in the choice.
def choose(summary):
    means = summary.groupby("cell")[["fm_val_accuracy", "fm_accuracy"]].mean()
    best = means["fm_val_accuracy"].idxmax()
    return best, 100 * means.loc[best, "fm_accuracy"]
