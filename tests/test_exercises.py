"""Notebook exercises (fedpft_lite.exercises): a blank or wrong answer fails its check, the reference
solution passes, and every notebook's stored exercise cells are blank and match its solutions file.

The exercise and check cells are taken from the stored notebooks and run here, in a namespace that
holds what each notebook defined before them (a small stand-in built by ``NOTEBOOK_STATES``), so these
tests check the cells a student sees."""
import ast
import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedpft_lite import label_names, partition
from fedpft_lite.arch import arch_of, ffn_linears, get_layers
from fedpft_lite.compression import compress_ffn
from fedpft_lite.exercises import (CHECKS, SOLUTIONS_ENV, Exercises, ExerciseNotDone, ExerciseWrong, difference,
                                   is_blank, load_solutions)
from fedpft_lite.config import FedConfig
from fedpft_lite.data import encode, load_task, make_loader
from fedpft_lite.lora import add_lora, trainable_state
from fedpft_lite.models import load_foundation_model
from fedpft_lite.results import COMMITTED_ROOT, committed_summary

NOTEBOOK = "00_primer"
NOTEBOOKS = ["00_primer", "01_compression", "02_alignment", "03_federated_rounds", "04_reproduction", "05_flower",
             "06_neighbourhood"]
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
EXERCISE = re.compile(r"^# EXERCISE (\d+):")
ALL_EXERCISES = [(nb, n) for nb in NOTEBOOKS for n in sorted(CHECKS[nb])]


def notebook_cells(notebook: str = NOTEBOOK):
    return json.loads((NOTEBOOK_DIR / f"{notebook}.ipynb").read_text())["cells"]


def exercise_cells(notebook: str = NOTEBOOK) -> dict[int, tuple[str, str]]:
    """{n: (exercise cell source, the check cell after it)} from the stored notebook."""
    cells = notebook_cells(notebook)
    out = {}
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        m = EXERCISE.match(source)
        if cell["cell_type"] == "code" and m:
            out[int(m.group(1))] = (source, "".join(cells[i + 1]["source"]))
    return out


@pytest.fixture(scope="module")
def minilm():
    fm, tokenizer = load_foundation_model("minilm", num_labels=5)
    return fm.eval(), tokenizer


def primer_state(fm, tokenizer):
    """What notebook 00 has defined when its exercises run (section 1 to 3), on the real MiniLM."""
    layer = 2
    w_in, w_out = ffn_linears(get_layers(fm.backbone)[layer], arch_of(fm.backbone))
    return {"torch": torch, "fm": fm, "cfg": fm.config, "sub": compress_ffn(fm, keep_ratio=0.25),
            "LAYER": layer, "KEEP": [3, 14, 15, 92, 653, 1000], "w_in": w_in, "w_out": w_out,
            "fm_lora": add_lora(copy.deepcopy(fm)).eval()}


def compression_state(fm, tokenizer):
    """What notebook 01 has defined when its exercises run."""
    return {"torch": torch, "fm": fm, "cfg": fm.config, "arch": arch_of(fm.backbone), "ffn_linears": ffn_linears,
            "get_layers": get_layers, "fm_total": sum(p.numel() for p in fm.parameters())}


def alignment_state(fm, tokenizer):
    """What notebook 02 has defined when its exercises run: a sub-FM (unaligned here: the checks do not
    care), a test loader, LoRA models with a probe state of random B, and an APoZ with ties."""
    task = load_task("bbc-news", max_train=16, max_test=8)
    loader = make_loader(encode(task["test"], tokenizer, max_length=32), tokenizer, batch_size=8)
    sub = compress_ffn(fm, keep_ratio=0.25)
    fm_lora = add_lora(copy.deepcopy(fm)).eval()
    g = torch.Generator().manual_seed(0)
    state = {n: (torch.randn(v.shape, generator=g) * 0.05 if "lora_B" in n else v)
             for n, v in trainable_state(fm_lora).items()}
    apoz = (torch.rand(384, generator=g) * 10).round() / 10      # many ties: the tie rule matters
    return {"torch": torch, "fm": fm, "sub": sub, "device": torch.device("cpu"), "test_loader": loader,
            "probe_loader": make_loader(encode(task["train"], tokenizer, max_length=32), tokenizer, batch_size=8),
            "fm_lora": fm_lora, "proxies": {"aligned sub-FM": add_lora(copy.deepcopy(sub)).eval()},
            "state": state, "apoz": {2: apoz}, "P": 0.5}


