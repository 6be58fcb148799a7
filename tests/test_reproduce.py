"""The experiment registry, the reproduction runner and the table printer."""
import json

import numpy as np
import pandas as pd
import pytest

from fedpft_lite.cli import main
from fedpft_lite.experiments import (QUICK_CHANGES, REGISTRY, TABLE1_METHODS, Cell, Experiment,
                                     LITE_TEXT, get_experiment, list_experiments)
from fedpft_lite.reproduce import COST_COLUMNS, SUMMARY_COLUMNS, NeedsGPUError, load_summary, reproduce, run_key
from fedpft_lite.results import (comparison_table, cost_table, describe_comparisons, extra_seed_note, extra_seeds,
                                 ordering, paper_results, paper_value, to_markdown)


# -- registry ----------------------------------------------------------------------------------
def test_every_entry_resolves_to_a_valid_config_for_every_cell_and_seed():
    assert len(REGISTRY) == 33
    assert {e.name for e in list_experiments("lite")} == {
        "lite/table1", "lite/demo", "lite/table2", "lite/ablation", "lite/params", "lite/neuron-steps",
        "lite/table1-gap", "lite/table1-mpnet", "lite/ablation-mpnet", "lite/topics", "lite/vision", "lite/neighbourhood",
        "lite/neighbourhood-vision", "lite/gap-budget", "lite/gap-rounds"}
    for exp in REGISTRY.values():
        assert len({c.label for c in exp.cells}) == len(exp.cells), exp.name
        for cell in exp.cells:
            for seed in exp.seeds:
                cfg = exp.config(cell, seed)              # validate() raises on anything wrong
                assert cfg.seed == seed and cfg.method == cell.overrides["method"]
            exp.config(cell, 0, **QUICK_CHANGES)          # the quick setting stays valid too
        if exp.reference:
            exp.cell(exp.reference)


def test_the_registry_covers_the_papers_tables():
    names = set(REGISTRY)
    for model in ("bert-base", "roberta-base"):
        for task in ("sst2", "qnli", "mnli", "qqp"):
            assert f"paper/table1/{model}/{task}" in names
        for task in ("sst2", "qnli"):
            exp = REGISTRY[f"paper/table2/{model}/{task}"]
            assert sorted({exp.config(c, 0).alpha for c in exp.cells}) == [1.0, 5.0, 10.0]
            assert {exp.config(c, 0).partition for c in exp.cells} == {"dirichlet"}
    abl = REGISTRY["paper/ablation/bert-base/qnli"]
    switches = {c.label: (abl.config(c, 0).align_before, abl.config(c, 0).align_during) for c in abl.cells
                if c.label.startswith("FedPFT")}
    assert switches == {"FedPFT_N": (False, False), "FedPFT_B": (False, True),
                        "FedPFT_D": (True, False), "FedPFT": (True, True)}
    params = REGISTRY["paper/params/bert-base/qnli"]
    assert sorted(params.config(c, 0).align_every for c in params.cells if c.label.startswith("t=")) == [5, 10, 20]
    assert {REGISTRY[f"paper/vision/vit-base/{t}"].base["task"] for t in ("cifar10", "cifar100", "flowers102")} \
        == {"cifar10", "cifar100", "flowers102"}
    # the paper's stated settings
    cfg = REGISTRY["paper/table1/bert-base/sst2"].config("FedPFT", 0)
    assert (cfg.num_clients, cfg.fraction, cfg.lr, cfg.batch_size, cfg.lora_r, cfg.lora_alpha,
            cfg.keep_ratio, cfg.align_every, cfg.align_fraction) == (100, 0.1, 8e-4, 16, 8, 48, 0.25, 10, 0.5)
    # every lite experiment runs offline
    for exp in list_experiments("lite"):
        assert exp.base["model"] in ("minilm", "mpnet", "vit-tiny-fmnist") and exp.needs == "offline, CPU"
    # the default text setting is the task a frozen model cannot do; FedPFT there is the paper's
    assert get_experiment("lite/table1").base["task"] == "bbc-word-order"
    t1 = get_experiment("lite/table1").config("FedPFT", 0)
    assert t1.aligns_before and t1.aligns_during and t1.align_every < t1.rounds


