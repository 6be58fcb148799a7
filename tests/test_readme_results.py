"""The README's results are the committed data's: every results block in README.md equals what
``fedpft_lite.results.results_markdown`` computes from data/results/ (scripts/readme_results.py
writes them), and a number changed by hand is caught."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_results", ROOT / "scripts" / "readme_results.py")
readme_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_results)

#: The experiments whose numbers the README states (each must have its block).
STATED = ("lite/table1", "lite/table1-gap", "lite/table1-mpnet", "lite/ablation", "lite/neuron-steps",
          "lite/table2", "lite/params", "lite/topics", "lite/vision", "lite/neighbourhood",
          "lite/neighbourhood-vision")


@pytest.fixture(scope="module")
def readme():
    return (ROOT / "README.md").read_text()


def test_every_results_block_is_what_the_committed_data_give(readme):
    problems = readme_results.differences(readme)
    assert not problems, "\n".join(problems) + "\nrun: python scripts/readme_results.py"


def test_the_readme_states_each_committed_experiment_in_a_block(readme):
    named = [name for name, _ in readme_results.blocks(readme)]
    assert [n for n in STATED if n not in named] == []


def test_a_number_changed_by_hand_is_caught(readme):
    (name, body), *_ = readme_results.blocks(readme)
    row = next(line for line in body.splitlines() if " ± " in line)
    mean = row.split("|")[2].split("±")[0].strip()               # e.g. "79.55"
    tampered = readme.replace(row, row.replace(mean, f"{float(mean) + 0.01:.2f}", 1), 1)
    (problem,) = readme_results.differences(tampered)
    assert problem.startswith(f"results block {name} differs") and mean in problem


def test_the_readme_demo_table_is_the_committed_demo(readme):
    """The demo's result is committed (data/results/demo/: results.md and each method's history);
    the README's demo table is the table those histories give, and the README states it."""
    from fedpft_lite.cli import DEMO_NAMES, _results_table
    from fedpft_lite.history import History

    demo = ROOT / "data" / "results" / "demo"
    results = {label: History.load(demo / method) for method, label in DEMO_NAMES.items()}
    table = _results_table(results)
    assert table in (demo / "results.md").read_text()
    indented = "\n".join("  " + line for line in table.splitlines())   # in the README's list item
    assert indented in readme, "run fedpft-lite demo --out data/results/demo and copy its table into the README"