def rounds_state(fm, tokenizer):
    """What notebook 03 has defined at its exercises: the states of section 4 (FedPFT's), the lite
    Table 1's config and the Dirichlet split of section 3."""
    fm, _ = load_foundation_model("minilm", num_labels=2)
    topics_task = load_task("bbc-news")
    topic_labels = np.array(topics_task["train"]["label"])
    return {"np": np, "states": {"fedpft": trainable_state(add_lora(compress_ffn(fm, keep_ratio=0.25)))},
            "base": FedConfig(num_clients=20, fraction=0.2), "topic_labels": topic_labels,
            "topics": label_names(topics_task),
            "parts_1": partition(topic_labels, 10, "dirichlet", alpha=1.0, seed=0)}


def reproduction_state(fm, tokenizer):
    """Notebook 04's exercise inputs, chosen as its section 7 chooses them."""
    summaries = {n: committed_summary(n) for n in ("lite/table1", "lite/neuron-steps")}
    ex_summary = summaries["lite/table1"]
    if ex_summary is None or not {"FedPFT", "FedOT"} <= set(ex_summary.cell):
        ex_summary = pd.read_csv(COMMITTED_ROOT.parent / "archive" / "engine1-bbc-topics" / "lite" / "table1"
                                 / "summary.csv")
    choice = next((s for s in (summaries["lite/neuron-steps"], summaries["lite/table1"])
                   if s is not None and "fm_val_accuracy" in s and s.fm_val_accuracy.notna().any()), None)
    if choice is None:   # nothing committed yet with a validation column: two cells, two seeds
        choice = pd.DataFrame({"cell": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                               "fm_val_accuracy": [0.7, 0.72, 0.75, 0.71], "fm_accuracy": [0.7, 0.7, 0.8, 0.7]})
    return {"pd": pd, "ex_summary": ex_summary, "choice_summary": choice}


def flower_state(fm, tokenizer):
    """Notebook 05's exercise inputs: its quick run's FedConfig (section 1), built without Flower, and
    the in-process history the check cells print from (one row per round with its sampled clients).
    No Flower run: the checks need none."""
    run = dict(max_train=120, max_test=64, max_public=64, num_clients=3, fraction=0.67, rounds=3,
               max_length=32, align_steps=3)
    cfg = FedConfig(model="minilm", task="bbc-news", method="fedpft", partition="dirichlet", alpha=1.0,
                    batch_size=16, lr=3e-3, eval_batch_size=64, device="cpu",
                    align_before=True, align_during=True, align_every=2, **run)
    return {"cfg": cfg, "RUN": run, "RUN_FLOWER": False, "HAVE_FLWR": False,
            "local": [{"round": r, "clients": [0, 2]} for r in range(1, cfg.rounds + 1)]}


def neighbourhood_state(fm, tokenizer):
    """Notebook 06's exercise inputs: CRaSh's clusters from its proxy built on MiniLM with the config of
    lite/neighbourhood on public bbc-word-order sentences (as section 2), and FedBiOT's emulator with its LoRA."""
    from fedpft_lite.experiments import get_experiment
    from fedpft_lite.federated import add_proxy_lora
    from fedpft_lite.methods import get_method
    from fedpft_lite.neighbourhood import emulator_positions

    fm2, tok = load_foundation_model("minilm", num_labels=2, seed=0)
    exp = get_experiment("lite/neighbourhood")
    public = encode(load_task("bbc-word-order", max_train=16, max_test=16)["public"].shuffle(seed=0).select(range(64)),
                    tok, 64)
    crash_cfg, bi_cfg = exp.config("CRaSh", 0, device="cpu"), exp.config("FedBiOT", 0, device="cpu")
    crash = get_method("crash").build_proxy(fm2, crash_cfg, public=lambda: make_loader(public, tok, 32))
    emulator = add_proxy_lora(get_method("fedbiot").build_proxy(fm2, bi_cfg), bi_cfg)
    return {"clusters": crash.structure["clusters"], "n_layers": fm2.config.num_hidden_layers,
            "emulator": emulator, "clients": bi_cfg.clients_per_round, "get_layers": get_layers,
            "emulator_positions": emulator_positions, "cfg_bi": bi_cfg}


NOTEBOOK_STATES = {"00_primer": primer_state, "01_compression": compression_state, "02_alignment": alignment_state,
                   "03_federated_rounds": rounds_state, "04_reproduction": reproduction_state,
                   "05_flower": flower_state, "06_neighbourhood": neighbourhood_state}


@pytest.fixture(scope="module")
def states(minilm):
    """{notebook: its namespace}, each built on first use."""
    cache = {}

    def get(notebook):
        if notebook not in cache:
            cache[notebook] = NOTEBOOK_STATES[notebook](*minilm)
        return cache[notebook]
    return get


