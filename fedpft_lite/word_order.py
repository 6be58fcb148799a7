"""``bbc-word-order``: is this BBC sentence as written, or has a span of its words been reversed?

Why this task. On ``bbc-news`` topics a frozen MiniLM with a linear probe (83.4 %) beats every
federated fine-tuning method, so nothing can be told apart there. Sentence-embedding models are
trained to make topic and similarity linearly readable from pooled features, so any task of that
shape (topic, "same article?", "does B follow A?") is solved frozen. Word order is different: a
corrupted sentence has exactly the same words, so the sentence embedding (the last layer, mean
pooled) barely changes and a linear probe on it stays near chance (59 %). The middle layers do
notice a reversed span: a probe on all layers pooled reaches 76 % with all 23,246 training
sentences (data/results/probe_bbc-word-order_minilm*.json), and fine-tuning does better still.
That is also why the methods separate: the word-order signal lives in the middle layers, which is
exactly what the proxy methods cut (FedOT drops layers, FedPFT thins their FFNs).

Construction (real BBC text, one seeded pass per split):

* sentences of ``bbc-news`` (article bodies, >= 6 words), the articles split as in ``bbc-news``;
  1/7 of its training articles (10 % of all, stratified by topic) become ``validation``, so
  settings are chosen without looking at ``test``. The corpus repeats some sentences (a few
  articles appear twice): each distinct sentence is kept once, in the first split that has it
  (train, then public, then test), so no sentence is both an original and a corrupted example,
  and none seen in training is tested;
* in each split, half of the sentences that can be corrupted are: ``label 0`` ("reversed"), one
  span of ``SPAN`` = 3 adjacent words in reversed order, never touching the first or the last
  word, at a position where reversing changes the sentence (its first and last word differ);
  the other sentences stay as written: ``label 1`` ("original"). An original and a corrupted
  example are always different sentences, so no pair of examples gives the answer away;
* ``public`` (the server's distillation text, articles no client owns) is built the same way and
  loses its labels.

Words are whitespace tokens, punctuation attached ("said," moves with its comma).
"""
from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

SPAN = 3
LABELS = ["reversed", "original"]          # label 1 = the sentence as written
VALIDATION_SHARE = 1 / 7                   # of bbc-news' training articles (10 % of all)


def reversible_starts(words: list[str], span: int = SPAN) -> list[int]:
    """Start positions s where reversing words[s:s+span] changes the sentence and touches neither
    the first nor the last word (1 <= s and s + span <= len - 1)."""
    return [s for s in range(1, len(words) - span) if words[s] != words[s + span - 1]]


def reverse_span(sentence: str, start: int, span: int = SPAN) -> str:
    words = sentence.split()
    words[start:start + span] = words[start:start + span][::-1]
    return " ".join(words)


def corrupt_half(sentences: list[str], rng: np.random.Generator, span: int = SPAN) -> dict[str, list]:
    """Label half of ``sentences`` "reversed" (one span reversed), the others "original".

    Returns columns ``text``, ``label`` and ``span_start`` (-1 for originals). Only sentences with
    at least one reversible span may be corrupted; originals keep their exact text (whitespace
    included), corrupted ones are re-joined with single spaces, as are originals that had runs of
    spaces, so spacing never tells the two apart."""
    words = [s.split() for s in sentences]
    starts = [reversible_starts(w, span) for w in words]
    candidates = [i for i, st in enumerate(starts) if st]
    n_corrupt = min(len(sentences) // 2, len(candidates))
    chosen = set(rng.permutation(candidates)[:n_corrupt].tolist())
    text, label, span_start = [], [], []
    for i, w in enumerate(words):
        if i in chosen:
            s = int(rng.choice(starts[i]))
            text.append(reverse_span(sentences[i], s, span))
            label.append(0)
            span_start.append(s)
        else:
            text.append(" ".join(w))
            label.append(1)
            span_start.append(-1)
    return {"text": text, "label": label, "span_start": span_start}


def _validation_articles(articles: list[str], split_seed: int) -> set[str]:
    """A topic-stratified, seeded share of the training articles (names look like 'topic/123')."""
    from .data import _stratified_split

    unique = sorted(set(articles))
    topics = np.array([a.split("/")[0] for a in unique])
    _, codes = np.unique(topics, return_inverse=True)
    parts = _stratified_split(codes, {"validation": VALIDATION_SHARE, "train": 1 - VALIDATION_SHARE},
                              split_seed + 1)
    return {unique[i] for i in parts["validation"]}


def load_bbc_word_order(split_seed: int = 0) -> DatasetDict:
    """The ``bbc-word-order`` task: splits train / validation / public / test, columns ``text``,
    ``label`` (ClassLabel ``reversed`` / ``original``; none in ``public``), ``article`` and
    ``span_start`` (where the reversed span starts, -1 for originals)."""
    from .data import load_bbc_news

    news = load_bbc_news(split_seed=split_seed)
    val = _validation_articles(news["train"]["article"], split_seed)
    groups = {"train": [], "validation": [], "public": [], "test": []}
    seen: set[str] = set()        # BBC repeats some sentences (and articles): each one appears once
    for split in ("train", "public", "test"):
        for text, article in zip(news[split]["text"], news[split]["article"]):
            target = "validation" if split == "train" and article in val else split
            key = " ".join(text.split())
            if key not in seen:
                seen.add(key)
                groups[target].append((text, article))
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS),
                         "article": Value("string"), "span_start": Value("int32")})
    out = {}
    for i, (split, rows) in enumerate(groups.items()):
        rng = np.random.default_rng(np.random.SeedSequence([split_seed, 0x0DE7, i]))
        cols = corrupt_half([t for t, _ in rows], rng)
        cols["article"] = [a for _, a in rows]
        ds = Dataset.from_dict(cols, features=features)
        out[split] = ds.remove_columns("label") if split == "public" else ds
    return DatasetDict(out)
