"""FedPFT, FedOT and FedPETuning as a Flower app: the same algorithm on real distributed clients.

Install the extra (``pip install "fedpft_lite[flower]"``); the rest of the package never imports
Flower. The app uses Flower's Message API:

* ``fedpft_lite.flower.server_app:app`` -- a ``ServerApp`` whose ``@app.main()`` runs
  :func:`fedpft_lite.federated.run_federated` with :class:`FlowerClients`: the server's setup,
  pre-FL alignment, seeded client sampling, FedAvg, neuron-level alignment, plug-back,
  evaluation, history and results are the in-process simulator's own code; only the clients'
  work travels, as messages, to SuperNodes.
* ``fedpft_lite.flower.client_app:app`` -- a ``ClientApp`` whose ``@app.train()`` runs
  :func:`fedpft_lite.federated.client_update` on the node's partition
  (``node_config["partition-id"]``).

What travels (see the README section "Beyond one machine: Flower"):

* once, before round 1: the proxy (never the full FM for FedPFT / FedOT), written by the server
  with ``FMClassifier.save_pretrained`` to ``proxy-dir``; clients load it from there (simulation)
  or from their own copy (deployment: ``--node-config "proxy-dir=..."``) and check its SHA-256;
* every round, server -> client: ``state`` (LoRA + head, FM naming), ``config`` (round, lr,
  partition id, whether to report activation statistics, the proxy's hash) and, for FedPFT once
  neuron-level alignment has run, ``proxy-patch`` (the aligned neurons' weights);
* client -> server: ``state``, ``metrics`` (examples, loss) and, in alignment rounds,
  ``activations`` (per-neuron near-zero counts).
"""
try:
    import flwr  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('fedpft_lite.flower needs Flower: pip install "fedpft_lite[flower]" '
                      '(or pip install "flwr[simulation]>=1.20")') from e

from .settings import FLOWER_DEFAULTS, fedconfig_from_run_config, run_dir  # noqa: E402

__all__ = ["FLOWER_DEFAULTS", "fedconfig_from_run_config", "run_dir", "run_simulation"]


def run_simulation(*args, **kwargs):
    """See :func:`fedpft_lite.flower.simulation.run_simulation` (imported lazily)."""
    from .simulation import run_simulation as run
    return run(*args, **kwargs)
