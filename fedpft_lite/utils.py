"""Small shared helpers: seeding, device choice, the quick setting, hub reachability.

Everything that more than one module needs lives here exactly once, so that a seed, a device or
the quick setting means the same thing in the package, the notebooks and the tests.
"""
from __future__ import annotations

import os
import random
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:   # torch and numpy are imported where they are used: the command line imports
    import torch     # this module to answer a typo before any heavy library loads

#: The environment variable the tests and CI set to make every notebook and demo small.
QUICK_ENV = "FEDPFT_LITE_QUICK"


def is_quick() -> bool:
    """True when the quick setting is on (``FEDPFT_LITE_QUICK`` set to anything but 0/false/empty).

    Notebooks read this once at the top: quick runs a few steps on a few hundred examples so
    ``pytest --nbmake notebooks/`` stays short on 2 CPU cores; unset, the same notebook runs the
    full-size experiment.
    """
    return env_flag(QUICK_ENV)


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to anything but 0/false/no/empty."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) from one integer.

    Returns a ``torch.Generator`` seeded the same way, for code that wants its own stream
    (data loaders, client sampling) without disturbing the global one.
    """
    import numpy as np
    import torch

    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A stable 31-bit seed from (seed, round, client, ...).

    Every random choice of a federated run (client sampling, data order, dropout masks, the
    server's distillation batches) draws from its own stream seeded this way, so a resumed run
    replays exactly what an uninterrupted one does. It lives here, below both ``federated`` and
    ``alignment``, so that neither has to import the other for it."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def pick_device(prefer: str | torch.device | None = "auto") -> torch.device:
    """Choose where to compute: CUDA, then Apple MPS, then CPU; or the device you force.

    ``prefer`` is ``"auto"`` (default), or any torch device string (``"cpu"``, ``"cuda:1"``,
    ``"mps"``). Forcing a device that is not present raises a clear error instead of failing
    deep inside a forward pass.
    """
    import torch

    if prefer is None or str(prefer) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(prefer)!r} was asked for but CUDA is not available; "
                           "use device='auto' or 'cpu'")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None)
                                     and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was asked for but Apple MPS is not available; "
                           "use device='auto' or 'cpu'")
    return device


class HubUnreachableError(OSError):
    """A hub model or dataset was asked for, it is not cached, and the hub cannot be reached."""


def hub_offline() -> bool:
    """Has the user switched the hub off (``HF_HUB_OFFLINE=1``, local cache only)?"""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub be reached right now? Answers within ``timeout`` seconds.

    ``huggingface_hub`` retries an unreachable host for about a minute before giving up; we ask
    once, quickly, so that an offline user gets a clear message at once instead of a hang.
    ``HF_HUB_OFFLINE=1`` means no, without asking the network.
    """
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def in_hub_cache(kind: str, repo_id: str) -> bool:
    """Does the local Hugging Face cache hold anything of this model or dataset repository?"""
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")
    if os.path.isdir(os.path.join(hub, f"{kind}s--{repo_id.replace('/', '--')}")):
        return True
    if kind == "dataset":   # datasets' own cache (prepared Arrow files)
        datasets_cache = os.environ.get("HF_DATASETS_CACHE") or os.path.join(home, "datasets")
        return os.path.isdir(os.path.join(datasets_cache, repo_id.replace("/", "___")))
    return False


def check_hub_needs(model: str, task: str) -> None:
    """Raise :class:`HubUnreachableError` at once when a run needs the hub (a hub model or task
    that is not in the local cache) and the hub cannot be reached: milliseconds, before any
    library loads, instead of an error after the imports (or a minute of retries)."""
    from .catalog import HUB_TASKS, OFFLINE_MODELS, offline_hint

    needs = []
    if model not in OFFLINE_MODELS and not os.path.isdir(model) and not in_hub_cache("model", model):
        needs.append(f"model {model!r}")
    if task in HUB_TASKS and not in_hub_cache("dataset", HUB_TASKS[task]["path"]):
        needs.append(f"task {task!r} ({HUB_TASKS[task]['path']})")
    if needs and not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub is unreachable"
        raise HubUnreachableError(f"{' and '.join(needs)} must come from the Hugging Face hub: "
                                  f"{why} and the local cache has neither. {offline_hint()}")


def count_parameters(module: "torch.nn.Module", trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
