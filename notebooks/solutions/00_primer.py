# Reference solutions to the exercises of notebooks/00_primer.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it, so
# every check is proven able to pass). A section may use what the notebook defined before it
# (w_in, w_out, KEEP, client_states, n_k, ...). See notebooks/solutions/README.md.

# %% EXERCISE 1
# A neuron: one row of W_in (hidden values), one entry of b_in, one column of W_out (hidden values).
neuron_params = w_in.in_features + 1 + w_out.out_features

# %% EXERCISE 2
# nn.Linear keeps (out_features, in_features): neurons are the rows of W_in, the columns of W_out.
keep_index = torch.tensor(KEEP)
w_in_small = w_in.weight[keep_index]
b_in_small = w_in.bias[keep_index]
w_out_small = w_out.weight[:, keep_index]

# %% EXERCISE 3
# A is r x d_in and B is d_out x r: r (d_in + d_out) values against W's d_in d_out. The smallest whole r with
# r (d_in + d_out) >= d_in d_out is the ceiling of the ratio (integer arithmetic: no float rounding).
def break_even_rank(d_in, d_out):
    return -(-d_in * d_out // (d_in + d_out))

# %% EXERCISE 4
# Weighted FedAvg: client k counts n_k / sum(n_k), for every tensor of the state.
avg = {name: sum(n / sum(n_k) * state[name] for state, n in zip(client_states, n_k))
       for name in client_states[0]}
