"""Build a run's proxy ahead of time, to copy it to the SuperNodes of a deployment once.

The ServerApp builds the proxy at the start of every run (setup + FedPFT's layer-level alignment)
and writes it to ``proxy-dir``; in a deployment the nodes must already hold that folder when the
run asks them who they are. This builds the same proxy from the same settings, so you can copy it
first:

    python -m fedpft_lite.flower.publish /srv/fedpft-proxy [key=value ...]

Settings: ``[tool.flwr.app.config]`` of ./pyproject.toml (if there), then ``key=value``
overrides, exactly like ``flwr run . --run-config``. Run it on the server machine (same device):
alignment on another device may round differently, and the nodes check the proxy's hash.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..federated import setup
from ..models import WEIGHTS_FILE
from .records import file_sha256
from .settings import app_config, fedconfig_from_run_config


def publish_proxy(cfg, folder) -> str:
    """Write the proxy the ServerApp will build for ``cfg`` to ``folder``; returns its SHA-256."""
    server = setup(cfg, progress=False, client_data=False)
    server.log["before_rounds"] = server.method.before_rounds(server)
    server.proxy.save_pretrained(folder, preprocessor=server.preprocessor)
    return file_sha256(Path(folder) / WEIGHTS_FILE)


def main(argv=None) -> None:
    import yaml

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    folder, pairs = argv[0], argv[1:]
    project = Path("pyproject.toml")
    run_config = app_config(project) if project.exists() else {}
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"override {pair!r} must look like key=value")
        k, v = pair.split("=", 1)
        overrides[k.strip()] = yaml.safe_load(v)
    cfg, _ = fedconfig_from_run_config(run_config, overrides)
    sha = publish_proxy(cfg, folder)
    print(f"proxy for {cfg.method} on {cfg.model} written to {folder} (sha256 {sha})")


if __name__ == "__main__":
    main()
