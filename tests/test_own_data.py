"""Your own data from the command line: columns of any names, label strings mapped to ids (and
saved), a public split for FedPFT's alignment, and bad input named before any model loads.

The runs use the tiny random-init BERT of ``conftest.py`` (mechanics, not accuracy) on a CSV
whose columns are called ``review`` and ``stars``, through ``fedpft-lite run --set ...``.
"""
import csv
import json

import pytest
from PIL import Image

from fedpft_lite.cli import main
from fedpft_lite.config import FedConfig
from fedpft_lite.data import label_names, load_task

STARS = ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]   # the tiny model has 5 labels
WORDS = dict(zip(STARS, ["awful dull waste", "boring and slow", "fine but long", "good fun",
                         "great loved it"]))


def write_csv(path, rows, header=("id", "review", "stars")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def reviews(n=60):
    return [(i, f"{WORDS[STARS[i % 5]]} film number {i}", STARS[i % 5]) for i in range(n)]


@pytest.fixture
def my_csv(tmp_path):
    return write_csv(tmp_path / "my.csv", reviews())


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: bad input must be caught before one."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the bad input was found")
    monkeypatch.setattr("fedpft_lite.federated.load_foundation_model", refuse)


def quick_run_args(tiny_model, out, *sets):
    return ["run", "--no-progress", "--output-dir", str(out), "--set", f"model={tiny_model}",
            "num_clients=2", "fraction=1.0", "rounds=2", "batch_size=8", "max_length=32", "lora_r=4",
            "lr=5e-3", "device=cpu", "eval_batch_size=32", *sets]


# -- the three methods on a CSV with odd column names, from the command line ----------------------
@pytest.mark.parametrize("method, extra", [
    ("fedpetuning", []),
    ("fedot", []),
    ("fedpft", ["align_before=true", "align_during=true", "align_every=1", "align_steps=2",
                "align_before_steps=2"]),
])
def test_csv_with_any_column_names_runs_each_method(tiny_model, my_csv, tmp_path, method, extra):
    out = tmp_path / method
    rc = main(quick_run_args(tiny_model, out, f"task={my_csv}", "text_column=review",
                             "label_column=stars", f"method={method}", *extra))
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["labels"] == {str(i): s for i, s in enumerate(STARS)}   # id -> label string
    assert res["config"]["text_column"] == "review" and res["config"]["label_column"] == "stars"
    assert res["rounds"] == 2 and 0 <= res["fm_accuracy"] <= 1
    if method == "fedpft":   # both alignments ran, on the held-out public split
        before = res["log"]["before_rounds"]          # layer-level: distilled, distance measured
        assert before["layers"] and len(before["distance_after"]) == len(before["layers"])
        history = json.loads((out / "history.json").read_text())
        assert any(r["aligned"] for r in history)


# -- splits ------------------------------------------------------------------------------------------
def test_public_split_is_held_out_stratified_unlabelled_and_seeded(my_csv):
    ds = load_task(my_csv, text_column="review", label_column="stars")
    assert label_names(ds) == STARS
    assert "label" not in ds["public"].column_names and len(ds["public"]) == 5   # 10 % of each class
    texts = {k: set(ds[k]["text"]) for k in ds}
    assert texts["public"].isdisjoint(texts["train"]) and texts["public"].isdisjoint(texts["test"])
    assert texts["train"].isdisjoint(texts["test"])
    assert sum(map(len, texts.values())) == 60
    in_public = {t.split()[0] for t in texts["public"]}
    assert in_public == {w.split()[0] for w in WORDS.values()}   # every class gave its share
    again = load_task(my_csv, text_column="review", label_column="stars")
    other = load_task(my_csv, text_column="review", label_column="stars", split_seed=1)
    assert again["public"]["text"] == ds["public"]["text"] != other["public"]["text"]
    none = load_task(my_csv, text_column="review", label_column="stars", public_fraction=0)
    assert "public" not in none and len(none["train"]) == 50


def test_public_file_replaces_the_held_out_share(my_csv, tmp_path):
    public = write_csv(tmp_path / "unlabelled.csv", [(i, f"some unlabelled review {i}", "")
                                                      for i in range(7)])
    ds = load_task(my_csv, text_column="review", label_column="stars", public_file=public)
    assert ds["public"]["text"] == [f"some unlabelled review {i}" for i in range(7)]
    assert ds["public"].column_names == ["text"] and len(ds["train"]) + len(ds["test"]) == 60