def test_every_paper_cell_has_the_papers_number():
    paper = paper_results()
    assert len(paper) == 82 and paper.source.str.contains("2404.11536").all()
    for exp in REGISTRY.values():
        for _, table, model, task in exp.paper_columns:
            for c in exp.cells:
                v = paper_value(table, model, task, c.paper_method, c.paper_setting, paper)
                assert v is not None and 70 < v < 95, (exp.name, c.label, table, model, task)
    assert paper_value("table1", "BERT-base", "QNLI", "FedOT") == 83.9
    assert paper_value("table2", "RoBERTa-base", "SST-2", "FedPFT", "alpha=5.0") == 92.7
    assert paper_value("params", "BERT-base", "QNLI", "FedPFT", "p=0.8") == 87.1


def test_unknown_experiment_names_the_near_ones():
    with pytest.raises(KeyError, match="did you mean lite/table1"):
        get_experiment("lite/tabel1")


# -- table printer ---------------------------------------------------------------------------
def _fake_summary(exp_name, values):
    """Hand-written numbers (mechanics of the printer only, no claim about any method)."""
    rows = [{"experiment": exp_name, "cell": cell, "seed": s, "fm_accuracy": v}
            for cell, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_comparison_table_means_spreads_same_seed_gaps_and_paper_columns():
    summary = _fake_summary("lite/table1", {"FedPETuning": [0.80, 0.82, 0.84],
                                            "FedOT": [0.70, 0.74, 0.72],
                                            "FedPFT": [0.79, 0.80, 0.84]})
    df = comparison_table("lite/table1", summary)
    assert list(df.index) == list(TABLE1_METHODS)
    assert df.loc["FedOT", "ours %"] == pytest.approx(72.0)
    # 95 % t-interval: t(0.975, 2 dof) = 4.303 times sd 2.0 / sqrt(3)
    assert df.loc["FedOT", "95% CI ±"] == pytest.approx(4.3027 * 2.0 / 3 ** 0.5, rel=1e-4)
    assert df.loc["FedPFT", "Δ vs FedPETuning"] == pytest.approx(-1.0)   # mean of -1, -2, 0
    # same-seed gaps -1, -2, 0: sd 1, the interval -1 ± 2.48 holds 0; FedOT's -10, -8, -12 does not
    assert df.loc["FedPFT", "Δ 95% CI ±"] == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-4)
    assert df.loc["FedPFT", "Δ verdict"] == "not distinguishable"
    assert df.loc["FedOT", "Δ verdict"] == "worse"
    assert df.loc["FedPETuning", "Δ verdict"] == "reference"
    # the registered pairs, in words: FedPFT - FedOT = 9, 6, 12; FedPETuning - FedPFT = 1, 2, 0
    said = describe_comparisons("lite/table1", summary)
    assert said[0] == ("FedPFT − FedOT = +9.00 points (95 % CI +1.55 to +16.45, 3 seeds): "
                       "FedPFT is better than FedOT")
    assert said[1].endswith("FedPETuning and FedPFT are not distinguishable") and len(said) == 3
    assert df.loc["FedPETuning", "seeds"] == 3
    assert df.loc["FedOT", "paper BERT-base QNLI"] == 83.9
    assert df.loc["FedOT", "paper BERT-base QNLI Δ"] == pytest.approx(83.9 - 88.4)
    assert ordering(df) == ["FedPETuning", "FedPFT", "FedOT"]
    md = to_markdown(df)
    lines = md.splitlines()
    assert lines[0].startswith("| lite/table1 | ours % | 95% CI ± | seeds | Δ vs FedPETuning |") and len(lines) == 5
    assert "| FedOT | 72.00 | 4.97 | 3 | -10.00 | 4.97 | worse | 90.40 |" in md


def test_comparison_table_for_alpha_cells_and_missing_rows():
    exp = get_experiment("lite/table2")
    summary = _fake_summary("lite/table2", {"FedOT alpha=5": [0.5, 0.7]})
    df = comparison_table(exp, summary)
    assert list(df.index) == ["FedOT alpha=5"]
    assert df.loc["FedOT alpha=5", "paper BERT-base SST-2"] == 89.9
    assert np.isclose(df.loc["FedOT alpha=5", "ours %"], 60.0)
    with pytest.raises(ValueError, match="no rows of lite/table1"):
        comparison_table("lite/table1", summary)


