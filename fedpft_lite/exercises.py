"""Checked exercises for the notebooks: a blank or wrong answer fails, the reference solution passes.

An exercise is two cells. The student's cell starts with ``# EXERCISE n: <what to do>``, assigns an
answer (the stored notebook holds a blank ``...``) and ends with ``ex.fill(n)``. The check cell calls
``ex.check(n, answer, **inputs)``, which compares the answer with a reference the package computes
from ``inputs`` (the notebook's model, tensors, ...) and raises, with a helpful message, when the
answer is blank (:class:`ExerciseNotDone`) or differs (:class:`ExerciseWrong`).

Where the notebook's own inputs cannot tell a right rule from a typical wrong one (floor and round agree
on 3 x 0.67; choosing on validation and on test pick the same committed cell), the answer is a
*function* and its :class:`Check` lists ``cases``: more inputs on which the function must agree with the
reference too (a blank is a function that still returns ``...``).

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


def lora_scaling(model) -> float:
    """The factor peft applies to B·A in the model's LoRA layers (one value for all of them)."""
    values = {s for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)
              for s in m.scaling.values()}
    if len(values) != 1:
        raise ValueError(f"expected one LoRA scaling in the model, found {sorted(values)}")
    return values.pop()


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


def round_bytes_down(state, clients: int) -> int:
    """Bytes the server sends in a round without alignment: the global state to each client."""
    from .lora import state_bytes
    return clients * state_bytes(state)


def client_label_counts(labels, parts) -> torch.Tensor:
    """(clients, classes) examples of each class per client, as ``partition_summary`` counts them."""
    from .partition import label_counts
    return torch.as_tensor(label_counts(labels, parts))


def paper_round_lr(r: int) -> float:
    """``round_lr`` of round r under the paper's protocol (lr 8e-4, linear decay over 10 rounds)."""
    from .config import FedConfig
    from .federated import round_lr
    return round_lr(FedConfig(lr=8e-4, rounds=10), r)


def same_seed_gap(summary, a: str = "FedPFT", b: str = "FedOT") -> tuple[float, float]:
    """(mean, 95 % half-width) of the same-seed difference a - b of fm_accuracy, in points."""
    from .results import paired
    iv = paired(summary, a, b)
    return iv.mean, iv.half


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


def sampled_per_round(num_clients: int, fraction: float) -> int:
    """Clients the server samples, and so the ClientApps it messages, in every round
    (``FedConfig.clients_per_round``, the number ``federated.sample_clients`` draws)."""
    from .config import FedConfig
    return FedConfig(num_clients=num_clients, fraction=fraction).clients_per_round


def flower_patch_rounds(rounds: int, t: int) -> list[int]:
    """The rounds whose Flower train messages carry an FFN patch (``proxy-patch``): every round after
    the first neuron-level alignment, because the ServerApp sends each sampled client all neurons
    aligned so far (``alignment.aligned_neurons``): SuperNodes keep no state between rounds."""
    aligned = alignment_rounds(rounds, t)
    return [r for r in range(1, rounds + 1) if aligned and r > aligned[0]]


def crash_shared_from(clusters: list[list[int]], n_layers: int) -> list[int]:
    """For each FM position, the FM layer CRaSh's proxy runs there (``neighbourhood.shared_sources``)."""
    from .neighbourhood import shared_sources
    return shared_sources(clusters, n_layers)


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
        3: Check("compute the LoRA scaling alpha / r of the package's default LoraSettings()",
                 lora_scaling,
                 "LoraSettings() has the fields r and alpha"),
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
        1: Check("compute the learning rate of round 10 under the paper's protocol",
                 paper_round_lr,
                 "round_lr decays linearly as lr * (1 - (r - 1) / R), so the last round keeps lr / R"),
        2: Check("count, for every client of parts_1, its sentences of each topic (clients x classes)",
                 client_label_counts,
                 "parts_1[k] holds the indices of client k's examples; count topic_labels[parts_1[k]] "
                 "per class, with zeros for absent classes (np.bincount's minlength)"),
        3: Check("count the bytes the server sends down in a FedPFT round without alignment",
                 round_bytes_down,
                 "each sampled client receives the whole global state; a tensor takes numel() * "
                 "element_size() bytes"),
    },
    "04_reproduction": {
        1: Check("compute the same-seed difference FedPFT - FedOT (points): its mean and the half-width "
                 "of its 95 % interval",
                 same_seed_gap,
                 "subtract within each seed first (pivot seeds x cells, fm_accuracy x 100), then "
                 "fedpft_lite.stats.mean_interval or paired_difference on the differences"),
        2: Check("write choose(summary): the setting with the best mean validation accuracy and its mean "
                 "test accuracy (%)",
                 validation_choice,
                 "average fm_val_accuracy over seeds per cell, take the best cell, then average that "
                 "cell's fm_accuracy (x 100); never look at fm_accuracy to choose",
                 cases=(("a summary where validation and test choose differently", validation_disagrees_with_test),)),
    },
    "06_neighbourhood": {
        1: Check("list, for each of the FM's n_layers positions, the FM layer whose module CRaSh's proxy runs there",
                 crash_shared_from,
                 "a cluster keeps its middle layer, cluster[len(cluster) // 2] (for [1, 2, 3] that is 2, for "
                 "[3, 4] it is 4), and all its positions run it; adapter positions, in no cluster, run themselves"),
        2: Check("compute the MiB FedBiOT ships down in a re-alignment round beyond LoRA + head",
                 emulator_mib_per_round,
                 "sum numel() * element_size() over every parameter of the layers at emulator_positions(emulator) "
                 "(not the adapters, not the embeddings), times the sampled clients, divided by 2**20"),
    },
    "05_flower": {
        1: Check("write clients_per_round(num_clients, fraction): the clients (ClientApps on SuperNodes) the "
                 "ServerApp sends a train message to in each round",
                 sampled_per_round,
                 "fraction x num_clients, rounded to the nearest integer (Python's round), and at least 1",
                 cases=tuple((f"num_clients={n}, fraction={f}", lambda n=n, f=f: {"num_clients": n, "fraction": f})
                             for n, f in ((3, 0.3), (20, 0.22), (100, 0.1), (5, 0.05)))),
        2: Check("write patch_rounds(rounds, t): the rounds whose train messages carry an FFN patch "
                 "(proxy-patch) in a Flower run",
                 flower_patch_rounds,
                 "neuron-level alignment runs in rounds t, 2t, ... before the last; from the round after the "
                 "first one on, every round's messages carry all neurons aligned so far (nodes keep no "
                 "state), not only the round right after an alignment",
                 cases=tuple((f"rounds={r}, t={t}", lambda r=r, t=t: {"rounds": r, "t": t})
                             for r, t in ((10, 3), (4, 4), (5, 1), (3, 2)))),
    },
}
