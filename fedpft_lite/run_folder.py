"""A run's output folder: what a finished run and an interrupted one leave there, and the rule
that nothing already computed is overwritten unless asked.

    <output_dir>/results.json            a finished run (with history.json/.csv, global_state)
    <output_dir>/checkpoint/checkpoint.json   an unfinished run, resumable (``resume=True``)

Light on purpose (no torch): the command line checks the folder before any heavy library or
model loads, so a refusal costs milliseconds, not a model load.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import FedConfig

CKPT = "checkpoint"
# Config fields that may differ between an interrupted run and its resumption.
RESUME_FREE = {"resume", "overwrite", "output_dir", "device", "eval_batch_size", "cache_dir"}
#: How an error names the two ways out; each caller names its own options (the command line's
#: ``run`` has ``--resume`` and ``--overwrite``; Python callers pass ``resume=True``).
PYTHON_OPTIONS = {"resume": "resume=True", "overwrite": "overwrite=True"}


def finished(out: str | Path) -> bool:
    return (Path(out) / "results.json").exists()


def checkpoint_file(out: str | Path) -> Path:
    return Path(out) / CKPT / "checkpoint.json"


def config_differences(saved: dict, cfg: FedConfig) -> list[str]:
    """Fields (other than :data:`RESUME_FREE`) in which ``cfg`` differs from a saved config."""
    b = cfg.to_dict()
    # a field added after the checkpoint was written had its default there
    saved = {**{k: v for k, v in FedConfig().to_dict().items() if k not in saved}, **saved}
    return sorted(k for k in set(saved) | set(b) if k not in RESUME_FREE and saved.get(k) != b.get(k))


def check_output_dir(cfg: FedConfig, options: dict | None = None) -> dict | None:
    """Refuse to clobber finished results or a checkpoint; return the checkpoint when resuming.

    ``options`` says how the caller's user asks to resume or overwrite (default: the Python
    keywords), so that every message names an option the caller really has."""
    if cfg.output_dir is None:
        return None
    say = {**PYTHON_OPTIONS, **(options or {})}
    out = Path(cfg.output_dir)
    done, ckpt = out / "results.json", checkpoint_file(out)
    if cfg.overwrite:
        return None
    if cfg.resume:
        if done.exists():
            raise FileExistsError(f"{out} holds a finished run (results.json); nothing to resume")
        if not ckpt.exists():
            raise FileNotFoundError(f"{say['resume']} but {ckpt} does not exist")
        saved = json.loads(ckpt.read_text())
        diff = config_differences(saved["config"], cfg)
        if diff:
            raise ValueError(f"cannot resume: config differs from the checkpoint's in {diff}")
        return saved
    if done.exists():
        raise FileExistsError(f"{out} already holds a finished run's results; pass {say['overwrite']} "
                              "to replace them, or choose another output folder")
    if ckpt.exists():
        raise FileExistsError(f"{out} holds a checkpoint of an unfinished run; pass {say['resume']} "
                              f"to continue it, or {say['overwrite']} to start over")
    return None
