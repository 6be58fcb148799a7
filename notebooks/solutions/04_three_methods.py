# Reference solutions to the exercises of notebooks/04_three_methods.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (histories, n_test, fedpft_state, patch_bytes, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# The number right on n sentences is binomial(n, p): the share right has standard error sqrt(p (1 - p) / n);
# 95 % of a normal distribution lies within its 97.5 % quantile (1.959964...) of standard errors.
import math
from statistics import NormalDist


def accuracy_half_width(p, n):
    return NormalDist().inv_cdf(0.975) * math.sqrt(p * (1 - p) / n)

# %% EXERCISE 2
# Every round: the state to each sampled client. Alignment rounds (t, 2t, ... strictly before the last): also the
# patch to each of them. The mean spreads the alignments' patches over all the rounds.
def mean_bytes_down(state_bytes, patch_bytes, clients, rounds, t):
    alignments = [r for r in range(1, rounds) if r % t == 0]
    return clients * state_bytes + clients * patch_bytes * len(alignments) / rounds
