# Reference solutions to the exercises of notebooks/05_reproduction.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (ex_summary, choice_summary, gap_sd, gap_target, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# The 95 % half-width of a mean of n values is t_quantile(n) * sd / sqrt(n), with t_quantile(n) Student's t
# quantile for n - 1 degrees of freedom; both factors fall as n grows, so count up from 2 until it fits.
import math

from fedpft_lite.stats import t_quantile


def seeds_needed(sd, half_width):
    n = 2
    while t_quantile(n) * sd / math.sqrt(n) > half_width:
        n += 1
    return n

# %% EXERCISE 2
# Choose on validation, report test: the cells' means over seeds; fm_accuracy plays no part in the choice.
def choose(summary):
    means = summary.groupby("cell")[["fm_val_accuracy", "fm_accuracy"]].mean()
    best = means["fm_val_accuracy"].idxmax()
    return best, 100 * means.loc[best, "fm_accuracy"]
