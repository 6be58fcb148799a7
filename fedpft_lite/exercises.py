"""Checked exercises for the notebooks: a blank or wrong answer fails, the reference solution passes.

An exercise is two cells. The student's cell starts with ``# EXERCISE n: <what to do>``, assigns an
answer (the stored notebook holds a blank ``...``) and ends with ``ex.fill(n)``. The check cell calls
``ex.check(n, answer, **inputs)``, which compares the answer with a reference the package computes
from ``inputs`` (the notebook's model, tensors, ...) and raises, with a helpful message, when the
answer is blank (:class:`ExerciseNotDone`) or differs (:class:`ExerciseWrong`).

Where the notebook's own inputs cannot tell a right rule from a typical wrong one (rounding down and up
agree on a square layer's break-even rank; choosing on validation and on test pick the same committed
cell), the answer is a *function* and its :class:`Check` lists ``cases``: more inputs on which the
function must agree with the reference too (a blank is a function that still returns ``...``).

Solutions live outside the notebooks, one file per notebook, ``notebooks/solutions/<notebook>.py``,
cut into ``# %% EXERCISE n`` sections. ``ex.fill(n)`` does nothing for a student; only when the
environment variable ``FEDPFT_LITE_SOLUTIONS`` is set (the root ``conftest.py`` sets it for
``pytest --nbmake``) it runs solution n in the notebook's namespace, right after the blank, so the
test run proves that every check can pass. Its value may also name the solutions folder.
"""
from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .aggregation import fedavg
from .arch import arch_of, ffn_linears, get_layers
from .compression import slice_ffn
from .utils import env_flag

#: Set (to 1, or to a solutions folder) to fill the reference solutions into the exercise cells.
SOLUTIONS_ENV = "FEDPFT_LITE_SOLUTIONS"
_SECTION = re.compile(r"^# %% EXERCISE (\d+)\b.*$", re.MULTILINE)


class ExerciseNotDone(AssertionError):
    """The answer is still the blank placeholder (``...`` or ``None``)."""


class ExerciseWrong(AssertionError):
    """The answer differs from the package's reference."""


@dataclass(frozen=True)
class Check:
    task: str                       # what to do, in one line (the "fill in" message repeats it)
    reference: Callable[..., object]  # (**inputs) -> the package's answer
    hint: str                       # shown with a wrong answer
    # A function answer: besides the notebook's inputs, it is called on each of these (a name for the
    # message, a callable returning the inputs: built lazily, some are DataFrames), positionally in the
    # order of the notebook's inputs. Empty: the answer is a value.
    cases: tuple[tuple[str, Callable[[], dict]], ...] = ()


def solutions_on() -> bool:
    return env_flag(SOLUTIONS_ENV)


def solutions_dir() -> Path:
    """The folder of solution files: ``$FEDPFT_LITE_SOLUTIONS`` if it names a folder, else the
    repository's ``notebooks/solutions``, else ``solutions`` next to the running notebook."""
    value = os.environ.get(SOLUTIONS_ENV, "")
    candidates = [Path(value)] if value and Path(value).is_dir() else []
    candidates += [Path(__file__).resolve().parents[1] / "notebooks" / "solutions", Path.cwd() / "solutions"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"no solutions folder in {[str(c) for c in candidates]}; set {SOLUTIONS_ENV} "
                            "to the folder that holds <notebook>.py")


