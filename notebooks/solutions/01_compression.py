# Reference solutions to the exercises of notebooks/01_compression.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it, so
# every check is proven able to pass). A section may use what the notebook defined before it
# (fm, cfg, fm_total, w_in, w_out, LAYER, M, R, A, K, ...). See notebooks/solutions/README.md.

# %% EXERCISE 1
# Neuron j reads row j of W_in (shape: width x hidden) and writes column j of W_out (hidden x width).
saliency = torch.sqrt(w_in.weight.detach().pow(2).sum(1) + w_out.weight.detach().pow(2).sum(0))
top_neurons = torch.sort(torch.topk(saliency, M).indices).values

# %% EXERCISE 2
# A neuron owns one row of W_in, one entry of b_in and one column of W_out; b_out is shared.
per_neuron = 2 * cfg.hidden_size + 1
dropped = cfg.intermediate_size - round(R * cfg.intermediate_size)   # per compressed layer
sub_params_at_R = fm_total - (cfg.num_hidden_layers - 2) * dropped * per_neuron

# %% EXERCISE 3
# Uniform layer drop: keep K of the M middle layers at positions round(i (M - 1) / (K - 1)).
n = cfg.num_hidden_layers
middle = list(range(A, n - A))
kept_middle = [middle[round(i * (len(middle) - 1) / (K - 1))] for i in range(K)] if K > 1 else [middle[len(middle) // 2]]
emulator_layer_map = list(range(A)) + kept_middle + list(range(n - A, n))
