# Reference solutions to the exercises of notebooks/06_neighbourhood.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (clusters, n_layers, emulator, clients, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# Start from "every position runs itself", then overwrite each cluster's positions with its middle layer.
shared_from = list(range(n_layers))
for cluster in clusters:
    for position in cluster:
        shared_from[position] = cluster[len(cluster) // 2]

# %% EXERCISE 2
# The emulator's middle layers only (the adapters' weights never travel again), to every sampled client.
layers = get_layers(emulator.backbone)
middle_bytes = sum(p.numel() * p.element_size() for i in emulator_positions(emulator) for p in layers[i].parameters())
emulator_mib = clients * middle_bytes / 2**20
