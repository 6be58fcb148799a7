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
                                   is_blank, load_solutions, synthetic_representations)
from fedpft_lite.config import FedConfig
from fedpft_lite.data import encode, load_task, make_loader
from fedpft_lite.federated import sample_clients
from fedpft_lite.history import History
from fedpft_lite.lora import add_lora, state_bytes, trainable_state
from fedpft_lite.models import load_foundation_model
from fedpft_lite.results import COMMITTED_ROOT, committed_summary

NOTEBOOK = "00_primer"
NOTEBOOKS = ["00_primer", "01_compression", "02_alignment", "03_federated_rounds", "04_three_methods",
             "05_reproduction", "06_flower", "07_neighbourhood"]
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
            "fm_lora": add_lora(copy.deepcopy(fm)).eval(), "d": fm.config.hidden_size}


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
    """What notebook 03 has defined at its exercises: the sampling demo's config (section 2), the Dirichlet split
    of section 3, and the default task's 2-class MiniLM with the package's default config (section 4)."""
    fm2, _ = load_foundation_model("minilm", num_labels=2)
    topics_task = load_task("bbc-news")
    topic_labels = np.array(topics_task["train"]["label"])
    return {"np": np, "demo": FedConfig(num_clients=20, fraction=0.25, rounds=10, lr=8e-4, seed=0),
            "topic_labels": topic_labels, "topics": label_names(topics_task),
            "parts_1": partition(topic_labels, 10, "dirichlet", alpha=1.0, seed=0),
            "fm": fm2, "base": FedConfig(), "classes": label_names(load_task(max_train=16, max_test=16))}


def methods_state(fm, tokenizer):
    """Notebook 04's exercise inputs: a live run's history and test size (section 2), and the FedPFT state and
    FFN patch sizes with the committed runs' schedule (section 5)."""
    from fedpft_lite.experiments import get_experiment
    fm2, _ = load_foundation_model("minilm", num_labels=2)
    state = trainable_state(add_lora(compress_ffn(fm2, keep_ratio=0.25)))
    return {"histories": {"FedPFT": History([{"round": 1, "fm_accuracy": 0.52}, {"round": 2, "fm_accuracy": 0.4933}])},
            "n_test": 150, "fedpft_state": state_bytes(state), "patch_bytes": 2_383_872,
            "full": get_experiment("lite/table1").config("FedPFT", seed=0)}


def reproduction_state(fm, tokenizer):
    """Notebook 05's exercise inputs, chosen as its section 7 chooses them."""
    summaries = {n: committed_summary(n) for n in ("lite/table1", "lite/neuron-steps")}
    ex_summary = summaries["lite/table1"]
    if ex_summary is None or not {"FedPFT", "FedPETuning"} <= set(ex_summary.cell):
        ex_summary = pd.read_csv(COMMITTED_ROOT.parent / "archive" / "engine1-bbc-topics" / "lite" / "table1"
                                 / "summary.csv")
    choice = next((s for s in (summaries["lite/neuron-steps"], summaries["lite/table1"])
                   if s is not None and "fm_val_accuracy" in s and s.fm_val_accuracy.notna().any()), None)
    if choice is None:   # nothing committed yet with a validation column: two cells, two seeds
        choice = pd.DataFrame({"cell": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                               "fm_val_accuracy": [0.7, 0.72, 0.75, 0.71], "fm_accuracy": [0.7, 0.7, 0.8, 0.7]})
    wide = 100 * ex_summary.pivot_table(index="seed", columns="cell", values="fm_accuracy")
    gap = (wide["FedPETuning"] - wide["FedPFT"]).dropna()
    return {"pd": pd, "ex_summary": ex_summary, "choice_summary": choice, "gap_sd": float(gap.std()),
            "gap_target": abs(float(gap.mean()))}


def flower_state(fm, tokenizer):
    """Notebook 06's exercise inputs: its quick run's FedConfig (section 1), built without Flower, and the
    alignments its server logged (one, in round 2: 192 neurons in each of the 4 compressed layers). No Flower
    run: the checks need none."""
    run = dict(max_train=120, max_test=64, max_public=64, num_clients=3, fraction=0.67, rounds=3,
               max_length=32, align_steps=3)
    cfg = FedConfig(model="minilm", task="bbc-news", method="fedpft", partition="dirichlet", alpha=1.0,
                    batch_size=16, lr=3e-3, eval_batch_size=64, device="cpu",
                    align_before=True, align_during=True, align_every=2, **run)
    return {"cfg": cfg, "RUN": run, "RUN_FLOWER": False, "HAVE_FLWR": False,
            "alignments": {2: {i: list(range(0, 384, 2)) for i in (1, 2, 3, 4)}}}


