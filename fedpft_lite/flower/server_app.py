"""The ServerApp: the in-process simulator's server, with its clients on Flower SuperNodes.

``@app.main()`` calls :func:`fedpft_lite.federated.run_federated` with :class:`FlowerClients`.
Everything the server does is the simulator's own code -- setup (FM, public + test data, proxy),
FedPFT's layer-level alignment, seeded client sampling (``sample_clients``), FedAvg,
``after_aggregation`` (neuron-level alignment every t rounds), plug-back, evaluation of the FM,
the history rows, checkpoints and ``results.json``. :class:`FlowerClients` only replaces
*where* :func:`fedpft_lite.federated.client_update` runs.

No Flower ``Strategy``: the built-in ones sample node ids at random and know nothing of
partitions, activation statistics or proxy patches; sampling here is by partition id with the
simulator's seeded sampler, which is what makes the two histories agree.
"""
from __future__ import annotations

import json
import os
import signal
import time
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import log
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from ..alignment import aligned_neurons, ffn_patch
from ..federated import ClientFailure, ClientUpdate, run_federated
from ..models import WEIGHTS_FILE
from .records import (file_sha256, proxy_files_bytes, record_state, record_stats, state_record,
                      wire_bytes)
from .settings import fedconfig_from_run_config, injected_faults, proxy_dir, run_dir


#: Flower's error codes (``Message.error.code``) by name: what a failed client's record says.
ERROR_NAMES = {v: k.lower() for k, v in vars(ErrorCode).items() if k.isupper() and isinstance(v, int)}


class RoundFailed(RuntimeError):
    """Fewer replies than ``min-replies``: the round is not kept (no aggregation, no history
    row, no checkpoint), so the last checkpoint is the state to resume from."""


