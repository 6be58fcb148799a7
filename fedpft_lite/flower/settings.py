"""Flower run config <-> :class:`~fedpft_lite.config.FedConfig`.

Flower passes the app's settings as a flat run config (``[tool.flwr.app.config]`` in
``pyproject.toml``, overridden by ``flwr run . --run-config "rounds=5 method='fedot'"``).
Every key is a ``FedConfig`` field in kebab case (``num-clients``, ``align-every``), plus the few
Flower-only keys in :data:`FLOWER_DEFAULTS`. TOML has no null and Flower no lists, so fields
whose value is not a string (``retained-layers``, ``max-public``, ...) accept a YAML string:
``retained-layers = "[0, -1]"``, ``max-public = "null"``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli, which Flower itself depends on
    import tomli as tomllib

from ..config import FedConfig

#: Flower-only settings (not part of the experiment's FedConfig).
FLOWER_DEFAULTS = {
    # Where the server publishes the proxy and clients read it. Empty: a folder per run under
    # the system temp dir (server and simulated clients share a machine). In a deployment,
    # each SuperNode names its own copy with --node-config "proxy-dir=/path".
    "proxy-dir": "",
    # How long the server waits, before round 1, for one SuperNode per partition to connect and
    # say which partition it holds (a partition still without a node then is an error).
    "node-wait-s": 300.0,
    # How long the server waits for one round's replies; a client that has not replied by then
    # is a straggler: left out of the round and recorded as failed ("timeout"); its late reply
    # is dropped.
    "round-timeout-s": 3600.0,
    # The fewest replies a round aggregates. Fewer (nodes gone, ClientApps raising, stragglers):
    # the run stops with an error, the round is not kept and the last checkpoint stays as it was.
    "min-replies": 1,
}

#: The testing hook (for fault-injection tests; never set it in a real run): an environment
#: variable the ClientApp and the ServerApp read, entries separated by ";":
#: ``raise partition=K round=R`` (that ClientApp raises), ``sleep partition=K round=R seconds=S``
#: (it replies S seconds late; with ``until=PATH`` it replies as soon as PATH exists, at most S
#: seconds late: a condition, not a duration, so "late" stays late on a busy machine),
#: ``kill-server round=R`` (the ServerApp SIGKILLs itself when round R starts, after round R-1's
#: checkpoint).
TEST_FAULT_ENV = "FEDPFT_LITE_TEST_FAULT"

#: Node config keys a SuperNode may set for itself (besides partition-id / num-partitions).
NODE_KEYS = ("proxy-dir", "device")


def _field_defaults() -> dict:
    cfg = FedConfig()
    return {f.name: getattr(cfg, f.name) for f in fields(FedConfig)}


#: Methods whose proxy the Flower app cannot publish and keep current, and why.
NOT_ON_FLOWER = {
    "fedbiot": "its server re-aligns the emulator every round, and nodes only ever load the proxy "
               "published before round 1 (no emulator patch is sent)",
    "crash": "its proxy ties layers (one module in several slots), which the published proxy "
             "folder (save_pretrained) does not represent",
}


def fedconfig_from_run_config(run_config: dict, overrides: dict | None = None,
                              node_config: dict | None = None) -> tuple[FedConfig, dict]:
    """(validated FedConfig, Flower settings) from a Flower run config.

    ``overrides`` (FedConfig fields or Flower keys, either spelling) win over the run config
    (``make_server_app(overrides)``, ``make_client_app(overrides)``; :func:`fedpft_lite.flower.run_simulation`
    instead writes the experiment as the app's config, see :func:`run_config`).
    ``node_config`` may set ``proxy-dir`` and ``device`` for one SuperNode. Unknown keys and bad
    values fail here, with the message of :meth:`FedConfig.validate`.
    """
    import yaml

    defaults = _field_defaults()
    merged = dict(run_config or {})
    merged.update({k.replace("_", "-"): v for k, v in (overrides or {}).items()})
    for k in NODE_KEYS:
        if node_config and k in node_config:
            merged[k] = node_config[k]
    flower = dict(FLOWER_DEFAULTS)
    values, unknown = {}, []
    for key, value in merged.items():
        if key in FLOWER_DEFAULTS:
            flower[key] = value
            continue
        name = key.replace("-", "_")
        if name not in defaults:
            unknown.append(key)
            continue
        if isinstance(value, str) and not isinstance(defaults[name], str):
            value = yaml.safe_load(value)  # "[0, -1]", "null", "3"
        values[name] = value
    if unknown:
        raise ValueError(f"unknown Flower run config keys {sorted(unknown)}; use FedConfig fields "
                         f"in kebab case ({', '.join(sorted(k.replace('_', '-') for k in defaults))}) "
                         f"or {sorted(FLOWER_DEFAULTS)}")
    cfg = FedConfig.from_dict(values).validate()
    if cfg.method in NOT_ON_FLOWER:
        raise ValueError(f"method {cfg.method!r} does not run on the Flower app yet: "
                         f"{NOT_ON_FLOWER[cfg.method]}; run it in process (fedpft-lite run / reproduce)")
    if cfg.client_parallelism != 1:
        raise ValueError(f"client_parallelism={cfg.client_parallelism} batches clients in one "
                         "process; on the Flower app each SuperNode trains its own client: set "
                         "client_parallelism=1 (or run in process: fedpft-lite run)")
    for key in ("node-wait-s", "round-timeout-s"):
        if not float(flower[key]) > 0:
            raise ValueError(f"{key} must be > 0 seconds, got {flower[key]!r}")
    if not 1 <= int(flower["min-replies"]) <= cfg.clients_per_round:
        raise ValueError(f"min-replies must be in 1..{cfg.clients_per_round} (the clients sampled per "
                         f"round: fraction x num-clients), got {flower['min-replies']!r}")
    return cfg, flower


def run_config(cfg: FedConfig, **flower_settings) -> dict:
    """The Flower run config for ``cfg``: the inverse of :func:`fedconfig_from_run_config`.

    Every field in kebab case; ``None`` and lists become the YAML strings TOML and Flower accept
    (``"null"``, ``"[0, -1]"``). ``flower_settings`` (``proxy_dir=...``) add Flower-only keys.
    """
    out = {}
    for name, value in {**cfg.to_dict(), **flower_settings}.items():
        key = name.replace("_", "-")
        if key not in FLOWER_DEFAULTS and name not in _field_defaults():
            raise ValueError(f"unknown setting {name!r}")
        out[key] = "null" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def app_config(pyproject: str | Path) -> dict:
    """``[tool.flwr.app.config]`` of a Flower app's ``pyproject.toml`` ({} if it has none)."""
    project = tomllib.loads(Path(pyproject).read_text())
    return project.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})