def test_a_cell_that_is_the_reference_s_runs_says_so_instead_of_a_verdict():
    # lite/params: p=0.5 is t=2 (same config, same run keys); p=0.3 has runs of its own.
    summary = _fake_summary("lite/params", {"t=2": [0.76, 0.78, 0.77], "p=0.5": [0.76, 0.78, 0.77],
                                            "p=0.3": [0.75, 0.79, 0.77]})
    summary["run"] = [f"k{s}" for s in range(3)] * 2 + [f"other{s}" for s in range(3)]
    verdicts = comparison_table("lite/params", summary)["Δ verdict"]
    assert verdicts["t=2"] == "reference"
    assert verdicts["p=0.5"] == "same runs as t=2"
    assert verdicts["p=0.3"] == "not distinguishable"
    summary.loc[summary.cell == "p=0.5", "run"] = ["x0", "x1", "x2"]    # equal numbers, other runs
    assert comparison_table("lite/params", summary)["Δ verdict"]["p=0.5"] == "not distinguishable"


def test_an_experiment_that_chooses_or_explains_a_setting_is_read_on_validation():
    """The gap curves and the neuron-level dose are read on validation (settings are chosen there);
    their table, verdicts and README block must not quietly fall back to the test column."""
    from fedpft_lite.results import METRIC_NAMES, results_markdown
    assert all(e.metric in METRIC_NAMES for e in REGISTRY.values())
    assert {e.name for e in REGISTRY.values() if e.metric == "fm_val_accuracy"} == {
        "lite/neuron-steps", "lite/gap-budget", "lite/gap-rounds"}
    summary = _fake_summary("lite/gap-budget", {"FedPETuning": [0.80, 0.82], "FedPFT": [0.70, 0.74]})
    summary["fm_val_accuracy"] = summary["fm_accuracy"] - [0.0, 0.0, 0.10, 0.10]  # validation gap 20, 18
    df = comparison_table("lite/gap-budget", summary)
    assert df.loc["FedPFT", "ours %"] == pytest.approx(62.0)           # validation, not test's 72
    assert df.loc["FedPFT", "Δ vs FedPETuning"] == pytest.approx(-19.0)
    assert comparison_table("lite/gap-budget", summary, "fm_accuracy").loc["FedPFT", "ours %"] == pytest.approx(72.0)
    assert describe_comparisons("lite/gap-budget", summary)[0].startswith("FedPETuning − FedPFT = +19.00 points")
    md = results_markdown("lite/gap-budget", summary)
    assert md.startswith("| lite/gap-budget (validation) |") and "| FedPFT | 62.00 ±" in md

# -- runner ----------------------------------------------------------------------------------
@pytest.fixture
def tiny_experiment(tiny_model):
    base = dict(LITE_TEXT, model=tiny_model, task="bbc-news", device="cpu", **QUICK_CHANGES)  # its 5-label head
    cells = (Cell("FedPETuning", {"method": "fedpetuning"}, "FedPETuning"),
             Cell("FedPFT", {"method": "fedpft", "align_before": True, "align_during": True,
                             "align_every": 1}, "FedPFT"))
    return Experiment("test/tiny", "table1", "tiny", base, cells, seeds=(0,), scale="lite",
                      reference="FedPETuning")