def neighbourhood_state(fm, tokenizer):
    """Notebook 07's exercise inputs: MiniLM's layer representations on public bbc-word-order sentences, its
    middle layers and CRaSh's cluster count (section 2, as the notebook builds them), and FedBiOT's emulator with
    its LoRA (section 4)."""
    from fedpft_lite.emulator import emulator_shape
    from fedpft_lite.experiments import get_experiment
    from fedpft_lite.federated import add_proxy_lora
    from fedpft_lite.methods import get_method
    from fedpft_lite.neighbourhood import emulator_positions, layer_representations

    fm2, tok = load_foundation_model("minilm", num_labels=2, seed=0)
    exp = get_experiment("lite/neighbourhood")
    public = encode(load_task("bbc-word-order", max_train=16, max_test=16)["public"].shuffle(seed=0).select(range(64)),
                    tok, 64)
    crash_cfg, bi_cfg = exp.config("CRaSh", 0, device="cpu"), exp.config("FedBiOT", 0, device="cpu")
    n, a, k = emulator_shape(fm2, crash_cfg.adapter_layers, crash_cfg.emulator_layers, crash_cfg.keep_ratio)
    emulator = add_proxy_lora(get_method("fedbiot").build_proxy(fm2, bi_cfg), bi_cfg)
    return {"reps": layer_representations(fm2.eval(), make_loader(public, tok, 32)), "middle": list(range(a, n - a)),
            "k_clusters": k, "n_layers": n, "emulator": emulator, "clients": bi_cfg.clients_per_round,
            "get_layers": get_layers, "emulator_positions": emulator_positions, "cfg_bi": bi_cfg}