@pytest.fixture(scope="module")
def notebook_state(states):
    return states(NOTEBOOK)


def run_exercise(n, state, monkeypatch, solutions: bool, notebook: str = NOTEBOOK):
    """Run exercise n's stored cell, then its check cell, in a copy of the notebook's namespace."""
    if solutions:
        monkeypatch.setenv(SOLUTIONS_ENV, "1")
    else:
        monkeypatch.delenv(SOLUTIONS_ENV, raising=False)
    namespace = dict(state)
    namespace["ex"] = Exercises(notebook, namespace)
    exercise, check = exercise_cells(notebook)[n]
    exec(exercise, namespace)
    # only the check call itself: lines after it in the cell may print with names of later sections
    first = ast.parse(check).body[0]
    exec(ast.get_source_segment(check, first), namespace)
    return namespace


@pytest.mark.parametrize("notebook, n", ALL_EXERCISES)
def test_a_blank_answer_fails_its_check(notebook, n, states, monkeypatch):
    with pytest.raises(ExerciseNotDone, match=rf"fill in EXERCISE {n}: "):
        run_exercise(n, states(notebook), monkeypatch, solutions=False, notebook=notebook)


@pytest.mark.parametrize("notebook, n", ALL_EXERCISES)
def test_the_solution_passes_its_check(notebook, n, states, monkeypatch, capsys):
    run_exercise(n, states(notebook), monkeypatch, solutions=True, notebook=notebook)
    assert f"EXERCISE {n} correct." in capsys.readouterr().out


def test_wrong_answers_fail(notebook_state, monkeypatch):
    state = notebook_state
    ex = Exercises(NOTEBOOK, {})
    w_in, w_out, keep = state["w_in"], state["w_out"], torch.tensor(state["KEEP"])
    fm = state["fm"]
    client_states = [{"a": torch.tensor([1.0, 2.0])}, {"a": torch.tensor([3.0, 0.0])}]
    wrong = [
        (1, 2 * 384, {"fm": fm}),                                           # forgot b_in
        (2, (w_in.weight[:, :6], w_in.bias[keep], w_out.weight[:, keep]),   # columns instead of rows
         {"fm": fm, "layer": state["LAYER"], "keep": state["KEEP"]}),
        (2, (w_in.weight[keep + 1], w_in.bias[keep], w_out.weight[:, keep]),  # the wrong neurons
         {"fm": fm, "layer": state["LAYER"], "keep": state["KEEP"]}),
        (3, 8 / 48, {"model": state["fm_lora"]}),                           # r / alpha
        (4, {"a": torch.tensor([2.0, 1.0])},                                 # the uniform mean
         {"client_states": client_states, "n_k": [1, 3]}),
    ]
    for n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            ex.check(n, answer, **inputs)


def test_wrong_answers_fail_in_notebooks_01_and_02(states):
    s1, s2 = states("01_compression"), states("02_alignment")
    fm, cfg = s1["fm"], s1["cfg"]
    assert cfg.num_hidden_layers == 6     # the wrong answers below are written for MiniLM
    w_in, w_out = ffn_linears(get_layers(fm.backbone)[3], arch_of(fm.backbone))
    sal = torch.sqrt(w_in.weight.detach().pow(2).sum(1) + w_out.weight.detach().pow(2).sum(0))
    by_weight_in = w_in.weight.detach().pow(2).sum(1).sqrt()
    apoz = s2["apoz"][2]
    wrong = [
        ("01_compression", 1, (sal, torch.topk(sal, 384).indices), {"fm": fm, "layer": 3, "m": 384}),   # unsorted
        ("01_compression", 1, (by_weight_in, torch.sort(torch.topk(by_weight_in, 384).indices).values),
         {"fm": fm, "layer": 3, "m": 384}),                                                            # W_in only
        ("01_compression", 2, s1["fm_total"] - 4 * 768 * 2 * 384, {"fm": fm, "keep_ratio": 0.5}),      # forgot b_in
        ("01_compression", 3, [0, 1, 2, 4, 5], {"fm": fm, "num_adapter_layers": 1, "emulator_layers": 3}),  # floor
        ("02_alignment", 3, torch.sort(torch.sort(apoz, stable=True).indices[:192]).values,
         {"apoz": apoz, "p": 0.5}),                                                                    # most active
        ("02_alignment", 4, [10, 20, 30], {"rounds": 30, "t": 10}),                                    # the last round
    ]
    for notebook, n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            Exercises(notebook, {}).check(n, answer, **inputs)


