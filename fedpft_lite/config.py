"""One dataclass for a federated experiment, loadable from YAML / JSON / the command line.

``validate()`` checks every field and combination *before* any model or data is loaded, so a
typo costs milliseconds, not a model download.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .catalog import (AGGREGATIONS, CRITERIA, IMAGE_TASKS, METHODS, OBJECTIVES, OFFLINE_TASKS,  # noqa: F401
                      PUBLIC_DATA_METHODS, SCHEMES, TASKS, task_source_error)


def _as_field_type(name: str, value):
    """YAML reads ``3e-3`` (no dot) as a string; give numeric fields numbers, so that
    ``--set lr=3e-3`` means what it says. Anything else is left for ``validate`` to judge."""
    f = {f.name: f for f in fields(FedConfig)}.get(name)
    if f is None or not isinstance(value, str):
        return value
    kind = str(f.type)
    for typ in (int, float):
        if kind.startswith(typ.__name__):
            try:
                return typ(value)
            except ValueError:
                return value
    return value


def _parse_yaml(text: str, what: str):
    """``yaml.safe_load`` whose syntax errors are a one-line ``ValueError`` naming the line and
    column (1-based), so the command line prints them without a traceback."""
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{what} is not valid YAML: {problem}{where}. Fix that spot (a value with "
                         "': ', '#', '[' or '{' in it needs quotes).") from None


#: The fields that say how a task's own file is read and split (see ``FedConfig.task_options``).
TASK_OPTIONS = ("text_column", "text_pair_column", "label_column", "image_column", "test_fraction",
                "public_fraction", "public_file")
#: Of those, the ones that only mean something for your own file (built-in tasks fix their columns).
OWN_FILE_OPTIONS = ("text_column", "text_pair_column", "label_column", "image_column", "test_fraction")


@dataclass
class FedConfig:
    # what
    method: str = "fedpft"                 # fedpft | fedot | fedpetuning | fedot-kd | fedbiot | crash
    model: str = "minilm"                  # hub id, local folder, or "minilm" (offline default)
    task: str = "bbc-word-order"           # the offline default; see fedpft_lite.data.TASKS
    # classification (a head on the pooled text / image) | causal-lm (a decoder's next-token loss
    # on the clients' text, evaluated by perplexity; labels, if any, only group the examples)
    objective: str = "classification"
    max_length: int = 64
    max_train: int | None = None           # seeded subsets (quick runs); None = all
    max_test: int | None = None
    max_public: int | None = None
    # your own data (task = a .csv/.tsv/.json/.jsonl file or an image folder): which columns hold
    # what, and how it is split. Label values become class names (sorted) and their ids are saved
    # in results.json. public_fraction also sets the hub tasks' held-out public share.
    text_column: str = "text"
    text_pair_column: str | None = None    # the second sentence of sentence-pair tasks
    label_column: str = "label"
    image_column: str | None = None        # a column of image file paths (relative to the file)
    test_fraction: float = 0.2             # of each class, for the test split (at least 1 each)
    public_fraction: float = 0.1           # of each class, held out unlabelled for the server
    public_file: str | None = None         # unlabelled public data instead (same input columns)
    # clients
    num_clients: int = 100
    fraction: float = 0.1                  # clients sampled per round (the paper: 10 %)
    partition: str = "iid"                 # iid | dirichlet | shards
    alpha: float = 1.0                     # Dirichlet concentration
    labels_per_client: int = 2             # shards
    min_client_size: int = 2
    # local training (the paper, text: AdamW, lr 8e-4, batch 16, 1 epoch, clip 1.0)
    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 8e-4
    lr_decay: str = "linear"               # linear (never 0: round r uses lr*(1 - (r-1)/R)) | none
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    aggregation: str = "weighted"          # weighted (by client examples) | uniform
    # how many sampled clients train together in one batched pass (fedpft_lite.batched): 1 = one
    # after another (default); n > 1 = groups of up to n, same states up to float rounding
    client_parallelism: int = 1
    # LoRA (the paper: r 8, alpha 48, dropout 0.1)
    lora_r: int = 8
    lora_alpha: int = 48
    lora_dropout: float = 0.1
    # FedPFT sub-FM
    keep_ratio: float = 0.25
    retained_layers: list = field(default_factory=lambda: [0, -1])
    criterion: str = "saliency"
    # FedPFT alignment (Module 2): before FL (layer-level) and every t rounds (neuron-level).
    # None = the method's default: both on for FedPFT (the paper's method), off otherwise; set
    # False for the ablation variants (FedPFT_N / _B / _D).
    align_before: bool | None = None
    align_during: bool | None = None
    align_every: int = 10                  # t
    align_fraction: float = 0.5            # p: share of least-active neurons updated
    align_steps: int = 100                 # distillation steps per alignment
    align_before_steps: int | None = None  # layer-level steps before FL (None: align_steps)
    align_lr: float = 6e-4
    # FedOT emulator (and FedOT-KD's, FedBiOT's, CRaSh's; FedOT-KD and FedBiOT distil it for
    # align_before_steps (FedBiOT: and align_steps every round) at align_lr)
    adapter_layers: int | None = None      # per end; None = n_layers // 6 (at least 1)
    emulator_layers: int | None = None     # None = match FedPFT's sub-FM size (CRaSh: clusters)
    # evaluation and bookkeeping
    eval_every: int = 1
    eval_proxy: str = "every"              # every | final | never: the proxy's own accuracy
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    amp: bool = True                       # bf16 autocast on CUDA only
    output_dir: str | None = None
    cache_dir: str | None = None           # reuse the server's layer-level alignment across runs
    checkpoint_every: int = 1
    resume: bool = False
    overwrite: bool = False

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "FedConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "FedConfig":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            d = _parse_yaml(text, f"config file {path}") or {}
        else:
            try:
                d = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"config file {path} is not valid JSON: {e.msg} at line {e.lineno}, "
                                 f"column {e.colno}. Fix that spot (or write the config as YAML).") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} must hold a mapping of config keys")
        return cls.from_dict(d)

    def replace(self, **changes) -> "FedConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, pairs: list[str]) -> "FedConfig":
        """Apply ``key=value`` strings (values parsed as YAML: 3, 0.5, true, null, [0, -1])."""
        d = self.to_dict()
        for pair in pairs:
            if "=" not in pair:
                raise ValueError(f"override {pair!r} must look like key=value")
            k, v = pair.split("=", 1)
            k = k.strip().replace("-", "_")
            d[k] = _as_field_type(k, _parse_yaml(v, f"the value of override {pair!r}"))
        return FedConfig.from_dict(d)

    # -- checks ----------------------------------------------------------------------------
    def validate(self) -> "FedConfig":
        errors = []

        def need(cond, msg):
            if not cond:
                errors.append(msg)

        for f in fields(self):  # types first: the range checks below compare numbers
            v, kind = getattr(self, f.name), str(f.type)
            if kind.startswith(("int", "float")) and v is not None:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
                need(ok and (kind.startswith("float") or isinstance(v, int)),
                     f"{f.name} must be {'an integer' if kind.startswith('int') else 'a number'}, got {v!r}")
        if errors:
            raise ValueError("invalid FedConfig:\n  - " + "\n  - ".join(errors))

        need(self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}")
        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(self.partition in SCHEMES, f"partition must be one of {SCHEMES}, got {self.partition!r}")
        need(self.aggregation in AGGREGATIONS, f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        need(self.criterion in CRITERIA, f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        need(self.lr_decay in ("linear", "none"), f"lr_decay must be 'linear' or 'none', got {self.lr_decay!r}")
        need(isinstance(self.num_clients, int) and self.num_clients >= 1, f"num_clients must be >= 1, got {self.num_clients}")
        need(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        need(isinstance(self.rounds, int) and self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        need(self.local_epochs >= 1, f"local_epochs must be >= 1, got {self.local_epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(type(self.client_parallelism) is int and self.client_parallelism >= 1,
             f"client_parallelism must be an integer >= 1 (1: clients train one after another; "
             f"n > 1: up to n clients together in one batched pass), got {self.client_parallelism}")
        need(self.alpha > 0, f"alpha (Dirichlet) must be > 0, got {self.alpha}")
        need(0 < self.keep_ratio <= 1, f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        need(self.lora_r >= 1, f"lora_r must be >= 1, got {self.lora_r}")
        need(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        need(self.align_steps >= 1, f"align_steps must be >= 1, got {self.align_steps}")
        need(self.align_before_steps is None or self.align_before_steps >= 1,
             f"align_before_steps must be >= 1 or null, got {self.align_before_steps}")
        need(self.align_every >= 1, f"align_every (t) must be >= 1, got {self.align_every}")
        need(0 < self.align_fraction <= 1, f"align_fraction (p) must be in (0, 1], got {self.align_fraction}")
        need(self.eval_proxy in ("every", "final", "never"),
             f"eval_proxy must be 'every', 'final' or 'never', got {self.eval_proxy!r}")
        need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        need(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        need(self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}")
        need(isinstance(self.seed, int) and self.seed >= 0, f"seed must be an int >= 0, got {self.seed}")
        for name in ("align_before", "align_during"):
            need(getattr(self, name) in (None, True, False), f"{name} must be true, false or null, "
                 f"got {getattr(self, name)!r}")
        for name in ("adapter_layers", "emulator_layers"):
            v = getattr(self, name)
            need(v is None or v >= 1, f"{name} must be >= 1 or null, got {v}")
        if self.method != "fedpft":
            need(not (self.align_before or self.align_during),
                 f"align_before/align_during are FedPFT's alignment; method {self.method!r} has none")
        if self.aligns_during and isinstance(self.rounds, int) and self.align_every >= 1:
            need(self.align_every < self.rounds,
                 f"neuron-level alignment every t={self.align_every} rounds never runs in a "
                 f"{self.rounds}-round run (an alignment after the last round could not reach the FM, "
                 "so none is done then): set align_every < rounds, or align_during=false")
        if self.resume:
            need(self.output_dir is not None, "resume=True needs output_dir (where the checkpoint is)")
        need(not (self.resume and self.overwrite), "resume and overwrite exclude each other")
        if self.max_train is not None:
            need(self.max_train >= self.num_clients,
                 f"max_train={self.max_train} is smaller than num_clients={self.num_clients}")
        errors += self._task_option_errors() + self._objective_errors()
        if errors:
            raise ValueError("invalid FedConfig:\n  - " + "\n  - ".join(errors))
        return self

    def _task_option_errors(self) -> list[str]:
        """What is wrong with the fields that read your own data (columns, splits, public file),
        found before any file or model is opened."""
        errors = []
        if isinstance(self.task, str) and (problem := task_source_error(self.task)):
            errors.append(problem)
        for name in ("text_column", "label_column"):
            if not (isinstance(getattr(self, name), str) and getattr(self, name)):
                errors.append(f"{name} must name a column of your file, got {getattr(self, name)!r}")
        for name in ("text_pair_column", "image_column", "public_file"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, str) and v):
                errors.append(f"{name} must be a column name / path or null, got {v!r}")
        named = [c for c in (self.text_column, self.text_pair_column, self.image_column) if c]
        if self.label_column in named or len(set(named)) < len(named):
            errors.append(f"text_column, text_pair_column, image_column and label_column must name "
                          f"different columns, got {named + [self.label_column]}")
        if not 0 < self.test_fraction < 1:
            errors.append(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.public_fraction < 1:
            errors.append(f"public_fraction must be in [0, 1), got {self.public_fraction}")
        elif 0 < self.test_fraction < 1 and self.test_fraction + self.public_fraction >= 1:
            errors.append(f"test_fraction + public_fraction = {self.test_fraction + self.public_fraction:g} "
                          "leaves nothing to train on: keep their sum below 1 (e.g. 0.2 and 0.1)")
        if isinstance(self.public_file, str) and self.public_file and not Path(self.public_file).exists():
            errors.append(f"public_file {self.public_file!r} does not exist: give the path of a "
                          ".csv/.tsv/.json/.jsonl file (or image folder) of unlabelled examples")
        defaults = {f.name: f.default for f in fields(self)}
        if self.task in TASKS:
            own = OWN_FILE_OPTIONS + (("public_fraction",) if self.task in OFFLINE_TASKS else ())
            changed = [k for k in own if getattr(self, k) != defaults[k]]
            if changed:
                errors.append(f"{', '.join(changed)} cannot be set for the built-in task "
                              f"{self.task!r} (it fixes its columns and splits): set task to the "
                              "path of your .csv/.tsv/.json/.jsonl file or image folder, or drop them")
        elif self.aligns_before or self.aligns_during:
            if self.public_file is None and self.public_fraction == 0:
                errors.append("FedPFT's alignment distils on public unlabelled data, and "
                              "public_fraction=0 with no public_file leaves none: set "
                              "public_fraction > 0 (e.g. 0.1), give public_file=..., or switch "
                              "the alignment off (align_before=false align_during=false)")
        elif self.method in PUBLIC_DATA_METHODS:
            if self.public_file is None and self.public_fraction == 0:
                errors.append(f"method {self.method!r} needs public unlabelled data on the server "
                              "(FedOT-KD and FedBiOT distil the emulator on it, CRaSh clusters "
                              "layers on it), and public_fraction=0 with no public_file leaves "
                              "none: set public_fraction > 0 (e.g. 0.1) or give public_file=...")
        return errors

    def _objective_errors(self) -> list[str]:
        """What cannot go with the objective: images or client batching for a language model,
        a text-only file for a classifier."""
        errors = []
        text_file = isinstance(self.task, str) and self.task.lower().endswith(".txt")
        if self.objective == "causal-lm":
            if self.task in IMAGE_TASKS or self.image_column is not None:
                errors.append(f"objective 'causal-lm' trains on text, and task {self.task!r} holds "
                              "images: give a text task (bbc-news, a .txt/.csv file of texts)")
            if self.client_parallelism != 1:
                errors.append("client_parallelism > 1 (batched clients) is built for classification "
                              "only: set client_parallelism=1 with objective 'causal-lm'")
        elif text_file:
            errors.append(f"task {self.task!r} is a .txt file: plain text with no labels, which only "
                          "objective 'causal-lm' can use. Set objective=causal-lm, or give a "
                          ".csv/.json file with a label column to train a classifier")
        return errors

    def task_options(self) -> dict:
        """Keyword arguments of :func:`fedpft_lite.data.load_task` that this config sets."""
        return {k: getattr(self, k) for k in TASK_OPTIONS}

    @property
    def aligns_before(self) -> bool:
        """Layer-level alignment before FL: on for FedPFT unless switched off."""
        return self.method == "fedpft" if self.align_before is None else bool(self.align_before)

    @property
    def aligns_during(self) -> bool:
        """Neuron-level alignment every t rounds: on for FedPFT unless switched off."""
        return self.method == "fedpft" if self.align_during is None else bool(self.align_during)

    def resolved(self) -> "FedConfig":
        """The same config with method defaults written out (``align_before``/``align_during``
        as booleans): what a run actually does, and what names its results."""
        return self.replace(align_before=self.aligns_before, align_during=self.aligns_during)

    @property
    def layer_level_steps(self) -> int:
        """Distillation steps of the layer-level alignment before FL."""
        return self.align_before_steps or self.align_steps

    @property
    def clients_per_round(self) -> int:
        return max(1, int(round(self.fraction * self.num_clients)))
