# Reference solutions to the exercises of notebooks/03_federated_rounds.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (states, base, topic_labels, parts_1, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# round_lr: lr * (1 - (r - 1) / R), so round R keeps lr / R.
lr_round_10 = 8e-4 * (1 - (10 - 1) / 10)

# %% EXERCISE 2
# Client k's labels are topic_labels[parts_1[k]]; bincount with minlength keeps absent topics as 0.
import numpy as np

label_count_matrix = np.stack([np.bincount(topic_labels[p], minlength=len(topics)) for p in parts_1])

# %% EXERCISE 3
# Every sampled client downloads the whole global state: its bytes, once per client.
state_size = sum(t.numel() * t.element_size() for t in states["fedpft"].values())
bytes_down_one_round = base.clients_per_round * state_size