def test_reproduce_writes_summary_reuses_runs_and_keeps_earlier_rows(tiny_experiment, tmp_path):
    df = reproduce(tiny_experiment, tmp_path, quick=False, progress=False)
    assert list(df.cell) == ["FedPETuning", "FedPFT"] and df.fm_accuracy.between(0, 1).all()
    key = df.run[1]
    res = tmp_path / "runs" / key / "results.json"
    assert json.loads(res.read_text())["config"]["align_during"] is True
    assert (tmp_path / "test/tiny/summary.csv").exists()
    meta = json.loads((tmp_path / "test/tiny/meta.json").read_text())["invocations"]
    assert meta[0]["seeds"] == [0] and meta[0]["machine"]["device"] == "cpu" and meta[0]["computed"] == 2
    stamp = res.stat().st_mtime_ns
    again = reproduce(tiny_experiment, tmp_path, quick=False, progress=False)   # reused, not rerun
    assert res.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(df, again)
    more = reproduce(tiny_experiment, tmp_path, seeds=[1], cells=["FedPFT"], quick=False, progress=False)
    assert sorted(zip(more.cell, more.seed)) == [("FedPETuning", 0), ("FedPFT", 0), ("FedPFT", 1)]
    calls = json.loads((tmp_path / "test/tiny/meta.json").read_text())["invocations"]
    assert [(c["computed"], c["reused"]) for c in calls] == [(2, 0), (0, 2), (1, 0)]
    assert more.loc[more.seed == 1, "run"].item() != key
    summary = load_summary("test/tiny", tmp_path)
    # seed 1 was not registered (the experiment names seed 0): counted apart, never in the table
    assert comparison_table(tiny_experiment, summary).loc["FedPFT", "seeds"] == 1
    assert comparison_table(tiny_experiment, summary, seeds="all").loc["FedPFT", "seeds"] == 2
    assert extra_seeds(tiny_experiment, summary) == [1]
    assert extra_seed_note(tiny_experiment, summary).startswith("Note: the summary also holds seed(s) [1]")


def test_seeds_the_registry_did_not_name_are_reported_apart_and_never_decide_the_verdict():
    """lite/table1 registers seeds 0-2. Extra seeds whose differences would flip the verdict to
    'better' must not: the table and the sentences use 0-2; the note reports the rest apart."""
    rows = []
    for seed in range(8):
        gap = (0.02, -0.02, 0.01)[seed] if seed < 3 else 0.10      # extras: +10 points each
        rows += [dict(experiment="lite/table1", cell="FedPETuning", seed=seed, fm_accuracy=0.70 + gap),
                 dict(experiment="lite/table1", cell="FedPFT", seed=seed, fm_accuracy=0.70)]
    summary = pd.DataFrame(rows)
    (sentence, *_), = [describe_comparisons("lite/table1", summary)]
    assert "3 seeds" in sentence and "not distinguishable" in sentence
    table = comparison_table("lite/table1", summary)
    assert table.loc["FedPFT", "seeds"] == 3 and table.loc["FedPFT", "Δ verdict"] == "not distinguishable"
    note = extra_seed_note("lite/table1", summary)
    assert "[3, 4, 5, 6, 7]" in note and "registered: [0, 1, 2]" in note
    assert "8 seeds" in note and "FedPETuning is better than FedPFT" in note
    assert extra_seed_note("lite/table1", summary[summary.seed < 3]) is None


def test_side_by_side_reproductions_of_one_experiment_keep_each_others_rows(tiny_experiment, tmp_path,
                                                                           monkeypatch):
    """While one reproduction computes a run, another (other seed) finishes and writes the summary;
    the first must not write back a summary without the second's rows (it used to: it merged into
    a copy of summary.csv taken when it started)."""
    import fedpft_lite.federated as federated
    real, nested = federated.run_federated, {}

    def run_and_let_another_finish(cfg, **kw):
        if "started" not in nested:
            nested["started"] = True
            nested["summary"] = reproduce(tiny_experiment, tmp_path, seeds=[1], cells=["FedPETuning"],
                                          quick=False, progress=False)
        return real(cfg, **kw)

    monkeypatch.setattr(federated, "run_federated", run_and_let_another_finish)
    first = reproduce(tiny_experiment, tmp_path, seeds=[0], cells=["FedPETuning"], quick=False, progress=False)
    assert sorted(zip(nested["summary"].cell, nested["summary"].seed)) == [("FedPETuning", 1)]
    assert sorted(zip(first.cell, first.seed)) == [("FedPETuning", 0), ("FedPETuning", 1)]
    calls = json.loads((tmp_path / "test/tiny/meta.json").read_text())["invocations"]
    assert [c["seeds"] for c in calls] == [[1], [0]]


