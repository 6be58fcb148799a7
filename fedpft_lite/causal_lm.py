"""Causal-LM fine-tuning: a decoder trained on its clients' text with the next-token loss.

The second task kind (``FedConfig.objective = "causal-lm"``; the first is classification). The
model is an :class:`FMLanguageModel`: the decoder's *backbone* (``LlamaModel``, ``Qwen2Model``,
``GPT2Model``, ...: the ``base_model`` of its ``AutoModelForCausalLM``) plus its own frozen
``lm_head``. Everything FedPFT does happens in the backbone, exactly as for a classifier: the
sub-FM compresses its FFNs, the alignments distil its layers' hidden states, a FedOT emulator
drops its middle layers, and LoRA sits on its attention projections. What differs:

* **no trainable head**: the LM head maps to the whole vocabulary (and is often the input
  embedding matrix itself, tied), so clients train and send LoRA only;
* **the loss** is the mean next-token cross-entropy over the text's real tokens (the label of
  position t is token t + 1; padding is ignored, label ``-100``), as the family's
  ``*ForCausalLM`` computes it;
* **evaluation** reports the same two numbers under the same names (``accuracy``: the share of
  next tokens predicted exactly, top-1; ``loss``: the mean next-token cross-entropy in nats) and
  ``perplexity = exp(loss)``, the usual language-model score: lower is better.

Where a task has labels (``bbc-news``'s topic, a file's ``label_column``), they are kept as the
examples' *group*: the Dirichlet and shard partitions read them, so clients can be non-IID by
topic or by any column of your file (one source per client: ``partition=shards
labels_per_client=1``). They are not scored: a label-scoring evaluation (the label as text) is
not built.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from .arch import arch_of
from .catalog import OBJECTIVES  # noqa: F401 (the task kinds: defined there)
from .models import (META_FILE, WEIGHTS_FILE, apply_structure, is_decoder, linearise_conv1d, takes_argument,
                     write_model_folder)

#: Config fields with which a family's ``*ForCausalLM`` changes the logits after its head (Gemma 2's
#: soft-capping, Cohere's scale): refused rather than silently computed without.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale")
#: Label of a position that carries no loss (padding; PyTorch's ``ignore_index``).
IGNORE = -100


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of predicting token t + 1 from positions up to t: ``logits[:, :-1]``
    against ``labels[:, 1:]``, positions labelled :data:`IGNORE` left out."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return nn.functional.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                                       reduction=reduction)


@torch.no_grad()
def next_token_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int]:
    """(summed next-token loss, tokens predicted exactly, tokens scored) of one batch."""
    target = labels[:, 1:]
    scored = target != IGNORE
    correct = int(((logits[:, :-1].argmax(-1) == target) & scored).sum())
    return float(next_token_loss(logits, labels, reduction="sum")), correct, int(scored.sum())


class FMLanguageModel(nn.Module):
    """A decoder backbone with its own frozen language-model head (see the module docstring).

    Shares :class:`~fedpft_lite.models.FMClassifier`'s interface where FedPFT touches it
    (``backbone``, ``config``, ``structure``, ``modality``, ``save_pretrained`` /
    ``from_pretrained``), so every method builds its proxy from it unchanged."""

    base_model_prefix = "backbone"
    objective = "causal-lm"

    def __init__(self, backbone: nn.Module, lm_head: nn.Module):
        super().__init__()
        if not is_decoder(backbone.config):
            raise ValueError(f"objective 'causal-lm' needs a decoder language model (Llama, Qwen2, "
                             f"Mistral, Gemma, GPT-2, Phi, ...); {backbone.config.model_type!r} is "
                             "not one: use objective 'classification' for it")
        changed = [k for k in LOGIT_TRANSFORMS if getattr(backbone.config, k, None) not in (None, 1, 1.0)]
        if changed:
            raise ValueError(f"{backbone.config.model_type!r} transforms its logits after the LM head "
                             f"({', '.join(changed)}), which this wrapper does not reproduce: its "
                             "perplexities would be wrong. Use a family without it (Llama, Qwen2, "
                             "Mistral, Gemma 1, GPT-2, Phi) or objective 'classification'")
        linearise_conv1d(backbone)
        arch_of(backbone)   # fail early on an unsupported family
        self.backbone = backbone
        self.config = backbone.config
        self.lm_head = lm_head
        for p in self.lm_head.parameters():
            p.requires_grad_(False)
        self.structure: dict = {}

    @property
    def modality(self) -> str:
        return "text"

    @property
    def tied(self) -> bool:
        """Whether the LM head *is* the input embedding matrix (one tensor, two uses)."""
        return self.lm_head.weight is self.backbone.get_input_embeddings().weight

    def forward(self, input_ids=None, attention_mask=None, labels=None, output_hidden_states: bool = False,
                **unused) -> CausalLMOutput:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if takes_argument(self.backbone, "use_cache"):
            kwargs["use_cache"] = False   # as for a classifier: no generation, and emulator layers
        out = self.backbone(**kwargs, output_hidden_states=output_hidden_states)
        logits = self.lm_head(out.last_hidden_state)
        loss = next_token_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(loss=loss, logits=logits,
                              hidden_states=out.hidden_states if output_hidden_states else None)

    # -- saving and loading ----------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike, preprocessor=None) -> Path:
        """``config.json``, ``model.safetensors`` (a tied head stored once, as the embeddings)
        and ``fedpft_lite.json`` (objective, tying, sub-FM / emulator structure)."""
        meta = {"objective": self.objective, "tied": self.tied, "head_bias": self.lm_head.bias is not None,
                "structure": self.structure}
        return write_model_folder(self, folder, meta, preprocessor,
                                  skip=("lm_head.weight",) if self.tied else ())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "FMLanguageModel":
        from transformers import AutoConfig, AutoModel

        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        backbone = AutoModel.from_config(config)
        linearise_conv1d(backbone)
        embeddings = backbone.get_input_embeddings()
        head = nn.Linear(embeddings.weight.shape[1], embeddings.weight.shape[0], bias=meta["head_bias"])
        if meta["tied"]:
            head.weight = embeddings.weight
        model = cls(backbone, head)
        apply_structure(model, meta["structure"])
        state = load_file(str(folder / WEIGHTS_FILE))
        model.load_state_dict(state, strict=not meta["tied"])
        if meta["tied"]:   # the head is the embeddings again: only that key may be absent
            missing = set(model.state_dict()) - set(state)
            if missing != {"lm_head.weight"}:
                raise KeyError(f"{folder}: weights missing for {sorted(missing)[:3]}")
        return model.eval()


def load_language_model(source: str, local: bool, dtype: torch.dtype | None = None) -> FMLanguageModel:
    """An :class:`FMLanguageModel` from a causal-LM checkpoint (hub id or folder), resolved by
    :func:`fedpft_lite.models.resolve_model_source`, or from a folder this package saved."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(source)
    if (folder / META_FILE).exists():
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("objective") != "causal-lm":
            raise ValueError(f"{folder} holds a classifier saved by this package, not a language "
                             "model: use objective 'classification' with it")
        return FMLanguageModel.from_pretrained(folder)
    config = AutoConfig.from_pretrained(source, local_files_only=local)
    if not is_decoder(config):
        raise ValueError(f"objective 'causal-lm' needs a decoder language model; {source!r} is a "
                         f"{config.model_type!r} model: use objective 'classification' for it")
    kwargs = {"local_files_only": local, **({"dtype": dtype} if dtype is not None else {})}
    causal = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return FMLanguageModel(causal.base_model, causal.get_output_embeddings()).eval()