def run_dir(run_id: int) -> Path:
    """The default per-run folder (proxy, results) when the run config names none."""
    return Path(tempfile.gettempdir()) / "fedpft_lite_flower" / str(run_id)


def proxy_dir(flower: dict, cfg: FedConfig, run_id: int) -> Path:
    """Where the proxy is published: ``proxy-dir``, else ``output_dir/proxy`` (kept with the
    checkpoint, so a resumed run finds the proxy the nodes already hold), else a per-run folder."""
    if flower.get("proxy-dir"):
        return Path(flower["proxy-dir"]).expanduser()
    return Path(cfg.output_dir) / "proxy" if cfg.output_dir else run_dir(run_id) / "proxy"


def injected_faults(kind: str) -> list[dict]:
    """The entries of the testing hook :data:`TEST_FAULT_ENV` of one ``kind`` (ints, floats)."""
    out = []
    for entry in filter(None, (e.strip() for e in os.environ.get(TEST_FAULT_ENV, "").split(";"))):
        name, *pairs = entry.split()
        if name not in ("raise", "sleep", "kill-server"):
            raise ValueError(f"{TEST_FAULT_ENV}: unknown fault {name!r} in {entry!r}")
        if name == kind:
            out.append({k: float(v) if k == "seconds" else v if k == "until" else int(v)
                        for k, v in (p.split("=", 1) for p in pairs)})
    return out
