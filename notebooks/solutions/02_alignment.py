# Reference solutions to the exercises of notebooks/02_alignment.ipynb.
#
# Try the exercises yourself first. Each section below is the code that `ex.fill(n)` runs in the
# notebook, right after your cell's blank, when FEDPFT_LITE_SOLUTIONS is set (the tests set it, so
# every check is proven able to pass). A section may use what the notebook defined before it
# (fm, sub, ex_batch, LAYER, fm_lora, proxy, probe_batch, state, apoz, P, ROUNDS, T, ...).
# See notebooks/solutions/README.md.

# %% EXERCISE 1
# Each model runs its own forward pass; hidden_states[0] is the embeddings, so layer i is [i + 1].
with torch.no_grad():
    h_fm = fm(**ex_batch, output_hidden_states=True).hidden_states[LAYER + 1].float()
    h_sub = sub(**ex_batch, output_hidden_states=True).hidden_states[LAYER + 1].float()
real = ex_batch["attention_mask"].unsqueeze(-1).float()          # 1 for real tokens, 0 for padding
d_layer = float(((h_fm - h_sub).pow(2) * real).sum() / (h_fm.pow(2) * real).sum())

# %% EXERCISE 2
from fedpft_lite.lora import load_trainable_state


def lora_gradient(model):
    model.eval()                                                  # no dropout
    model.zero_grad(set_to_none=True)
    model(**probe_batch).loss.backward()
    grads = [p.grad.detach().flatten().cpu() for n, p in model.named_parameters()
             if "lora_" in n and p.grad is not None]
    model.zero_grad(set_to_none=True)
    return torch.cat(grads)


load_trainable_state(proxy, state)
load_trainable_state(fm_lora, state, fm_names=False, require_all=False)
g_sub, g_fm = lora_gradient(proxy), lora_gradient(fm_lora)       # same names, same order in both models
grad_cosine = float(g_sub @ g_fm / (g_sub.norm() * g_fm.norm()))

# %% EXERCISE 3
# The least active neurons have the highest APoZ: sort descending (stable: lower index first on ties).
a = apoz[LAYER]
n_update = round(P * len(a))
to_update = torch.sort(torch.sort(a, descending=True, stable=True).indices[:n_update]).values

# %% EXERCISE 4
# Rounds t, 2t, 3t, ... strictly before the last round.
align_rounds = list(range(T, ROUNDS, T))
