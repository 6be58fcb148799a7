"""fedpft_lite: Federated Proxy Fine-Tuning (FedPFT, Peng et al., IJCAI 2024) of foundation models.

Where each piece of the algorithm lives:

=====================  ===========================================================
``models``             load a foundation model (FM) with a classification head
``data``               load a task (offline defaults or the hub), tokenise, batch
``partition``          split the training set among clients (IID, Dirichlet, shards)
``arch``               per family: layers, FFN linears, attention (table or discovered)
``evaluation``         accuracy, linear probe
``utils``              seed, device, quick setting
=====================  ===========================================================
"""
__version__ = "0.1.0"

# The names below load on first use (PEP 562), not when the package is imported: the command line
# (``fedpft_lite.cli``) and ``FedConfig`` then answer in milliseconds, before torch, transformers
# or datasets is imported. ``from fedpft_lite import load_task`` works as before.
_LAZY = {
    "ARCHITECTURES": "arch", "arch_of": "arch", "supported_families": "arch",
    "encode": "data", "label_names": "data", "load_task": "data", "make_loader": "data",
    "evaluate": "evaluation", "linear_probe": "evaluation", "FMLanguageModel": "causal_lm",
    "FMClassifier": "models", "HubUnreachableError": "models", "load_foundation_model": "models",
    "is_quick": "utils", "pick_device": "utils", "seed_everything": "utils",
}
# partition.py needs only numpy, and its function shares the submodule's name: bound here, at
# import, so ``fedpft_lite.partition`` is the function whatever is imported first (as before).
from .partition import partition, partition_summary, plot_partition  # noqa: E402

__all__ = sorted([*_LAZY, "partition", "partition_summary", "plot_partition"])


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value      # later lookups skip this function
        return value
    raise AttributeError(f"module 'fedpft_lite' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