class FlowerClients:
    """``run_federated``'s clients, reached through a Flower ``Grid``: one SuperNode per partition.

    ``start`` publishes the proxy (or, resuming, checks the one published before) and finds which
    node holds which partition; ``train`` sends the sampled partitions' nodes their work and
    returns, in the sampled order, a ``ClientUpdate`` per reply and a ``ClientFailure`` per client
    that did not reply usefully: its node is not connected (not sent), Flower returned an error
    (the ClientApp raised, the node stopped heart-beating: ``node_unavailable``), or no reply came
    within ``round_timeout_s`` (``timeout``; a late reply is dropped). Fewer than ``min_replies``
    replies raise :class:`RoundFailed`. Wire bytes and failures per round land in
    ``server.log["flower"]``.

    The server keeps sampling all partitions with the simulator's seeded sampler (so histories,
    and resumed runs, match the in-process simulator); a sampled partition whose node is gone is
    recorded as failed, and a node that connects later (a restarted SuperNode) is asked for its
    partition at the start of the next round and takes it over.
    """
    server_holds_client_data = False   # the server loads only the public and test splits
    poll_s = 0.5                       # how often a round asks the SuperLink for replies

    def __init__(self, grid: Grid, proxy_folder, node_wait_s: float = 300.0,
                 round_timeout_s: float = 3600.0, min_replies: int = 1):
        self.grid, self.proxy_folder = grid, Path(proxy_folder)
        self.node_wait_s, self.round_timeout_s = float(node_wait_s), float(round_timeout_s)
        self.min_replies = int(min_replies)
        self.nodes: dict[int, int] = {}   # partition id -> node id
        self.sha = ""

    # -- before round 1 -------------------------------------------------------------------------
    def start(self, server) -> None:
        t0 = time.time()
        published = server.log.get("flower")   # resuming: what the interrupted run published
        if published is None:
            server.proxy.save_pretrained(self.proxy_folder, preprocessor=server.preprocessor)
        self.sha = file_sha256(self.proxy_folder / WEIGHTS_FILE) if (self.proxy_folder / WEIGHTS_FILE).exists() else ""
        if published is not None and self.sha != published["proxy_sha256"]:
            raise FileNotFoundError(
                f"cannot resume: the proxy the interrupted run published (sha256 "
                f"{published['proxy_sha256'][:12]}..., at {published['proxy_dir']}) is not at "
                f"{self.proxy_folder} (found {self.sha[:12] or 'nothing'}); its nodes hold that one. "
                "Point proxy-dir to it")
        self._discover(server.cfg.num_clients)
        folder_bytes = proxy_files_bytes(self.proxy_folder)
        if published is None:
            server.log["flower"] = {"proxy_dir": str(self.proxy_folder), "proxy_sha256": self.sha,
                                    "proxy_folder_bytes": folder_bytes,
                                    "proxy_weight_bytes": (self.proxy_folder / WEIGHTS_FILE).stat().st_size,
                                    "start_seconds": round(time.time() - t0, 3), "rounds": []}
        log(INFO, "fedpft_lite: proxy %s at %s (%.1f MiB); %d nodes ready in %.1f s",
            "published" if published is None else "of the interrupted run", self.proxy_folder,
            folder_bytes / 2**20, len(self.nodes), time.time() - t0)

    def _discover(self, num_clients: int) -> None:
        """Wait (``node_wait_s``) for ``num_clients`` SuperNodes, ask each for its partition id
        (they check the proxy meanwhile), and fail naming the partitions still without a node."""
        deadline = time.monotonic() + self.node_wait_s
        while len(ids := set(self.grid.get_node_ids())) < num_clients and time.monotonic() < deadline:
            time.sleep(0.2)
        failed = self._query(ids, max(deadline - time.monotonic(), 1.0), num_clients)
        missing = sorted(set(range(num_clients)) - set(self.nodes))
        if missing:
            why = "".join(f"\n  node {i}: {reason}: {detail}" for i, (reason, detail) in failed.items())
            raise ValueError(
                f"partitions {missing} have no SuperNode: {len(ids)} node(s) connected within "
                f"node-wait-s={self.node_wait_s:g} s, holding partitions {sorted(self.nodes)}"
                f"{'; nodes that did not answer:' + why if why else ''}\nStart one "
                f"`flower-supernode --node-config \"partition-id=K num-partitions={num_clients}\"` "
                f"per missing partition K (or raise node-wait-s)")

    def _query(self, node_ids, timeout_s: float, num_clients: int) -> dict:
        """Ask ``node_ids`` which partition they hold; map them. Returns the nodes that failed."""
        msgs = [Message(RecordDict({"config": ConfigRecord({"proxy-sha256": self.sha})}),
                        dst_node_id=i, message_type="query") for i in node_ids]
        replies, failed = self._exchange(msgs, list(node_ids), timeout_s)
        holders: dict[int, list[int]] = {}
        for node, reply in replies.items():
            holders.setdefault(int(reply.content["metrics"]["partition-id"]), []).append(node)
        doubled = {k: v for k, v in holders.items() if len(v) > 1}
        if doubled:
            raise ValueError(f"each partition 0..{num_clients - 1} needs exactly one SuperNode; "
                             f"held more than once: {doubled} (partition: node ids)")
        self.nodes.update({k: v[0] for k, v in holders.items()})
        return failed

    def _exchange(self, messages: list[Message], keys: list, timeout_s: float):
        """Send ``messages`` and collect replies until all came or ``timeout_s`` passed.

        ``keys[i]`` names message i. Returns ``({key: reply}, {key: (reason, detail)})``: every
        message ends in exactly one of the two. (``Grid.send_and_receive`` returns the replies
        alone, and error replies the SuperLink writes for a node that is gone come from the
        SuperLink, not the node; the message ids say which message each reply answers.)
        """
        ids = list(self.grid.push_messages(messages)) if messages else []
        if len(ids) != len(messages):   # the SuperLink refused them all (e.g. too large)
            ids = [None] * len(messages)
        pending = {mid: key for mid, key in zip(ids, keys) if mid}
        replies, failed = {}, {key: ("not_sent", "the SuperLink did not accept the message")
                               for mid, key in zip(ids, keys) if not mid}
        deadline = time.monotonic() + timeout_s
        while pending:
            for reply in self.grid.pull_messages(list(pending)):
                key = pending.pop(reply.metadata.reply_to_message_id, None)
                if key is None:
                    continue
                if reply.has_error():
                    failed[key] = (ERROR_NAMES.get(reply.error.code, f"error_{reply.error.code}"),
                                   reply.error.reason)
                else:
                    replies[key] = reply
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(self.poll_s)
        for key in pending.values():
            failed[key] = ("timeout", f"no reply within {timeout_s:g} s (round-timeout-s); "
                                      "a late reply is dropped")
        return replies, failed

    # -- every round -----------------------------------------------------------------------------
    def _connected(self, num_clients: int) -> set[int]:
        """The connected node ids; nodes that joined since the last round are asked their partition."""
        ids = set(self.grid.get_node_ids())
        if new := ids - set(self.nodes.values()):
            for k, (reason, detail) in self._query(new, self.node_wait_s, num_clients).items():
                log(WARNING, "fedpft_lite: new node %s did not say its partition: %s: %s", k, reason, detail)
        return ids

    def train(self, server, rnd: int, clients: list[int], lr: float, collect: bool) -> list:
        for fault in injected_faults("kill-server"):   # testing hook, see settings.TEST_FAULT_ENV
            if fault["round"] == rnd:
                os.kill(os.getpid(), signal.SIGKILL)
        connected = self._connected(server.cfg.num_clients)
        state = state_record(server.global_state)
        neurons = aligned_neurons(server.log)       # FedPFT, after neuron-level alignment
        patch = state_record(ffn_patch(server.proxy, neurons)) if neurons else None
        msgs, sent = [], []
        for k in clients:
            if self.nodes.get(k) not in connected:
                continue
            content = RecordDict({"state": state, "config": ConfigRecord({
                "round": rnd, "lr": float(lr), "partition-id": k, "collect-activations": bool(collect),
                "proxy-sha256": self.sha})})
            if patch is not None:
                content["proxy-patch"] = patch
            msgs.append(Message(content, dst_node_id=self.nodes[k], message_type="train",
                                group_id=str(rnd)))
            sent.append(k)
        replies, failed = self._exchange(msgs, sent, self.round_timeout_s)
        results = []
        for k in clients:
            if k in replies:
                m = replies[k].content["metrics"]
                if int(m["partition-id"]) != k:
                    raise RuntimeError(f"partition {k}'s node replied as partition {m['partition-id']}")
                stats = None
                if collect:
                    stats = record_stats(replies[k].content["activations"], m["tokens"], m["activation-bytes"])
                results.append(ClientUpdate(k, record_state(replies[k].content["state"]),
                                            int(m["num-examples"]), float(m["train-loss"]), stats))
            elif k in failed:
                results.append(ClientFailure(k, *failed[k]))
            else:
                results.append(ClientFailure(k, "not_connected", f"the SuperNode holding partition {k} "
                                             "is not connected", sent=False))
        lost = [u for u in results if isinstance(u, ClientFailure)]
        for u in lost:
            log(WARNING, "fedpft_lite round %d: client %d left out: %s: %s", rnd, u.k, u.reason, u.detail)
        if len(results) - len(lost) < self.min_replies:
            raise RoundFailed(
                f"round {rnd}: {len(results) - len(lost)} of {len(clients)} sampled clients replied, "
                f"fewer than min-replies={self.min_replies}; failed: "
                + "; ".join(f"client {u.k}: {u.reason}: {u.detail}" for u in lost)
                + f". Round {rnd} was not kept; the last checkpoint in {server.cfg.output_dir} is "
                "intact: fix the nodes and rerun with resume=true to continue from it")
        down = len(sent) * (wire_bytes(state) + wire_bytes(patch))
        up = sum(wire_bytes(r.content["state"], r.content.get("activations")) for r in replies.values())
        server.log["flower"]["rounds"].append({"round": rnd, "wire_bytes_down": down,
                                               "wire_bytes_up": up,
                                               "patch_bytes_per_client": wire_bytes(patch)})
        return results