def load_solutions(notebook: str, folder: Path | None = None) -> dict[int, str]:
    """{exercise number: solution code} from ``<folder>/<notebook>.py``."""
    text = ((folder or solutions_dir()) / f"{notebook}.py").read_text()
    marks = list(_SECTION.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return {int(m.group(1)): text[m.end():end].strip() + "\n" for m, end in zip(marks, ends)}


def is_blank(answer) -> bool:
    """``...`` or ``None``, alone or anywhere inside a tuple, list or dict."""
    if answer is ... or answer is None:
        return True
    if isinstance(answer, Mapping):
        return any(is_blank(v) for v in answer.values())
    if isinstance(answer, (tuple, list)):
        return any(is_blank(v) for v in answer)
    return False


def difference(yours, reference, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> str | None:
    """Why ``yours`` is not ``reference`` (None when they agree): numbers within a tolerance,
    tensors of the same shape and values, dicts with the same keys, tuples element by element.
    Never reveals a reference number, only shapes, keys and lengths."""
    if isinstance(reference, str):
        return None if yours == reference else "not the package's choice"
    if isinstance(reference, torch.Tensor):
        if isinstance(yours, (list, tuple)) or type(yours).__module__ == "numpy":
            yours = torch.as_tensor(yours)   # a NumPy array or nested list is fine too
        if not isinstance(yours, torch.Tensor):
            return f"expected a tensor, got {type(yours).__name__}"
        if yours.shape != reference.shape:
            return f"shape {tuple(yours.shape)}, expected {tuple(reference.shape)}"
        ok = torch.allclose(yours.detach().double().cpu(), reference.detach().double().cpu(),
                            rtol=rel_tol, atol=abs_tol)
        return None if ok else "right shape, wrong values"
    if isinstance(reference, Mapping):
        if not isinstance(yours, Mapping):
            return f"expected a dict, got {type(yours).__name__}"
        if list(yours) != list(reference):
            return f"keys {list(yours)}, expected {list(reference)}"
        for k in reference:
            why = difference(yours[k], reference[k], rel_tol, abs_tol)
            if why:
                return f"[{k!r}]: {why}"
        return None
    if isinstance(reference, (tuple, list)):
        if not isinstance(yours, (tuple, list)) or len(yours) != len(reference):
            return f"expected {len(reference)} values"
        for i, (a, b) in enumerate(zip(yours, reference)):
            why = difference(a, b, rel_tol, abs_tol)
            if why:
                return f"value {i + 1}: {why}"
        return None
    try:
        yours, reference = float(yours), float(reference)
    except (TypeError, ValueError):
        return f"expected a number, got {type(yours).__name__}"
    # abs_tol guards against float noise around 0; for a small reference (a learning rate of 8e-5) it must
    # not swallow a wrong answer, so it never exceeds 0.1 % of the reference.
    ok = math.isclose(yours, reference, rel_tol=rel_tol,
                      abs_tol=abs_tol if reference == 0 else min(abs_tol, 1e-3 * abs(reference)))
    return None if ok else "not the package's value"


class Exercises:
    """The exercises of one notebook: ``ex = Exercises("00_primer", globals())``."""

    def __init__(self, notebook: str, namespace: dict):
        if notebook not in CHECKS:
            raise KeyError(f"no exercises registered for {notebook!r}; known: {sorted(CHECKS)}")
        self.notebook, self.namespace, self.checks = notebook, namespace, CHECKS[notebook]

    def fill(self, n: int) -> None:
        """Run the reference solution of exercise n in the notebook, only if FEDPFT_LITE_SOLUTIONS
        is set (CI, the tests); for everyone else this does nothing."""
        if not solutions_on():
            return
        code = load_solutions(self.notebook)[n]
        exec(compile(code, f"<solution {self.notebook} EXERCISE {n}>", "exec"), self.namespace)
        print(f"(EXERCISE {n}: reference solution filled in, because {SOLUTIONS_ENV} is set)")

    def check(self, n: int, answer, **inputs) -> None:
        c = self.checks[n]
        if c.cases:
            self._check_function(n, c, answer, inputs)
        else:
            if is_blank(answer):
                raise self._not_done(n, c)
            why = difference(answer, c.reference(**inputs))
            if why:
                raise ExerciseWrong(f"EXERCISE {n} is not right yet: {why}. Hint: {c.hint}")
        print(f"EXERCISE {n} correct.")

    @staticmethod
    def _not_done(n: int, c: Check) -> ExerciseNotDone:
        return ExerciseNotDone(f"fill in EXERCISE {n}: {c.task} (replace the ... in the exercise cell, run it, "
                               "then run this check again)")

    def _check_function(self, n: int, c: Check, answer, inputs: dict) -> None:
        """A function answer: the notebook's inputs first, then every case; the first disagreement fails."""
        if is_blank(answer):
            raise self._not_done(n, c)
        if not callable(answer):
            raise ExerciseWrong(f"EXERCISE {n} is not right yet: expected a function (the def in the exercise "
                                f"cell), got {type(answer).__name__}. Hint: {c.hint}")
        for name, make in (("this notebook's inputs", lambda: inputs), *c.cases):
            case = make()
            yours = answer(*case.values())
            if name == "this notebook's inputs" and is_blank(yours):
                raise self._not_done(n, c)
            why = difference(yours, c.reference(**case))
            if why:
                raise ExerciseWrong(f"EXERCISE {n} is not right yet: on {name}: {why}. Hint: {c.hint}")


# -- references, computed from the package -------------------------------------------------------
def _ffn_size(layer, arch) -> int:
    return sum(p.numel() for lin in ffn_linears(layer, arch) for p in lin.parameters())


def neuron_parameters(fm) -> int:
    """Parameters one FFN neuron owns: what ``slice_ffn`` removes with one neuron (layer 0)."""
    arch = arch_of(fm.backbone)
    layer = get_layers(fm.backbone)[0]
    smaller = copy.deepcopy(layer)
    slice_ffn(smaller, arch, torch.arange(ffn_linears(layer, arch)[0].out_features - 1))
    return _ffn_size(layer, arch) - _ffn_size(smaller, arch)


def sliced_ffn(fm, layer: int, keep) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_in, b_in, W_out of ``layer`` after ``slice_ffn`` keeps the neurons ``keep``."""
    arch = arch_of(fm.backbone)
    copied = copy.deepcopy(get_layers(fm.backbone)[layer])
    slice_ffn(copied, arch, torch.as_tensor(keep))
    w_in, w_out = ffn_linears(copied, arch)
    return w_in.weight, w_in.bias, w_out.weight


def lora_values(d_in: int, d_out: int, r: int) -> int:
    """Values LoRA adds beside one ``d_out x d_in`` linear at rank ``r``, counted on a real peft LoRA layer."""
    import peft
    model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(d_in, d_out)),
                                peft.LoraConfig(r=r, target_modules=["0"]))
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def lora_break_even_rank(d_in: int, d_out: int) -> int:
    """The smallest rank at which LoRA's A and B hold at least as many values as the frozen weight beside
    them. peft's count grows by the same amount with every unit of rank (``lora_values(..., 1)``)."""
    per_rank = lora_values(d_in, d_out, 1)
    return -(-d_in * d_out // per_rank)          # ceil without floats


# references of notebooks 01 and 02 (package imports inside, so this module stays light to import)
def _device(model):
    return next(model.parameters()).device


def saliency_and_top(fm, layer: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``layer``'s neuron saliency and the m neurons ``compress_ffn`` keeps there (sorted)."""
    from .compression import neuron_saliency, select_neurons
    w_in, w_out = ffn_linears(get_layers(fm.backbone)[layer], arch_of(fm.backbone))
    return neuron_saliency(w_in, w_out), select_neurons(w_in, w_out, m)


def sub_fm_parameters(fm, keep_ratio: float) -> int:
    """Parameters of FedPFT's sub-FM at ``keep_ratio`` (the package's defaults otherwise)."""
    from .compression import compress_ffn
    return sum(p.numel() for p in compress_ffn(fm, keep_ratio=keep_ratio).parameters())


def emulator_layer_map(fm, num_adapter_layers: int, emulator_layers: int) -> list[int]:
    """The FM layers a FedOT emulator keeps (``build_emulator``'s ``layer_map``)."""
    from .emulator import build_emulator
    return build_emulator(fm, num_adapter_layers, emulator_layers).structure["layer_map"]


def layer_distance(fm, proxy, batch: dict, layer: int) -> float:
    """``hidden_state_distance`` of one layer on one batch."""
    from .distance import hidden_state_distance
    return hidden_state_distance(fm, proxy, [batch], device=_device(fm))[layer]


def lora_gradient_cosine(fm, proxy, batch: dict, state: dict) -> float:
    """Cosine of the proxy's and the FM's LoRA gradients (``gradient_similarity``), same state and batch."""
    from .gradient_probe import gradient_similarity
    return gradient_similarity(fm, proxy, batch, state, device=_device(fm))["cosine"]


def alignment_rounds(rounds: int, t: int) -> list[int]:
    """The rounds in which neuron-level alignment runs (``methods.is_alignment_round``)."""
    from .methods import is_alignment_round
    return [r for r in range(1, rounds + 1) if is_alignment_round(r, t, rounds)]


def select_least_active(apoz: torch.Tensor, p: float) -> torch.Tensor:
    from .alignment import select_neurons_to_update
    return select_neurons_to_update(apoz, p)


def client_label_counts(labels, parts) -> torch.Tensor:
    """(clients, classes) examples of each class per client, as ``partition_summary`` counts them."""
    from .partition import label_counts
    return torch.as_tensor(label_counts(labels, parts))


def never_sampled_expectation(num_clients: int, per_round: int, rounds: int) -> float:
    """The expected number of clients ``federated.sample_clients`` never picks in ``rounds`` rounds: each round
    draws ``per_round`` distinct clients uniformly, from a generator seeded by (seed, round) alone, so a client
    misses a round with probability 1 - per_round / num_clients, independently of the other rounds.
    (``tests/test_exercises.py`` checks this against ``sample_clients`` over many seeds.)"""
    return num_clients * (1 - per_round / num_clients) ** rounds


def lora_head_state_bytes(layers: int, hidden: int, r: int, num_labels: int) -> int:
    """Bytes of the LoRA + head state that ``add_lora`` gives a BERT-shaped model of ``layers`` layers of width
    ``hidden`` (LoRA rank ``r``) with a ``num_labels``-class head: built with random weights and a tiny
    vocabulary and FFN (neither is in the state), and measured with ``state_bytes``."""
    import transformers

    from .lora import LoraSettings, add_lora, state_bytes, trainable_state
    from .models import FMClassifier
    cfg = transformers.BertConfig(vocab_size=8, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=1,
                                  intermediate_size=4, max_position_embeddings=8)
    model = FMClassifier(transformers.AutoModel.from_config(cfg), num_labels=num_labels, pooling="mean")
    return state_bytes(trainable_state(add_lora(model, LoraSettings(r=r))))


def binomial_half_width(p: float, sentences: int) -> float:
    """Half-width of the 95 % normal-approximation interval of an accuracy ``p`` on ``sentences`` test examples:
    the number right is binomial, so the accuracy's standard error is sqrt(p (1 - p) / sentences)."""
    from statistics import NormalDist
    return NormalDist().inv_cdf(0.975) * math.sqrt(p * (1 - p) / sentences)


def fedpft_mean_bytes_down(state_bytes: int, patch_bytes: int, clients: int, rounds: int, t: int) -> float:
    """The mean over a FedPFT run's rounds of ``bytes_down`` as ``federated.finish_round`` books it: the state to
    every sampled client each round, plus the FFN patch to each of them in the alignment rounds
    (``methods.is_alignment_round``: t, 2t, ... before the last). Checked against the committed lite Table 1 in
    ``tests/test_exercises.py``."""
    return clients * state_bytes + clients * patch_bytes * len(alignment_rounds(rounds, t)) / rounds


def seeds_for_half_width(sd: float, half_width: float) -> int:
    """The smallest number of seeds n >= 2 whose Student-t 95 % interval of a mean (``stats.mean_interval``:
    ``t_quantile(n) * sd / sqrt(n)``) is at most ``half_width`` wide on each side, for values with spread ``sd``."""
    from .stats import t_quantile
    if not half_width > 0:
        raise ValueError(f"half_width must be > 0, got {half_width}")
    n = 2
    while t_quantile(n) * sd / math.sqrt(n) > half_width:
        n += 1
    return n


def validation_disagrees_with_test() -> dict:
    """A two-seed summary on which choosing by validation, by test, or by the best single seed's
    validation accuracy give three different answers (cell "b" is validation's choice)."""
    import pandas as pd
    return {"summary": pd.DataFrame({"cell": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                                     "fm_val_accuracy": [0.80, 0.70, 0.76, 0.76],
                                     "fm_accuracy": [0.90, 0.90, 0.70, 0.72]})}


def validation_choice(summary) -> tuple[str, float]:
    """The cell with the best mean validation accuracy, and its mean test accuracy (%)."""
    means = summary.groupby("cell")[["fm_val_accuracy", "fm_accuracy"]].mean()
    best = means["fm_val_accuracy"].idxmax()
    return best, 100 * float(means.loc[best, "fm_accuracy"])


def flower_patch_rounds(rounds: int, t: int) -> list[int]:
    """The rounds whose Flower train messages carry an FFN patch (``proxy-patch``): every round after
    the first neuron-level alignment, because the ServerApp sends each sampled client all neurons
    aligned so far (``alignment.aligned_neurons``): SuperNodes keep no state between rounds."""
    aligned = alignment_rounds(rounds, t)
    return [r for r in range(1, rounds + 1) if aligned and r > aligned[0]]


def flower_patch_neurons(updated: dict, r: int) -> dict[int, int]:
    """Per compressed layer, the neurons in the FFN patch of round r's Flower train messages: the union of the
    neurons updated by every alignment before round r (``alignment.aligned_neurons`` over those alignments, as
    the ServerApp computes it from ``server.log``). ``updated``: {alignment round: {layer: [neuron indices]}}."""
    from .alignment import aligned_neurons
    log = {"neuron_level": [{"round": a, "updated": {str(i): list(idx) for i, idx in layers.items()}}
                            for a, layers in sorted(updated.items()) if a < r]}
    return {i: len(idx) for i, idx in aligned_neurons(log).items()}


def crash_clusters_of(reps: list, layers: list[int], k: int) -> list[list[int]]:
    """CRaSh's clusters of ``layers`` into ``k`` (``neighbourhood.cluster_layers``: greedy merges of the adjacent
    pair whose facing layers have the highest linear CKA)."""
    from .neighbourhood import cluster_layers
    return cluster_layers(reps, list(layers), k)[0]


def synthetic_representations(seed: int, n_layers: int = 8, examples: int = 24, dim: int = 6) -> list:
    """Layer representations for the cluster exercise's extra cases: each layer is the previous one plus noise of
    a random size, so some neighbours are much more alike than others."""
    g = torch.Generator().manual_seed(seed)
    reps = [torch.randn(examples, dim, generator=g)]
    for _ in range(n_layers - 1):
        reps.append(reps[-1] + 2 * float(torch.rand(1, generator=g)) * torch.randn(examples, dim, generator=g))
    return reps


def emulator_mib_per_round(proxy, clients: int) -> float:
    """MiB FedBiOT ships down after a re-alignment: the emulator's middle layers to every sampled
    client (``neighbourhood.emulator_bytes``, as ``FedBiOT.after_aggregation`` counts it)."""
    from .neighbourhood import emulator_bytes
    return clients * emulator_bytes(proxy) / 2**20


CHECKS: dict[str, dict[int, Check]] = {
    "00_primer": {
        1: Check("count the parameters that belong to one FFN neuron of MiniLM",
                 neuron_parameters,
                 "a neuron is one row of W_in, one entry of b_in and one column of W_out; b_out is shared"),
        2: Check("slice W_in, b_in and W_out so that only the neurons in KEEP remain",
                 sliced_ffn,
                 "nn.Linear stores (out_features, in_features): the neurons are the rows of W_in and "
                 "the columns of W_out"),
        3: Check("write break_even_rank(d_in, d_out): the smallest whole rank at which LoRA's A and B hold at "
                 "least as many values as the d_out x d_in weight they sit beside",
                 lora_break_even_rank,
                 "count A's and B's values for rank r (their shapes are in section 3), set the count against W's, "
                 "and take the smallest whole r that reaches it: a square layer hides mistakes that a "
                 "384 x 1536 one shows (rounding down, or assuming d_in == d_out)",
                 cases=tuple((f"d_in={a}, d_out={b}", lambda a=a, b=b: {"d_in": a, "d_out": b})
                             for a, b in ((384, 1536), (768, 3072), (3, 5), (10, 10), (1, 1000)))),
        4: Check("average the three client states with weights proportional to their example counts n_k",
                 lambda client_states, n_k: fedavg(client_states, n_k),
                 "client k's weight is n_k / sum(n_k); average every key of the states"),
    },
    "01_compression": {
        1: Check("compute the saliency s_j of every FFN neuron of layer LAYER and the M most salient neurons "
                 "(indices, sorted ascending)",
                 saliency_and_top,
                 "s_j = sqrt(sum of squares of row j of W_in + sum of squares of column j of W_out); then "
                 "torch.topk(s, M).indices, sorted with torch.sort"),
        2: Check("count the parameters of the sub-FM at keep_ratio R without compress_ffn",
                 sub_fm_parameters,
                 "start from the FM's parameter count; each compressed layer (all but the first and last) "
                 "loses intermediate_size - round(R * intermediate_size) neurons, each owning "
                 "2 * hidden_size + 1 parameters"),
        3: Check("list the FM layers a FedOT emulator with A adapter layers at each end and K emulator layers keeps",
                 emulator_layer_map,
                 "bottom = range(A), middle = range(A, n - A), top = range(n - A, n); keep middle[round(i * "
                 "(M - 1) / (K - 1))] for i in range(K), with M = len(middle)"),
    },
    "02_alignment": {
        1: Check("compute the normalised MSE d of layer LAYER between the FM and the proxy on one batch",
                 layer_distance,
                 "output_hidden_states=True gives the embeddings first, so layer i is hidden_states[i + 1]; "
                 "sum (T - S)^2 and T^2 over real tokens only (attention_mask), over all hidden units, then divide"),
        2: Check("compute the cosine between the proxy's and the FM's LoRA gradients on one batch and state",
                 lora_gradient_cosine,
                 "load the same state into both models (load_trainable_state; the FM with fm_names=False), "
                 "model.eval(), loss.backward(), then concatenate the .grad of every parameter named lora_ "
                 "in the same order for both models (not the head)"),
        3: Check("select the p share of neurons with the highest APoZ (least active), indices sorted ascending",
                 select_least_active,
                 "k = round(p * number of neurons); the k largest APoZ values (ties: the lower index first), "
                 "then sort the indices"),
        4: Check("list the rounds in which neuron-level alignment runs with ROUNDS rounds and t = T",
                 alignment_rounds,
                 "rounds t, 2t, 3t, ... but only those strictly before the last round"),
    },
    "03_federated_rounds": {
        1: Check("write expected_never_sampled(num_clients, per_round, rounds): the expected number of clients "
                 "that are never sampled in a run",
                 never_sampled_expectation,
                 "start from one client: the chance that one round's draw misses it, then that every round misses "
                 "it (each round draws anew); then count over all clients. Not a difference of counts, and not a "
                 "probability: an expected number of clients",
                 cases=tuple((f"num_clients={n}, per_round={m}, rounds={r}",
                              lambda n=n, m=m, r=r: {"num_clients": n, "per_round": m, "rounds": r})
                             for n, m, r in ((100, 10, 100), (6, 3, 2), (10, 1, 10), (4, 4, 3)))),
        2: Check("count, for every client of parts_1, its sentences of each topic (clients x classes)",
                 client_label_counts,
                 "parts_1[k] holds the indices of client k's examples; count topic_labels[parts_1[k]] "
                 "per class, with zeros for absent classes (np.bincount's minlength)"),
        3: Check("write state_bytes_for(layers, hidden, r, num_labels): the bytes of the LoRA + head state of a "
                 "BERT-shaped model",
                 lora_head_state_bytes,
                 "per layer, LoRA sits on four linears of shape hidden x hidden (query, key, value, attention "
                 "output), each with an A and a B (their shapes: notebook 00, section 3); the head is one linear "
                 "with a bias; every value is a 4-byte float",
                 cases=tuple((f"layers={n}, hidden={h}, r={r}, num_labels={c}",
                              lambda n=n, h=h, r=r, c=c: {"layers": n, "hidden": h, "r": r, "num_labels": c})
                             for n, h, r, c in ((12, 768, 8, 2), (2, 64, 4, 3), (3, 32, 16, 10)))),
    },
    "04_three_methods": {
        1: Check("write accuracy_half_width(p, n): the half-width of the 95 % interval of an accuracy p measured on "
                 "n test sentences (test-set noise only)",
                 binomial_half_width,
                 "each test sentence is right or wrong, so the count of right answers is binomial: find the standard "
                 "deviation of the *share* right (it shrinks with the square root of n), then widen it to 95 % with "
                 "the normal distribution's 97.5 % quantile (1.96 to two decimals; the check wants it exact)",
                 cases=tuple((f"p={p}, n={n}", lambda p=p, n=n: {"p": p, "sentences": n})
                             for p, n in ((0.5, 150), (0.782, 2000), (0.9, 100), (0.99, 10000)))),
        2: Check("write mean_bytes_down(state_bytes, patch_bytes, clients, rounds, t): FedPFT's mean bytes down "
                 "per round, as the histories book it",
                 fedpft_mean_bytes_down,
                 "every round sends the state to each sampled client; the patch goes to each of them only in the "
                 "alignment rounds, which are t, 2t, ... strictly before the last round (notebook 02, section 7); "
                 "then average over all the run's rounds",
                 cases=tuple((f"rounds={r}, t={t}", lambda r=r, t=t: {"state_bytes": 1000, "patch_bytes": 4000,
                                                                      "clients": 3, "rounds": r, "t": t})
                             for r, t in ((3, 1), (7, 3), (10, 5), (4, 4)))),
    },
    "05_reproduction": {
        1: Check("write seeds_needed(sd, half_width): the fewest seeds (at least 2) whose 95 % interval of the mean "
                 "is at most half_width wide on each side",
                 seeds_for_half_width,
                 "the half-width of a mean over n seeds shrinks with the square root of n, and its t quantile "
                 "(n - 1 degrees of freedom) shrinks too as n grows: try n = 2, 3, ... until it fits. With the "
                 "normal 1.96 instead of t the answer comes out too small",
                 cases=tuple((f"sd={sd}, half_width={h}", lambda sd=sd, h=h: {"sd": sd, "half_width": h})
                             for sd, h in ((1.0, 1.0), (3.0, 1.0), (0.5, 2.0), (2.0, 0.5)))),
        2: Check("write choose(summary): the setting with the best mean validation accuracy and its mean "
                 "test accuracy (%)",
                 validation_choice,
                 "average fm_val_accuracy over seeds per cell, take the best cell, then average that "
                 "cell's fm_accuracy (x 100); never look at fm_accuracy to choose",
                 cases=(("a summary where validation and test choose differently", validation_disagrees_with_test),)),
    },
    "06_flower": {
        1: Check("write patch_rounds(rounds, t): the rounds whose train messages carry an FFN patch "
                 "(proxy-patch) in a Flower run",
                 flower_patch_rounds,
                 "neuron-level alignment runs in rounds t, 2t, ... before the last; from the round after the "
                 "first one on, every round's messages carry all neurons aligned so far (nodes keep no "
                 "state), not only the round right after an alignment",
                 cases=tuple((f"rounds={r}, t={t}", lambda r=r, t=t: {"rounds": r, "t": t})
                             for r, t in ((10, 3), (4, 4), (5, 1), (3, 2)))),
        2: Check("write patch_neurons(updated, r): per compressed layer, the number of distinct neurons in the FFN "
                 "patch of round r's train messages",
                 flower_patch_neurons,
                 "a node keeps nothing between rounds, so round r's message carries every neuron that any alignment "
                 "*before* round r updated (an alignment runs after its round's FedAvg, too late for that round's "
                 "messages); a neuron that two alignments updated travels once",
                 cases=tuple((f"updated={u}, r={r}", lambda u=u, r=r: {"updated": u, "r": r}) for u, r in (
                     ({2: {1: [0, 1, 2, 3]}, 4: {1: [2, 3, 4, 5]}}, 5),
                     ({2: {1: [0, 1, 2, 3]}, 4: {1: [2, 3, 4, 5]}}, 4),
                     ({2: {1: [0, 1]}, 4: {1: [2, 3]}}, 2),
                     ({1: {1: [0, 5], 2: [7]}, 2: {1: [5, 6], 2: [7, 8]}, 3: {1: [9], 2: [0]}}, 4)))),
    },
    "07_neighbourhood": {
        1: Check("write crash_clusters(reps, layers, k): CRaSh's k clusters of the consecutive layers, left to right",
                 crash_clusters_of,
                 "repeat until k clusters remain: for each pair of neighbouring clusters compute the CKA of the last "
                 "layer of the left one and the first layer of the right one, and merge the pair with the *highest* "
                 "CKA (the most alike), never two clusters that are not neighbours",
                 cases=tuple((f"synthetic layers {lay}, k={k}", lambda sd=sd, lay=lay, k=k: {
                     "reps": synthetic_representations(sd), "layers": lay, "k": k})
                     for sd, lay, k in ((0, [1, 2, 3, 4, 5, 6], 3), (1, [1, 2, 3, 4, 5, 6], 2), (2, [1, 2, 3, 4], 1),
                                        (3, [1, 2, 3, 4, 5, 6], 5), (4, [2, 3, 4, 5, 6], 2)))),
        2: Check("compute the MiB FedBiOT ships down in a re-alignment round beyond LoRA + head",
                 emulator_mib_per_round,
                 "sum numel() * element_size() over every parameter of the layers at emulator_positions(emulator) "
                 "(not the adapters, not the embeddings), times the sampled clients, divided by 2**20"),
    },
}