def test_image_column_reads_paths_relative_to_the_file(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(12):
        Image.new("L", (8, 8), color=20 * i).save(tmp_path / "img" / f"{i}.png")
        rows.append((f"img/{i}.png", "dark" if i < 6 else "light"))
    path = write_csv(tmp_path / "pics.csv", rows, header=("photo", "kind"))
    ds = load_task(path, image_column="photo", label_column="kind", public_fraction=0)
    assert label_names(ds) == ["dark", "light"] and ds["train"].column_names == ["image", "label"]
    assert ds["train"][0]["image"].size == (8, 8)


def test_numeric_labels_sort_by_value(tmp_path):
    path = write_csv(tmp_path / "n.csv", [(i, f"text {i}", [2, 10, 1][i % 3]) for i in range(30)])
    assert label_names(load_task(path, text_column="review", label_column="stars")) == ["1", "2", "10"]


def test_new_fields_leave_earlier_run_keys_unchanged():
    """Keys computed by the engine before these fields existed (same configs, same device)."""
    from fedpft_lite.alignment import alignment_cache_key
    from fedpft_lite.reproduce import run_key

    for cfg, key, aligned in ((FedConfig(), "203d2aa86b2d", "c1b62522e77b"),
                              (FedConfig(method="fedot", task="sst2", rounds=5), "edc0471d98c9",
                               "362a69526603")):
        assert run_key(cfg, "cpu") == key
        assert alignment_cache_key(cfg.resolved(), "cpu") == aligned
    assert run_key(FedConfig(public_fraction=0.2, task="sst2"), "cpu") != run_key(FedConfig(task="sst2"), "cpu")


# -- bad input: named, with its fix, before any model loads -------------------------------------------
def run_error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedpft-lite: error: ") and "Traceback" not in err
    return err


OWN = ["text_column=review", "label_column=stars"]


@pytest.mark.parametrize("rows, sets, expected", [
    (lambda r: r[:2] + [(2, "no label here", "")] + r[3:], OWN,
     ["data row 3", "the header line not counted", "no label in column 'stars'", "Write a label"]),
    (lambda r: r + [(60, "rare", "0 stars")], OWN,
     ["class '0 stars'", "has 1 example", "needs at least 2", "Add examples of '0 stars'"]),
    (lambda r: r, ["text_column=body", "label_column=stars"],
     ["no text column 'body'", "['id', 'review', 'stars']", "text_column=..."]),
    (lambda r: r, ["text_column=review"],
     ["no label column 'label'", "['id', 'review', 'stars']", "label_column=..."]),
    (lambda r: r[:4] + [(4, None, STARS[1])] + r[5:], OWN,
     ["data row 5", "nothing in column 'review'"]),
])
def test_bad_file_is_named_before_any_model_loads(tmp_path, capsys, no_model, rows, sets, expected):
    path = write_csv(tmp_path / "bad.csv", rows(reviews()))
    err = run_error(capsys, ["run", "--set", f"task={path}", *sets])
    for piece in expected:
        assert piece in err, err


def test_missing_label_in_json_names_the_record(tmp_path, capsys, no_model):
    records = [{"review": t, "stars": s} for _, t, s in reviews(30)]
    del records[6]["stars"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    err = run_error(capsys, ["run", "--set", f"task={path}", *OWN])
    assert "record 7 (records counted from 1)" in err and "no label in column 'stars'" in err


@pytest.mark.parametrize("sets, expected", [
    (["task=bbc-news", "text_column=review"], "text_column cannot be set for the built-in task 'bbc-news'"),
    (["public_file=nowhere.csv"], "public_file 'nowhere.csv' does not exist"),
    (["public_fraction=0"], "public_fraction=0 with no public_file leaves none"),
    (["public_fraction=0.9"], "leaves nothing to train on"),
    (["label_column=review"], "must name different columns"),
])
def test_bad_options_are_named_before_any_model_loads(my_csv, capsys, no_model, sets, expected):
    err = run_error(capsys, ["run", "--set", f"task={my_csv}", "text_column=review", *sets])
    assert expected in err, err


def test_yaml_syntax_errors_name_line_and_column(tmp_path, capsys, no_model):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("method: fedpft\nrounds: [2\nlr: 0.01\n")
    err = run_error(capsys, ["run", "--config", str(cfg)])
    assert f"config file {cfg} is not valid YAML" in err and "line 3, column 3" in err, err
    err = run_error(capsys, ["run", "--set", "retained_layers=[0,"])
    assert "override 'retained_layers=[0,' is not valid YAML" in err and "line 1" in err, err
    js = tmp_path / "bad.json"
    js.write_text('{"rounds": 2,\n "lr": }')
    assert "line 2, column 8" in run_error(capsys, ["run", "--config", str(js)])
