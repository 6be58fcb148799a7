# Reference solutions to the exercises of notebooks/05_flower.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (cfg, RUN, ...); neither needs Flower.
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# FedConfig.clients_per_round: fraction x num_clients, rounded (Python's round), at least 1.
# federated.sample_clients draws that many partitions per round; the ServerApp messages their nodes.
def clients_per_round(num_clients, fraction):
    return max(1, round(fraction * num_clients))

# %% EXERCISE 2
# Neuron-level alignment runs in rounds t, 2t, ... strictly before the last round. The ServerApp
# sends every sampled client all neurons aligned so far (nodes keep no state between rounds), so
# every round after the first alignment carries a patch.
def patch_rounds(rounds, t):
    alignment = [r for r in range(1, rounds + 1) if r % t == 0 and r < rounds]
    return [r for r in range(1, rounds + 1) if alignment and r > alignment[0]]
