"""Notebook exercises (fedpft_lite.exercises): a blank or wrong answer fails its check, the reference
solution passes, and notebook 00's stored exercise cells are blank and match the solutions file.

The exercise and check cells are taken from the stored notebook and run here, in a namespace that
holds what the notebook defined before them, so these tests check the cells a student sees."""
import copy
import json
import re
from pathlib import Path

import pytest
import torch

from fedpft_lite.arch import arch_of, ffn_linears, get_layers
from fedpft_lite.compression import compress_ffn
from fedpft_lite.exercises import (CHECKS, SOLUTIONS_ENV, Exercises, ExerciseNotDone, ExerciseWrong, difference,
                                   is_blank, load_solutions)
from fedpft_lite.lora import add_lora
from fedpft_lite.models import load_foundation_model

NOTEBOOK = "00_primer"
NOTEBOOK_PATH = Path(__file__).resolve().parents[1] / "notebooks" / f"{NOTEBOOK}.ipynb"
EXERCISE = re.compile(r"^# EXERCISE (\d+):")


def notebook_cells():
    return json.loads(NOTEBOOK_PATH.read_text())["cells"]


def exercise_cells() -> dict[int, tuple[str, str]]:
    """{n: (exercise cell source, the check cell after it)} from the stored notebook."""
    cells = notebook_cells()
    out = {}
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        m = EXERCISE.match(source)
        if cell["cell_type"] == "code" and m:
            out[int(m.group(1))] = (source, "".join(cells[i + 1]["source"]))
    return out


@pytest.fixture(scope="module")
def notebook_state():
    """What notebook 00 has defined when its exercises run (section 1 to 3), on the real MiniLM."""
    fm, _ = load_foundation_model("minilm", num_labels=5)
    fm.eval()
    layer = 2
    w_in, w_out = ffn_linears(get_layers(fm.backbone)[layer], arch_of(fm.backbone))
    return {"torch": torch, "fm": fm, "cfg": fm.config, "sub": compress_ffn(fm, keep_ratio=0.25),
            "LAYER": layer, "KEEP": [3, 14, 15, 92, 653, 1000], "w_in": w_in, "w_out": w_out,
            "fm_lora": add_lora(copy.deepcopy(fm)).eval()}


def run_exercise(n, state, monkeypatch, solutions: bool):
    """Run exercise n's stored cell, then its check cell, in a copy of the notebook's namespace."""
    if solutions:
        monkeypatch.setenv(SOLUTIONS_ENV, "1")
    else:
        monkeypatch.delenv(SOLUTIONS_ENV, raising=False)
    namespace = dict(state)
    namespace["ex"] = Exercises(NOTEBOOK, namespace)
    exercise, check = exercise_cells()[n]
    exec(exercise, namespace)
    exec(check, namespace)
    return namespace


@pytest.mark.parametrize("n", sorted(CHECKS[NOTEBOOK]))
def test_a_blank_answer_fails_its_check(n, notebook_state, monkeypatch):
    with pytest.raises(ExerciseNotDone, match=rf"fill in EXERCISE {n}: "):
        run_exercise(n, notebook_state, monkeypatch, solutions=False)


@pytest.mark.parametrize("n", sorted(CHECKS[NOTEBOOK]))
def test_the_solution_passes_its_check(n, notebook_state, monkeypatch, capsys):
    run_exercise(n, notebook_state, monkeypatch, solutions=True)
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


def test_the_stored_notebook_has_blank_exercises_matching_checks_and_solutions():
    cells = exercise_cells()
    assert len(cells) >= 3
    assert sorted(cells) == sorted(CHECKS[NOTEBOOK]) == sorted(load_solutions(NOTEBOOK))
    for n, (exercise, check) in cells.items():
        assert re.search(r"= \.\.\.\s*(#.*)?$", exercise, re.MULTILINE), f"EXERCISE {n}: no blank `= ...` placeholder"
        assert f"ex.fill({n})" in exercise
        assert check.lstrip().startswith(f"ex.check({n}, "), f"the cell after EXERCISE {n} is not its check"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in notebook_cells()
               if c["cell_type"] == "code"), "strip the notebook's outputs before committing"


def test_blank_detection_and_differences():
    assert is_blank(...) and is_blank(None) and is_blank((torch.zeros(1), ...)) and is_blank({"a": None})
    assert not is_blank(0) and not is_blank((torch.zeros(1),))
    assert difference(6, 6.0) is None
    assert difference(torch.zeros(2, 3), torch.zeros(3, 2)) == "shape (2, 3), expected (3, 2)"
    assert difference({"b": torch.zeros(1)}, {"a": torch.zeros(1)}) == "keys ['b'], expected ['a']"
    assert difference("six", 6.0) == "expected a number, got str"
    assert difference((1, 2), (1, 3)) == "value 2: not the package's value"