def prepare_tokenizer(tokenizer):
    """Decoder tokenizers often have no padding token: pad with the end-of-text token (the
    padded positions are masked out of attention and loss, so which id fills them is moot)."""
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# -- a stand-in for offline tries: never presented as a pretrained model ---------------------------
TINY_DECODER_CARD = """# tiny random-init {family} (not a pretrained model)

Written by `fedpft_lite.causal_lm.write_tiny_decoder` (seed {seed}): `{cls}` with hidden {hidden},
{layers} layers, FFN {ffn}, **random weights, never trained**, and the MiniLM (BERT WordPiece)
tokenizer. For checking that decoder runs work offline. Any perplexity or accuracy measured with
it says nothing about a method: use a pretrained decoder (e.g. HuggingFaceTB/SmolLM2-135M) for
results.
"""
#: Families :func:`write_tiny_decoder` can write, and their config fields (GPT-2 names its own).
TINY_DECODER_FAMILIES = ("llama", "qwen2", "mistral", "gpt2")


def write_tiny_decoder(folder: str | os.PathLike, family: str = "llama", seed: int = 0,
                       hidden: int = 64, layers: int = 4, ffn: int = 128) -> Path:
    """Write a tiny **random-init** ``*ForCausalLM`` of ``family`` (seeded, untrained) with the
    MiniLM tokenizer to ``folder``, plus a README that says so: the stand-in for a hub decoder
    when none can be downloaded (no decoder weights install from the package registries). Runs
    on it check mechanics only."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .models import load_foundation_model

    if family not in TINY_DECODER_FAMILIES:
        raise ValueError(f"family must be one of {TINY_DECODER_FAMILIES}, got {family!r}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty: choose a new folder")
    _, tok = load_foundation_model("minilm", num_labels=2)
    if family == "gpt2":
        fields = dict(n_embd=hidden, n_layer=layers, n_head=4, n_inner=ffn, n_positions=256)
    else:
        fields = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=ffn, max_position_embeddings=256,
                      tie_word_embeddings=True)
    config = AutoConfig.for_model(family, vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id,
                                  bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, **fields)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "README.md").write_text(TINY_DECODER_CARD.format(
        family=family, seed=seed, cls=type(model).__name__, hidden=hidden, layers=layers, ffn=ffn))
    return folder