NOTEBOOK_STATES = {"00_primer": primer_state, "01_compression": compression_state, "02_alignment": alignment_state,
                   "03_federated_rounds": rounds_state, "04_three_methods": methods_state,
                   "05_reproduction": reproduction_state, "06_flower": flower_state,
                   "07_neighbourhood": neighbourhood_state}


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
        (3, lambda d_in, d_out: d_in * d_out // (d_in + d_out), {"d_in": 384, "d_out": 384}),   # rounded down
        (3, lambda d_in, d_out: d_in * d_out / (d_in + d_out), {"d_in": 384, "d_out": 384}),    # not a whole rank
        (3, lambda d_in, d_out: d_in // 2, {"d_in": 384, "d_out": 384}),                        # square layers only
        (3, lambda d_in, d_out: min(d_in, d_out), {"d_in": 384, "d_out": 384}),                 # full rank
        (4, {"a": torch.tensor([2.0, 1.0])},                                 # the uniform mean
         {"client_states": client_states, "n_k": [1, 3]}),
    ]
    for n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            ex.check(n, answer, **inputs)


def test_break_even_rank_reference_counts_peft_lora():
    """The reference counts a real peft LoRA layer; at the break-even rank LoRA holds at least W's values, one
    rank lower fewer (the three wrong rules above agree with it on MiniLM's square 384 x 384)."""
    from fedpft_lite.exercises import lora_break_even_rank, lora_values
    assert lora_break_even_rank(384, 384) == 192 and lora_break_even_rank(384, 1536) == 308
    for d_in, d_out in ((384, 1536), (3, 5), (10, 10)):
        r = lora_break_even_rank(d_in, d_out)
        assert lora_values(d_in, d_out, r) >= d_in * d_out > lora_values(d_in, d_out, r - 1)


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
    assert namespace["break_even_rank"](384, 384) == 192


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_stored_notebook_has_blank_exercises_matching_checks_and_solutions(notebook, committed):
    cells = exercise_cells(notebook)
    assert len(cells) >= 2
    assert sorted(cells) == sorted(CHECKS[notebook]) == sorted(load_solutions(notebook))
    for n, (exercise, check) in cells.items():
        assert re.search(r"(= |return )\.\.\.\s*(#.*)?$", exercise, re.MULTILINE), \
            f"EXERCISE {n}: no blank `= ...` (or `return ...`) placeholder"
        assert f"ex.fill({n})" in exercise
        assert check.lstrip().startswith(f"ex.check({n}, "), f"the cell after EXERCISE {n} is not its check"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in json.loads(committed(NOTEBOOK_DIR / f"{notebook}.ipynb"))["cells"]
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


def test_wrong_answers_fail_in_03(states):
    rounds = states("03_federated_rounds")
    counts = np.stack([np.bincount(rounds["topic_labels"][p], minlength=5) for p in rounds["parts_1"]])
    demo = {"num_clients": 20, "per_round": 5, "rounds": 10}
    bert = {"layers": 6, "hidden": 384, "r": 8, "num_labels": 2}
    wrong = [
        (1, lambda n, m, r: max(0, n - m * r), demo),                       # a difference of counts
        (1, lambda n, m, r: (1 - m / n) ** r, demo),                        # a probability, not a count
        (1, lambda n, m, r: n * (1 - m / n) ** (r - 1), demo),              # one round too few
        (1, lambda n, m, r: n * math.exp(-m * r / n), demo),                # sampling with replacement's limit
        (2, counts.T, {"labels": rounds["topic_labels"], "parts": rounds["parts_1"]}),
        (2, counts[:, ::-1].copy(), {"labels": rounds["topic_labels"], "parts": rounds["parts_1"]}),
        (3, lambda n, h, r, c: 4 * n * 4 * 2 * r * h, bert),                # forgot the head
        (3, lambda n, h, r, c: 4 * (n * 4 * 2 * r * h + h * c), bert),      # the head without its bias
        (3, lambda n, h, r, c: 4 * (n * 2 * 2 * r * h + (h + 1) * c), bert),  # peft's default: query and value only
        (3, lambda n, h, r, c: n * 4 * 2 * r * h + (h + 1) * c, bert),      # values, not bytes
    ]
    for n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            Exercises("03_federated_rounds", {}).check(n, answer, **inputs)


def test_never_sampled_reference_matches_sample_clients():
    """The exercise's expectation is what sample_clients does, averaged over many seeds."""
    from fedpft_lite.exercises import never_sampled_expectation
    cfg = FedConfig(num_clients=10, fraction=0.3, rounds=4)
    missed = [cfg.num_clients - len({k for r in range(1, cfg.rounds + 1) for k in sample_clients(cfg.replace(seed=s), r)})
              for s in range(2000)]
    expected = never_sampled_expectation(10, 3, 4)
    assert abs(np.mean(missed) - expected) < 4 * np.std(missed) / math.sqrt(len(missed))


def test_state_bytes_reference_matches_the_notebooks_states(states):
    """The reference builds a random BERT of the given shape; on MiniLM's shape it gives the bytes of the states
    the notebooks measure on the real model: 2 classes in 03 and 04, 5 in 00 to 02."""
    from fedpft_lite.exercises import lora_head_state_bytes
    fm2 = states("03_federated_rounds")["fm"]
    assert lora_head_state_bytes(6, 384, 8, 2) == state_bytes(trainable_state(add_lora(copy.deepcopy(fm2)))) == 592_904
    assert lora_head_state_bytes(6, 384, 8, 5) == 597_524


def test_wrong_answers_fail_in_04(states):
    mine = {"p": 0.52, "sentences": 150}
    schedule = {"state_bytes": 592_904, "patch_bytes": 2_383_872, "clients": 4, "rounds": 10, "t": 2}
    wrong = [
        (1, lambda p, n: math.sqrt(p * (1 - p) / n), mine),                 # the standard error, not 95 %
        (1, lambda p, n: 1.96 * p * (1 - p) / n, mine),                     # no square root
        (1, lambda p, n: 2 * math.sqrt(p * (1 - p) / n), mine),             # 2 for 1.96
        (2, lambda s, p, c, r, t: c * s + c * p * len(range(t, r + 1, t)) / r, schedule),   # aligns in the last round
        (2, lambda s, p, c, r, t: c * s + p * len(range(t, r, t)) / r, schedule),           # one client's patch
        (2, lambda s, p, c, r, t: c * s * r + c * p * len(range(t, r, t)), schedule),       # the total, not the mean
        (2, lambda s, p, c, r, t: c * s + c * p * (r - t) / r, schedule),                   # Flower's stateless clients
    ]
    for n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            Exercises("04_three_methods", {}).check(n, answer, **inputs)


def test_mean_bytes_down_reference_matches_the_committed_runs():
    """The downlink the exercise's reference computes is the committed lite Table 1's recorded mean for FedPFT."""
    from fedpft_lite.exercises import fedpft_mean_bytes_down
    from fedpft_lite.experiments import get_experiment
    summary = committed_summary("lite/table1")
    if summary is None:
        pytest.skip("no committed lite/table1 in this installation")
    cfg = get_experiment("lite/table1").config("FedPFT", seed=0)
    booked = summary[summary.cell == "FedPFT"].mib_down_per_round.mean() * 2**20
    assert fedpft_mean_bytes_down(592_904, 2_383_872, cfg.clients_per_round, cfg.rounds, cfg.align_every) == \
        pytest.approx(booked)


def test_wrong_answers_fail_in_05(states):
    from fedpft_lite.stats import t_quantile
    repro = states("05_reproduction")
    mine = {"sd": repro["gap_sd"], "half_width": repro["gap_target"]}

    def counting(rule):
        def seeds(sd, h):
            n = 2
            while rule(n) * sd > h:
                n += 1
            return n
        return seeds

    wrong = [
        counting(lambda n: 1.96 / math.sqrt(n)),                    # the normal quantile: too few seeds
        counting(lambda n: t_quantile(n) / n),                       # n, not its square root
        counting(lambda n: t_quantile(n + 1) / math.sqrt(n)),        # n degrees of freedom
        lambda sd, h: math.ceil((1.96 * sd / h) ** 2),               # the normal formula solved for n
    ]
    for answer in wrong:
        with pytest.raises(ExerciseWrong, match=r"EXERCISE 1 is not right yet: .+ Hint: "):
            Exercises("05_reproduction", {}).check(1, answer, **mine)
    with pytest.raises(ExerciseWrong, match=r"EXERCISE 2 is not right yet: "):
        Exercises("05_reproduction", {}).check(2, lambda summary: ("no such cell", 70.0), summary=repro["choice_summary"])


def test_strings_and_arrays_compare():
    assert difference("steps=20", "steps=20") is None
    assert difference("steps=0", "steps=20") == "not the package's choice"
    assert difference(np.array([[1, 2]]), torch.tensor([[1, 2]])) is None
    assert difference([[1, 2]], torch.tensor([[1, 3]])) == "right shape, wrong values"


def test_wrong_answers_fail_in_06(states):
    """The answers are functions: a wrong rule that happens to agree on the quick run's inputs ('only the round
    after each alignment' is [3] when rounds=3, t=2; with a single alignment the union is that alignment) still
    fails on the check's other cases."""
    state = states("06_flower")
    cfg, alignments = state["cfg"], state["alignments"]
    assert (cfg.rounds, cfg.align_every, cfg.clients_per_round) == (3, 2, 2)   # the quick run's
    mine = {"rounds": cfg.rounds, "t": cfg.align_every}, {"updated": alignments, "r": cfg.rounds}

    def aligned(rounds, t):
        return [r for r in range(t, rounds, t)]

    def union_sizes(updated, r, before=lambda a, r: a < r):
        union = {}
        for a, layers in updated.items():
            if before(a, r):
                for i, idx in layers.items():
                    union.setdefault(i, set()).update(idx)
        return {i: len(union[i]) for i in sorted(union)}

    wrong = [
        (1, lambda rounds, t: aligned(rounds, t), "the alignment rounds themselves"),
        (1, lambda rounds, t: [r + 1 for r in aligned(rounds, t)], "only the round right after each alignment"),
        (1, lambda rounds, t: [r for r in range(t + 1, rounds + 1) if r % t == 1 % t], "every t-th round after"),
        (1, lambda rounds, t: list(range(t, rounds + 1)), "from the alignment round on"),
        (2, lambda updated, r: {i: sum(len(u[i]) for a, u in updated.items() if a < r and i in u)
                                for i in sorted({i for a, u in updated.items() if a < r for i in u})}, "counted twice"),
        (2, lambda updated, r: {i: len(idx) for i, idx in updated[max(a for a in updated if a < r)].items()}
         if any(a < r for a in updated) else {}, "only the latest alignment"),
        (2, lambda updated, r: union_sizes(updated, r, lambda a, r: a <= r), "round r's own alignment too"),
    ]
    agree_on_mine = 0
    for n, answer, why in wrong:
        agree_on_mine += answer(*mine[n - 1].values()) == CHECKS["06_flower"][n].reference(**mine[n - 1])
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: on .+ Hint: "):
            Exercises("06_flower", {}).check(n, answer, **mine[n - 1])
    assert agree_on_mine >= 3, "the cases exist because some wrong rules pass on the notebook's own inputs"
    with pytest.raises(ExerciseWrong, match="expected a function"):
        Exercises("06_flower", {}).check(1, [3], **mine[0])          # a list, not a function


def test_choosing_on_test_fails_in_05(states):
    """Exercise 2 of 05 takes a function, checked also on a summary where validation and test disagree:
    on the committed neuron-steps both pick the same cell, so a value could not tell them apart."""
    choice = states("05_reproduction")["choice_summary"]

    def on_test(summary):
        means = summary.groupby("cell")[["fm_val_accuracy", "fm_accuracy"]].mean()
        return means["fm_accuracy"].idxmax(), 100 * means["fm_accuracy"].max()

    def best_single_seed(summary):
        best = summary.loc[summary.fm_val_accuracy.idxmax(), "cell"]
        return best, 100 * summary[summary.cell == best].fm_accuracy.mean()

    for answer in (on_test, best_single_seed):
        # on the notebook's summary, choosing on test may agree with validation; then the extra case fails it
        agrees = difference(answer(choice), CHECKS["05_reproduction"][2].reference(choice)) is None
        where = "a summary where validation and test choose differently" if agrees else "this notebook's inputs"
        with pytest.raises(ExerciseWrong, match=f"EXERCISE 2 is not right yet: on {where}: "):
            Exercises("05_reproduction", {}).check(2, answer, summary=choice)


def test_wrong_answers_fail_in_07(states):
    from fedpft_lite.neighbourhood import linear_cka
    state = states("07_neighbourhood")
    emulator, clients = state["emulator"], state["clients"]
    layers = get_layers(emulator.backbone)
    middle = [p for i in state["emulator_positions"](emulator) for p in layers[i].parameters()]
    every = sum(p.numel() * p.element_size() for p in emulator.parameters())
    mib = sum(p.numel() * p.element_size() for p in middle) / 2**20

    def greedy(pick, facing=lambda left, right: (left[-1], right[0])):
        def clusters(reps, lay, k):
            out = [[i] for i in lay]
            while len(out) > k:
                sims = [linear_cka(*(reps[i] for i in facing(out[j], out[j + 1]))) for j in range(len(out) - 1)]
                j = pick(sims)
                out[j] = out[j] + out.pop(j + 1)
            return out
        return clusters

    mine = {"reps": state["reps"], "layers": state["middle"], "k": state["k_clusters"]}
    wrong = [
        greedy(lambda sims: int(np.argmin(sims))),                                           # the least alike
        greedy(lambda sims: int(np.argmax(sims)), facing=lambda left, right: (left[0], right[0])),   # first layers
        lambda reps, lay, k: [lay[i * len(lay) // k:(i + 1) * len(lay) // k] for i in range(k)],   # equal sizes
    ]
    for answer in wrong:
        with pytest.raises(ExerciseWrong, match=r"EXERCISE 1 is not right yet: .+ Hint: "):
            Exercises("07_neighbourhood", {}).check(1, answer, **mine)
    wrong = [
        (2, mib, {"proxy": emulator, "clients": clients}),                         # one client only
        (2, clients * every / 2**20, {"proxy": emulator, "clients": clients}),     # the whole proxy
        (2, clients * sum(p.numel() for p in middle) / 2**20, {"proxy": emulator, "clients": clients}),  # values, not bytes
    ]
    for n, answer, inputs in wrong:
        with pytest.raises(ExerciseWrong, match=rf"EXERCISE {n} is not right yet: .+ Hint: "):
            Exercises("07_neighbourhood", {}).check(n, answer, **inputs)
    # the reference agrees with the proxy the package builds from the same representations
    from fedpft_lite.neighbourhood import cluster_layers
    assert CHECKS["07_neighbourhood"][1].reference(**mine) == cluster_layers(mine["reps"], mine["layers"], mine["k"])[0]
    assert len(synthetic_representations(0)) == 8
