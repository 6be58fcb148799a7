# Reference solutions to the exercises of notebooks/06_flower.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it).
# A section may use what the notebook defined before it (cfg, RUN, alignments, ...); neither needs Flower.
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# Neuron-level alignment runs in rounds t, 2t, ... strictly before the last round. The ServerApp
# sends every sampled client all neurons aligned so far (nodes keep no state between rounds), so
# every round after the first alignment carries a patch.
def patch_rounds(rounds, t):
    alignment = [r for r in range(1, rounds + 1) if r % t == 0 and r < rounds]
    return [r for r in range(1, rounds + 1) if alignment and r > alignment[0]]

# %% EXERCISE 2
# Round r's message carries the union of the neurons of every alignment that ran before round r (an alignment
# runs after its round's FedAvg): a set per layer, so a neuron updated twice counts once.
def patch_neurons(updated, r):
    union = {}
    for a, layers in updated.items():
        if a < r:
            for layer, idx in layers.items():
                union.setdefault(layer, set()).update(idx)
    return {layer: len(union[layer]) for layer in sorted(union)}
