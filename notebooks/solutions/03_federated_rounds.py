# Reference solutions to the exercises of notebooks/03_federated_rounds.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (demo, topic_labels, topics, parts_1, fm, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# One round misses a given client with probability 1 - m/N (m of N drawn uniformly); the rounds draw independently,
# so it is missed in all R rounds with probability (1 - m/N)^R; over N clients, N times that on average.
def expected_never_sampled(num_clients, per_round, rounds):
    return num_clients * (1 - per_round / num_clients) ** rounds

# %% EXERCISE 2
# Client k's labels are topic_labels[parts_1[k]]; bincount with minlength keeps absent topics as 0.
import numpy as np

label_count_matrix = np.stack([np.bincount(topic_labels[p], minlength=len(topics)) for p in parts_1])

# %% EXERCISE 3
# Per layer: 4 attention linears (hidden x hidden), each with A (r x hidden) and B (hidden x r): 4 * 2 * r * hidden
# values. The head: a hidden x num_labels weight and num_labels biases. fp32: 4 bytes per value.
def state_bytes_for(layers, hidden, r, num_labels):
    lora = layers * 4 * 2 * r * hidden
    head = (hidden + 1) * num_labels
    return 4 * (lora + head)
