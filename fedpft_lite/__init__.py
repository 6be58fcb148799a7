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

from .arch import ARCHITECTURES, arch_of, supported_families
from .data import encode, label_names, load_task, make_loader
from .evaluation import evaluate, linear_probe
from .models import FMClassifier, HubUnreachableError, load_foundation_model
from .partition import partition, partition_summary, plot_partition
from .utils import is_quick, pick_device, seed_everything

__all__ = [
    "ARCHITECTURES", "arch_of", "encode", "label_names", "load_task", "make_loader", "evaluate",
    "linear_probe", "FMClassifier", "HubUnreachableError", "load_foundation_model", "partition",
    "partition_summary", "plot_partition", "is_quick", "pick_device", "seed_everything",
    "supported_families",
]