def test_fill_runs_nothing_without_the_variable(monkeypatch):
    monkeypatch.delenv(SOLUTIONS_ENV, raising=False)
    namespace = {}
    Exercises(NOTEBOOK, namespace).fill(3)
    assert namespace == {}
    monkeypatch.setenv(SOLUTIONS_ENV, "0")
    Exercises(NOTEBOOK, namespace).fill(3)
    assert namespace == {}
    monkeypatch.setenv(SOLUTIONS_ENV, "1")
    Exercises(NOTEBOOK, namespace).fill(3)
    assert namespace["scaling"] == 6.0


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_stored_notebook_has_blank_exercises_matching_checks_and_solutions(notebook):
    cells = exercise_cells(notebook)
    assert len(cells) >= 2
    assert sorted(cells) == sorted(CHECKS[notebook]) == sorted(load_solutions(notebook))
    for n, (exercise, check) in cells.items():
        assert re.search(r"(= |return )\.\.\.\s*(#.*)?$", exercise, re.MULTILINE), \
            f"EXERCISE {n}: no blank `= ...` (or `return ...`) placeholder"
        assert f"ex.fill({n})" in exercise
        assert check.lstrip().startswith(f"ex.check({n}, "), f"the cell after EXERCISE {n} is not its check"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in notebook_cells(notebook)
               if c["cell_type"] == "code"), "strip the notebook's outputs before committing"


def test_blank_detection_and_differences():
    assert is_blank(...) and is_blank(None) and is_blank((torch.zeros(1), ...)) and is_blank({"a": None})
    assert not is_blank(0) and not is_blank((torch.zeros(1),))
    assert difference(6, 6.0) is None
    assert difference(torch.zeros(2, 3), torch.zeros(3, 2)) == "shape (2, 3), expected (3, 2)"
    assert difference({"b": torch.zeros(1)}, {"a": torch.zeros(1)}) == "keys ['b'], expected ['a']"
    assert difference("six", 6.0) == "expected a number, got str"
    assert difference((1, 2), (1, 3)) == "value 2: not the package's value"
    assert difference(7.9e-5, 8e-5) == "not the package's value"      # abs_tol does not swallow small numbers
    assert difference(8e-5 * (1 + 1e-9), 8e-5) is None and difference(1e-9, 0.0) is None


def test_wrong_answers_fail_in_03_and_04(states):
    rounds, repro = states("03_federated_rounds"), states("04_reproduction")
    state = rounds["states"]["fedpft"]
    one_client = sum(t.numel() * t.element_size() for t in state.values())
    counts = np.stack([np.bincount(rounds["topic_labels"][p], minlength=5) for p in rounds["parts_1"]])
    s = repro["ex_summary"]
    acc = 100 * s.pivot_table(index="seed", columns="cell", values="fm_accuracy")
    unpaired = (acc["FedPFT"].mean() - acc["FedOT"].mean(), 1.96 * (acc["FedPFT"] - acc["FedOT"]).std())
    wrong = [
        ("03_federated_rounds", 3, one_client, {"state": state, "clients": 4}),          # one client only
        ("03_federated_rounds", 3, 4 * sum(t.numel() for t in state.values()),           # values, not bytes
         {"state": state, "clients": 4}),
        ("03_federated_rounds", 2, counts.T, {"labels": rounds["topic_labels"], "parts": rounds["parts_1"]}),
        ("03_federated_rounds", 2, counts[:, ::-1].copy(), {"labels": rounds["topic_labels"], "parts": rounds["parts_1"]}),
        ("03_federated_rounds", 1, 0.0, {"r": 10}),                                      # lr * (1 - r / R)
        ("03_federated_rounds", 1, 8e-4 * (1 - 8 / 10), {"r": 10}),                      # round 9's lr
        ("04_reproduction", 1, unpaired, {"summary": s}),                                # normal, not t quantile
        ("04_reproduction", 2, lambda summary: ("no such cell", 70.0), {"summary": repro["choice_summary"]}),
    ]
    for notebook, n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            Exercises(notebook, {}).check(n, answer, **inputs)


def test_strings_and_arrays_compare():
    assert difference("steps=20", "steps=20") is None
    assert difference("steps=0", "steps=20") == "not the package's choice"
    assert difference(np.array([[1, 2]]), torch.tensor([[1, 2]])) is None
    assert difference([[1, 2]], torch.tensor([[1, 3]])) == "right shape, wrong values"


