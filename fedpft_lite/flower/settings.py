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
    # How long the server waits for num-clients SuperNodes to connect before round 1.
    "node-wait-s": 300.0,
    # How long the server waits for one round's replies.
    "round-timeout-s": 3600.0,
}

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
    if cfg.resume:
        raise ValueError("resume is not supported by the Flower app: clients would need the proxy "
                         "as published by the interrupted run; start a new run instead")
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


def proxy_dir(flower: dict, run_id: int) -> Path:
    return Path(flower["proxy-dir"]).expanduser() if flower.get("proxy-dir") else run_dir(run_id) / "proxy"
