"""The ClientApp: one SuperNode = one client = one partition of the task.

``query`` (once, before round 1): load the proxy and this node's partition, reply who it is.
``train`` (every round it is sampled): :func:`fedpft_lite.federated.client_update` -- load the
received LoRA + head state into the proxy, train on the partition with the seeded dropout,
reply with the state, the example count, the loss and, in FedPFT's alignment rounds, the
activation statistics. The node's work is the in-process simulator's own function, so a Flower
run and ``run_federated`` produce the same history.

A node keeps the loaded proxy and its data between messages (a process-wide cache keyed by the
proxy's hash and the data settings), and holds no other state: it can restart between rounds.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..alignment import apply_ffn_patch, ffn_patch
from ..compression import compressed_layers
from ..data import encode, load_task_for
from ..federated import add_proxy_lora, client_partitions, client_update
from ..models import META_FILE, WEIGHTS_FILE, load_foundation_model
from ..utils import pick_device
from .records import file_sha256, record_state, state_record, stats_record
from .settings import fedconfig_from_run_config, injected_faults, proxy_dir

_CACHE: dict = {}   # ("proxy", folder, sha) -> (proxy, preprocessor, pristine FFN); ("data", ...) -> (train, parts)

PARTITION_HELP = ("start the SuperNode with --node-config \"partition-id=K num-partitions=N\" "
                  "(K in 0..N-1, N = the run's num-clients); Flower's simulation sets both")


def node_partition(context: Context, num_clients: int) -> int:
    """This node's partition id, checked against the run's number of clients."""
    nc = context.node_config
    if "partition-id" not in nc:
        raise ValueError(f"this SuperNode's node config has no 'partition-id' (it has "
                         f"{sorted(nc) or 'nothing'}): {PARTITION_HELP}")
    k = int(nc["partition-id"])
    n = int(nc.get("num-partitions", num_clients))
    if n != num_clients:
        raise ValueError(f"node config says num-partitions={n} but the run has num-clients="
                         f"{num_clients}: {PARTITION_HELP}")
    if not 0 <= k < n:
        raise ValueError(f"partition-id={k} is outside 0..{n - 1}: {PARTITION_HELP}")
    return k


def inject_fault(k: int, rnd: int) -> None:
    """The testing hook (``FEDPFT_LITE_TEST_FAULT``, see :data:`.settings.TEST_FAULT_ENV`): make
    partition k's ClientApp raise, or reply late, in round ``rnd``. Unset in real runs."""
    for fault in injected_faults("sleep"):
        if (fault["partition"], fault["round"]) == (k, rnd):
            deadline = time.monotonic() + fault["seconds"]
            while time.monotonic() < deadline and not ("until" in fault and os.path.exists(fault["until"])):
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    for fault in injected_faults("raise"):
        if (fault["partition"], fault["round"]) == (k, rnd):
            raise RuntimeError(f"injected fault: partition {k} raises in round {rnd}")


def _proxy(folder: Path, sha: str, cfg, device):
    key = ("proxy", str(folder), sha, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.seed, str(device))
    if key not in _CACHE:
        if not (folder / META_FILE).exists():
            raise FileNotFoundError(
                f"no proxy at {folder} on this node. In simulation the server publishes it there "
                f"when the run starts; in a deployment copy the server's proxy folder to every "
                f"node once and pass --node-config \"proxy-dir=/path/to/proxy\"")
        actual = file_sha256(folder / WEIGHTS_FILE)
        if sha and actual != sha:
            raise ValueError(f"the proxy at {folder} (sha256 {actual[:12]}...) is not the one this "
                             f"run's server published ({sha[:12]}...): copy the current one")
        for k in [k for k in _CACHE if k[0] == "proxy"]:   # one proxy per process
            del _CACHE[k]
        meta = json.loads((folder / META_FILE).read_text())
        proxy, pre = load_foundation_model(str(folder), num_labels=meta.get("num_labels", 2),
                                           objective=meta.get("objective", "classification"))
        add_proxy_lora(proxy, cfg)
        proxy.to(device)
        # The published sub-FFN weights, restored before every patch (stateless clients).
        widths = {i: torch.arange(proxy.structure["ffn_widths"][i]) for i in compressed_layers(proxy)}
        _CACHE[key] = (proxy, pre, ffn_patch(proxy, widths) if widths else None)
    return _CACHE[key]


def _partition(cfg, pre, sha: str, k: int):
    key = ("data", sha, cfg.task, cfg.max_train, cfg.max_test, cfg.max_length, cfg.num_clients,
           cfg.partition, cfg.alpha, cfg.labels_per_client, cfg.min_client_size, cfg.seed,
           cfg.objective, tuple(cfg.task_options().items()))
    if key not in _CACHE:
        for old in [c for c in _CACHE if c[0] == "data"]:
            del _CACHE[old]
        ds = load_task_for(cfg)
        _CACHE[key] = (encode(ds["train"], pre, cfg.max_length, causal_lm=cfg.objective == "causal-lm"),
                       client_partitions(cfg, ds["train"]["label"]))
    train, parts = _CACHE[key]
    return train.select(parts[k])


def _node(context: Context, overrides: dict | None, sha: str):
    cfg, flower = fedconfig_from_run_config(context.run_config, overrides, context.node_config)
    k = node_partition(context, cfg.num_clients)
    device = pick_device(cfg.device)
    proxy, pre, pristine = _proxy(proxy_dir(flower, cfg, context.run_id), sha, cfg, device)
    return cfg, k, device, proxy, pre, pristine, _partition(cfg, pre, sha, k)


def make_client_app(overrides: dict | None = None) -> ClientApp:
    """A ClientApp; ``overrides`` (FedConfig fields / Flower keys) win over the run config."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        sha = msg.content["config"]["proxy-sha256"]
        cfg, k, _, _, _, _, examples = _node(context, overrides, sha)
        return Message(RecordDict({"metrics": MetricRecord(
            {"partition-id": k, "num-partitions": cfg.num_clients, "num-examples": len(examples)})}),
            reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        conf = msg.content["config"]
        cfg, k, device, proxy, pre, pristine, examples = _node(context, overrides, conf["proxy-sha256"])
        if int(conf["partition-id"]) != k:
            raise ValueError(f"the server sent partition {conf['partition-id']}'s work to the node "
                             f"holding partition {k}")
        inject_fault(k, int(conf["round"]))
        if pristine is not None:           # FedPFT: the published sub-FFN, then the aligned neurons
            apply_ffn_patch(proxy, pristine)
            if "proxy-patch" in msg.content:
                apply_ffn_patch(proxy, record_state(msg.content["proxy-patch"]))
        elif "proxy-patch" in msg.content:
            raise ValueError("received an FFN patch for a proxy with no compressed layers")
        upd = client_update(cfg, proxy, record_state(msg.content["state"]), examples, pre, k,
                            int(conf["round"]), float(conf["lr"]), device,
                            bool(conf["collect-activations"]))
        metrics = {"partition-id": k, "num-examples": upd.num_examples, "train-loss": upd.loss}
        reply = RecordDict({"state": state_record(upd.state)})
        if upd.stats is not None:
            reply["activations"] = stats_record(upd.stats)
            metrics.update({"tokens": upd.stats["tokens"], "activation-bytes": upd.stats["bytes"]})
        reply["metrics"] = MetricRecord(metrics)
        return Message(reply, reply_to=msg)

    return app


#: The ClientApp ``flwr run`` loads (pyproject.toml: ``clientapp = "fedpft_lite.flower.client_app:app"``).
app = make_client_app()

__all__ = ["app", "make_client_app", "node_partition"]