def test_run_key_ignores_bookkeeping_but_not_settings(tiny_experiment):
    cfg = tiny_experiment.config("FedPFT", 0)
    assert run_key(cfg, "cpu") == run_key(cfg.replace(output_dir="x", overwrite=True), "cpu")
    assert run_key(cfg, "cpu") != run_key(cfg.replace(align_fraction=0.3), "cpu")
    # a method default written out names the same run as the default itself
    assert run_key(cfg.replace(align_before=None), "cpu") == run_key(cfg, "cpu")
    assert run_key(cfg, "cpu") != run_key(cfg, "cuda")


def test_paper_scale_fails_fast_without_hub_or_gpu(tmp_path, monkeypatch):
    import fedpft_lite.utils as utils
    from fedpft_lite.models import HubUnreachableError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(utils, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(HubUnreachableError, match="lite experiments run offline"):
        reproduce("paper/table1/bert-base/sst2", tmp_path, device="cpu", progress=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")          # hub cache claimed: then the GPU check
    with pytest.raises(NeedsGPUError, match="--allow-cpu"):
        reproduce("paper/table1/bert-base/sst2", tmp_path, device="cpu", progress=False)
    assert not (tmp_path / "runs").exists()


def test_cli_lists_every_experiment_and_explains_missing_results(capsys, tmp_path):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in REGISTRY)
    assert main(["reproduce", "lite/table1", "--table-only", "--root", str(tmp_path)]) == 2
    assert "run `fedpft-lite reproduce lite/table1" in capsys.readouterr().err


def test_a_run_being_computed_elsewhere_is_not_touched(tiny_experiment, tmp_path):
    import os
    import subprocess

    from fedpft_lite.reproduce import _RunLock

    cfg = tiny_experiment.config("FedPETuning", 0)
    run_dir = tmp_path / "runs" / run_key(cfg, "cpu")
    run_dir.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (run_dir / ".lock").write_text(str(sleeper.pid))          # a live process holds it
        with pytest.raises(RuntimeError, match="being computed by process"):
            reproduce(tiny_experiment, tmp_path, cells=["FedPETuning"], progress=False)
        assert not (run_dir / "results.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with _RunLock(run_dir):                                       # a dead holder's lock is taken over
        assert (run_dir / ".lock").read_text() == str(os.getpid())
    assert not (run_dir / ".lock").exists()


# -- statistics: intervals and verdicts -------------------------------------------------------------
def test_mean_interval_matches_student_t_and_handles_one_seed():
    from fedpft_lite.stats import mean_interval

    iv = mean_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd 1.29099, t(0.975, 3) = 3.18245
    assert iv.mean == pytest.approx(2.5) and iv.n == 4
    assert iv.half == pytest.approx(3.18245 * 1.29099 / 2, rel=1e-4)
    one = mean_interval([0.7])
    assert one.mean == 0.7 and np.isnan(one.half) and not one.excludes_zero


def test_paired_difference_uses_common_seeds_and_says_not_distinguishable():
    from fedpft_lite.stats import describe_difference, paired_difference

    a = {0: 80.0, 1: 82.0, 2: 81.0, 3: 90.0}
    b = {0: 78.0, 1: 80.5, 2: 79.0}                # seed 3 has no partner: left out
    d = paired_difference(a, b)
    assert d.n == 3 and d.mean == pytest.approx(11 / 6)
    assert d.excludes_zero                        # 2, 1.5, 2: a steady gap
    assert describe_difference(d, "A", "B").endswith("A is better than B")
    noisy = paired_difference({0: 80.0, 1: 70.0, 2: 85.0}, {0: 79.0, 1: 72.0, 2: 84.0})
    assert not noisy.excludes_zero
    assert describe_difference(noisy, "A", "B").endswith("A and B are not distinguishable")
    assert "1 seed" in describe_difference(paired_difference({0: 1.0}, {0: 0.0}), "A", "B")


# -- what a client holds and sends, beside accuracy (issue 14) ----------------------------------
def test_cost_table_means_over_seeds_and_leaves_missing_columns_empty():
    summary = _fake_summary("lite/neighbourhood", {"FedOT": [0.5, 0.6], "FedPFT": [0.7, 0.8]})
    summary["mib_down_per_round"] = [1.0, 1.0, 6.0, 8.0]
    summary["client_params"] = [19e6, 19e6, 20e6, 20e6]
    summary["sent_params"] = [50e3, 50e3, 148e3, np.nan]      # one run without a record
    summary["seconds_per_round"] = [10.0, 30.0, 40.0, 50.0]
    costs = cost_table(summary)                                 # mib_up, setup_seconds: absent
    assert list(costs.index) == ["FedOT", "FedPFT"]
    assert costs.loc["FedPFT", "MiB down / round"] == 7.0 and costs.loc["FedOT", "s / round"] == 20.0
    assert costs.loc["FedPFT", "client params (M)"] == 20.0 and costs.loc["FedPFT", "sent params (k)"] == 148.0
    assert costs["MiB up / round"].isna().all() and costs["setup s"].isna().all()
    table = comparison_table("lite/neighbourhood", summary)    # an experiment with costs=True
    assert table.loc["FedOT", "client params (M)"] == 19.0 and "s / round" in table
    assert "| – |" in to_markdown(table)                        # missing values print as a dash
    assert "client params (M)" not in comparison_table("lite/table1", _fake_summary(
        "lite/table1", {"FedOT": [0.5], "FedPFT": [0.6]}))      # only where the experiment asks


def test_an_old_summary_is_read_and_a_reused_invocation_fills_in_the_costs(tiny_experiment, tmp_path):
    """A summary.csv (and runs) written before the cost columns existed: read with them empty, and
    rebuilt with them by an invocation that reuses every run (nothing trained again)."""
    import dataclasses

    exp = dataclasses.replace(tiny_experiment, costs=True)
    first = reproduce(exp, tmp_path, quick=False, progress=False)
    assert list(first.columns) == SUMMARY_COLUMNS
    assert first[COST_COLUMNS].notna().all().all()
    assert first.client_params.iloc[1] < first.client_params.iloc[0]      # FedPFT's sub-FM < the FM
    folder = tmp_path / "test/tiny"
    old = pd.read_csv(folder / "summary.csv").drop(columns=COST_COLUMNS)
    old.to_csv(folder / "summary.csv", index=False)
    for key in first.run:                         # runs of the time: no parameter counts in the log
        res = tmp_path / "runs" / key / "results.json"
        d = json.loads(res.read_text())
        del d["log"]["proxy_parameters"], d["log"]["trainable_parameters"]
        res.write_text(json.dumps(d))
    read = load_summary("test/tiny", tmp_path)
    assert list(read.columns) == SUMMARY_COLUMNS and read[COST_COLUMNS].isna().all().all()
    assert comparison_table(exp, read)["client params (M)"].isna().all()
    stamps = {k: (tmp_path / "runs" / k / "results.json").stat().st_mtime_ns for k in first.run}
    rebuilt = reproduce(exp, tmp_path, quick=False, progress=False)
    assert {k: (tmp_path / "runs" / k / "results.json").stat().st_mtime_ns for k in first.run} == stamps
    assert json.loads((folder / "meta.json").read_text())["invocations"][-1]["computed"] == 0
    # derived from proxy_bytes and the history: the same numbers the runs logged themselves
    pd.testing.assert_frame_equal(rebuilt[COST_COLUMNS[:2]], first[COST_COLUMNS[:2]])
    pd.testing.assert_frame_equal(rebuilt, load_summary("test/tiny", tmp_path))


def test_a_run_that_loaded_its_alignment_from_the_cache_has_no_setup_time(tmp_path):
    """The server's seconds before round 1 are the method's cost only where it computed them: a
    run that loaded the layer-level alignment from aligned/ reports none (not a 2-s 'cost' that
    would pull the mean of the runs that computed it down)."""
    from fedpft_lite.reproduce import client_costs
    log = {"proxy_parameters": 10, "trainable_parameters": 2, "setup_seconds": 1.7}
    res = {"seconds": 100.0, "rounds": 10, "log": log}
    computed = client_costs({**res, "log": {**log, "before_rounds": {"cached": None}}}, tmp_path)
    cached = client_costs({**res, "log": {**log, "before_rounds": {"cached": "aligned/x"}}}, tmp_path)
    assert computed["setup_seconds"] == 1.7 and cached["setup_seconds"] is None
    assert cached["seconds_per_round"] == computed["seconds_per_round"] == 10.0