def test_wrong_answers_fail_in_05(states):
    """The answers are functions: a wrong rule that happens to agree on the quick run's cfg (floor and
    round both give 2 of 3 x 0.67; 'only the round after each alignment' is [3] when rounds=3, t=2) still
    fails on the check's other cases."""
    cfg = states("05_flower")["cfg"]
    assert (cfg.rounds, cfg.align_every, cfg.clients_per_round) == (3, 2, 2)   # the quick run's
    mine = {"num_clients": cfg.num_clients, "fraction": cfg.fraction}, {"rounds": cfg.rounds, "t": cfg.align_every}

    def aligned(rounds, t):
        return [r for r in range(t, rounds, t)]

    wrong = [
        (1, lambda n, f: n, "every client"),
        (1, lambda n, f: int(n * f), "floor (int), not round and at least 1"),
        (1, lambda n, f: math.ceil(n * f), "ceil"),
        (2, lambda rounds, t: aligned(rounds, t), "the alignment rounds themselves"),
        (2, lambda rounds, t: [r + 1 for r in aligned(rounds, t)], "only the round right after each alignment"),
        (2, lambda rounds, t: [r for r in range(t + 1, rounds + 1) if r % t == 1 % t], "every t-th round after"),
        (2, lambda rounds, t: list(range(t, rounds + 1)), "from the alignment round on"),
    ]
    agree_on_mine = 0
    for n, answer, why in wrong:
        agree_on_mine += answer(*mine[n - 1].values()) == CHECKS["05_flower"][n].reference(**mine[n - 1])
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: on .+ Hint: "):
            Exercises("05_flower", {}).check(n, answer, **mine[n - 1])
    assert agree_on_mine >= 3, "the cases exist because some wrong rules pass on the notebook's own cfg"
    with pytest.raises(ExerciseWrong, match="expected a function"):
        Exercises("05_flower", {}).check(1, 2, **mine[0])          # a number, not a function


def test_choosing_on_test_fails_in_04(states):
    """Exercise 2 of 04 takes a function, checked also on a summary where validation and test disagree:
    on the committed neuron-steps both pick the same cell, so a value could not tell them apart."""
    choice = states("04_reproduction")["choice_summary"]

    def on_test(summary):
        means = summary.groupby("cell")[["fm_val_accuracy", "fm_accuracy"]].mean()
        return means["fm_accuracy"].idxmax(), 100 * means["fm_accuracy"].max()

    def best_single_seed(summary):
        best = summary.loc[summary.fm_val_accuracy.idxmax(), "cell"]
        return best, 100 * summary[summary.cell == best].fm_accuracy.mean()

    for answer in (on_test, best_single_seed):
        # on the notebook's summary, choosing on test may agree with validation; then the extra case fails it
        agrees = difference(answer(choice), CHECKS["04_reproduction"][2].reference(choice)) is None
        where = "a summary where validation and test choose differently" if agrees else "this notebook's inputs"
        with pytest.raises(ExerciseWrong, match=f"EXERCISE 2 is not right yet: on {where}: "):
            Exercises("04_reproduction", {}).check(2, answer, summary=choice)


def test_wrong_answers_fail_in_06(states):
    state = states("06_neighbourhood")
    emulator, clients = state["emulator"], state["clients"]
    layers = get_layers(emulator.backbone)
    middle = [p for i in state["emulator_positions"](emulator) for p in layers[i].parameters()]
    every = sum(p.numel() * p.element_size() for p in emulator.parameters())
    mib = sum(p.numel() * p.element_size() for p in middle) / 2**20
    wrong = [
        (1, [0, 1, 1, 3, 3, 5], {"clusters": [[1, 2], [3, 4]], "n_layers": 6}),     # the first layer, not the middle
        (1, [0, 1, 1, 1, 4, 5], {"clusters": [[1, 2, 3], [4]], "n_layers": 6}),     # the first layer again
        (1, [0, 2, 2, 2, 4], {"clusters": [[1, 2, 3], [4]], "n_layers": 6}),        # the last position forgotten
        (1, [2, 2, 2, 2, 4, 4], {"clusters": [[1, 2, 3], [4]], "n_layers": 6}),     # adapters shared too
        (2, mib, {"proxy": emulator, "clients": clients}),                         # one client only
        (2, clients * every / 2**20, {"proxy": emulator, "clients": clients}),     # the whole proxy
        (2, clients * sum(p.numel() for p in middle) / 2**20, {"proxy": emulator, "clients": clients}),  # values, not bytes
    ]
    for n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            Exercises("06_neighbourhood", {}).check(n, answer, **inputs)
    # the reference agrees with the proxy the package builds
    Exercises("06_neighbourhood", {}).check(1, [0, 2, 2, 2, 4, 5], clusters=[[1, 2, 3], [4]], n_layers=6)