def make_server_app(overrides: dict | None = None) -> ServerApp:
    """A ServerApp; ``overrides`` (FedConfig fields / Flower keys) win over the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg, flower = fedconfig_from_run_config(context.run_config, overrides)
        run_id = grid.run.run_id
        clients = FlowerClients(grid, proxy_dir(flower, cfg, run_id), flower["node-wait-s"],
                                flower["round-timeout-s"], flower["min-replies"])
        if cfg.output_dir is None:   # after proxy_dir: the nodes compute it from the same config
            cfg = cfg.replace(output_dir=str(run_dir(run_id) / "results"))

        def on_round(server, row):
            log(INFO, "fedpft_lite round %d: %s", row["round"], json.dumps(
                {k: row.get(k) for k in ("clients", "failed", "train_loss", "fm_accuracy",
                                         "proxy_accuracy", "bytes_down", "bytes_up", "aligned")
                 if k in row}))

        history = run_federated(cfg, progress=False, on_round=on_round, clients=clients)
        log(INFO, "fedpft_lite: %s, %d rounds, final FM accuracy %s; results in %s", cfg.method,
            len(history), history.final("fm_accuracy"), cfg.output_dir)

    return app


#: The ServerApp ``flwr run`` loads (pyproject.toml: ``serverapp = "fedpft_lite.flower.server_app:app"``).
app = make_server_app()

__all__ = ["app", "make_server_app", "FlowerClients", "RoundFailed"]
