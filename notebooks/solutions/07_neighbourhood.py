# Reference solutions to the exercises of notebooks/07_neighbourhood.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (reps, middle, k_clusters, emulator, clients, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# Start with one cluster per layer; while more than k remain, merge the neighbouring pair whose facing layers (last of
# the left, first of the right) have the highest linear CKA; max over (cka, -j) takes the leftmost pair on a tie.
from fedpft_lite.neighbourhood import linear_cka


def crash_clusters(reps, layers, k):
    clusters = [[i] for i in layers]
    while len(clusters) > k:
        sims = [linear_cka(reps[clusters[j][-1]], reps[clusters[j + 1][0]]) for j in range(len(clusters) - 1)]
        j = max(range(len(sims)), key=lambda i: (sims[i], -i))
        clusters[j] = clusters[j] + clusters.pop(j + 1)
    return clusters

# %% EXERCISE 2
# The emulator's middle layers only (the adapters' weights never travel again), to every sampled client.
layers = get_layers(emulator.backbone)
middle_bytes = sum(p.numel() * p.element_size() for i in emulator_positions(emulator) for p in layers[i].parameters())
emulator_mib = clients * middle_bytes / 2**20
