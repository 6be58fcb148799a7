"""One call from Python (tests, notebooks, benchmarks): an experiment through Flower's simulation.

``flwr run .`` is the command-line way (it reads ``[tool.flwr.app.config]``); this function runs
the same ServerApp and ClientApp in this process with Flower's Simulation Engine (Ray actors for
the ClientApps, the ServerApp in a thread), one virtual SuperNode per client, and returns the
history the ServerApp wrote.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..config import FedConfig
from ..history import History


def run_simulation(cfg: FedConfig, *, client_cpus: float = 1, total_cpus: int | None = None,
                   quiet: bool = True, **flower_settings) -> History:
    """Run ``cfg`` through Flower's simulation; returns its :class:`History` (read back from
    ``cfg.output_dir``, which defaults to a folder under the system temp dir).

    Args:
        client_cpus: CPUs per ClientApp actor (Ray runs ``total_cpus / client_cpus`` at once).
        total_cpus: CPUs Ray may use (default: all).
        quiet: keep Flower's and Ray's INFO logs and deprecation notices out of the output.
        flower_settings: Flower-only keys with underscores (``proxy_dir=...``).
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    from .client_app import make_client_app
    from .server_app import make_server_app

    from .settings import fedconfig_from_run_config

    overrides = {**cfg.to_dict(), **flower_settings}
    fedconfig_from_run_config({}, overrides)  # fail here, before Ray starts
    if overrides.get("output_dir") is None:  # else the ServerApp picks a folder we cannot find
        import tempfile
        overrides["output_dir"] = tempfile.mkdtemp(prefix="fedpft_lite_flower_")
    out = Path(overrides["output_dir"])
    overrides.setdefault("proxy_dir", str(out / "proxy"))
    init_args = {"num_cpus": total_cpus} if total_cpus else {}
    if quiet:
        init_args.update(logging_level="ERROR", log_to_driver=False)
    backend = {"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0}, "init_args": init_args}
    logger = logging.getLogger("flwr")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore", FutureWarning)
            flwr_run_simulation(server_app=make_server_app(overrides),
                                client_app=make_client_app(overrides),
                                num_supernodes=cfg.num_clients, backend_config=backend)
    finally:
        logger.setLevel(level)
    if not (out / "history.json").exists():
        raise RuntimeError(f"the Flower run wrote no history to {out}; see the log above")
    return History.load(out)
