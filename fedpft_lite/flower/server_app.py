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
import time
from logging import INFO

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from ..alignment import aligned_neurons, ffn_patch
from ..federated import ClientUpdate, run_federated
from ..models import WEIGHTS_FILE
from .records import (file_sha256, proxy_files_bytes, record_state, record_stats, state_record,
                      wire_bytes)
from .settings import fedconfig_from_run_config, proxy_dir, run_dir


class FlowerClients:
    """``run_federated``'s clients, reached through a Flower ``Grid``: one SuperNode per partition.

    ``start`` publishes the proxy and finds which node holds which partition; ``train`` sends the
    sampled partitions' nodes their work and turns the replies into ``ClientUpdate``s, in the
    sampled order. Wire bytes per round land in ``server.log["flower"]``.
    """
    server_holds_client_data = False   # the server loads only the public and test splits

    def __init__(self, grid: Grid, proxy_folder, node_wait_s: float = 300.0,
                 round_timeout_s: float = 3600.0):
        self.grid, self.proxy_folder = grid, proxy_folder
        self.node_wait_s, self.round_timeout_s = float(node_wait_s), float(round_timeout_s)
        self.nodes: dict[int, int] = {}   # partition id -> node id
        self.sha = ""

    # -- before round 1 -------------------------------------------------------------------------
    def start(self, server) -> None:
        t0 = time.time()
        server.proxy.save_pretrained(self.proxy_folder, preprocessor=server.preprocessor)
        self.sha = file_sha256(self.proxy_folder / WEIGHTS_FILE)
        self.nodes = self._discover(server.cfg.num_clients)
        server.log["flower"] = {"proxy_dir": str(self.proxy_folder), "proxy_sha256": self.sha,
                                "proxy_folder_bytes": proxy_files_bytes(self.proxy_folder),
                                "proxy_weight_bytes": (self.proxy_folder / WEIGHTS_FILE).stat().st_size,
                                "start_seconds": round(time.time() - t0, 3), "rounds": []}
        log(INFO, "fedpft_lite: proxy published at %s (%.1f MiB); %d nodes ready in %.1f s",
            self.proxy_folder, server.log["flower"]["proxy_folder_bytes"] / 2**20, len(self.nodes),
            server.log["flower"]["start_seconds"])

    def _discover(self, num_clients: int) -> dict[int, int]:
        """Wait for ``num_clients`` SuperNodes, ask each for its partition id (they load the proxy
        and their data meanwhile), and check that every partition is held exactly once."""
        deadline = time.time() + self.node_wait_s
        while len(ids := list(self.grid.get_node_ids())) < num_clients:
            if time.time() > deadline:
                raise TimeoutError(f"{len(ids)} SuperNodes connected within {self.node_wait_s:.0f} s; "
                                   f"the run needs one per client (num-clients={num_clients})")
            time.sleep(0.2)
        msgs = [Message(RecordDict({"config": ConfigRecord({"proxy-sha256": self.sha})}),
                        dst_node_id=i, message_type="query") for i in ids]
        holders: dict[int, list[int]] = {}
        for reply in self._exchange(msgs):
            m = reply.content["metrics"]
            holders.setdefault(int(m["partition-id"]), []).append(reply.metadata.src_node_id)
        doubled = {k: v for k, v in holders.items() if len(v) > 1}
        missing = sorted(set(range(num_clients)) - set(holders))
        if doubled or missing:
            raise ValueError(f"each partition 0..{num_clients - 1} needs exactly one SuperNode; "
                             f"missing {missing}, held more than once {sorted(doubled)}")
        return {k: v[0] for k, v in holders.items()}

    def _exchange(self, messages: list[Message]) -> list[Message]:
        replies = list(self.grid.send_and_receive(messages, timeout=self.round_timeout_s))
        errors = [f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()]
        if errors:
            raise RuntimeError("a ClientApp failed:\n  " + "\n  ".join(errors))
        if len(replies) < len(messages):
            raise TimeoutError(f"{len(messages) - len(replies)} of {len(messages)} nodes did not "
                               f"reply within {self.round_timeout_s:.0f} s")
        return replies

    # -- every round -----------------------------------------------------------------------------
    def train(self, server, rnd: int, clients: list[int], lr: float,
              collect: bool) -> list[ClientUpdate]:
        state = state_record(server.global_state)
        neurons = aligned_neurons(server.log)       # FedPFT, after neuron-level alignment
        patch = state_record(ffn_patch(server.proxy, neurons)) if neurons else None
        msgs = []
        for k in clients:
            content = RecordDict({"state": state, "config": ConfigRecord({
                "round": rnd, "lr": float(lr), "partition-id": k, "collect-activations": bool(collect),
                "proxy-sha256": self.sha})})
            if patch is not None:
                content["proxy-patch"] = patch
            msgs.append(Message(content, dst_node_id=self.nodes[k], message_type="train",
                                group_id=str(rnd)))
        by_k = {}
        for reply in self._exchange(msgs):
            m = reply.content["metrics"]
            k = int(m["partition-id"])
            stats = None
            if collect:
                stats = record_stats(reply.content["activations"], m["tokens"], m["activation-bytes"])
            by_k[k] = (ClientUpdate(k, record_state(reply.content["state"]), int(m["num-examples"]),
                                    float(m["train-loss"]), stats), reply)
        if sorted(by_k) != sorted(clients):
            raise RuntimeError(f"replies came from partitions {sorted(by_k)}, sampled {clients}")
        down = len(clients) * (wire_bytes(state) + wire_bytes(patch))
        up = sum(wire_bytes(r.content["state"], r.content.get("activations")) for _, r in by_k.values())
        server.log["flower"]["rounds"].append({"round": rnd, "wire_bytes_down": down,
                                               "wire_bytes_up": up,
                                               "patch_bytes_per_client": wire_bytes(patch)})
        return [by_k[k][0] for k in clients]           # sampled order: FedAvg sums in that order


def make_server_app(overrides: dict | None = None) -> ServerApp:
    """A ServerApp; ``overrides`` (FedConfig fields / Flower keys) win over the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg, flower = fedconfig_from_run_config(context.run_config, overrides)
        run_id = grid.run.run_id
        if cfg.output_dir is None:
            cfg = cfg.replace(output_dir=str(run_dir(run_id) / "results"))
        clients = FlowerClients(grid, proxy_dir(flower, run_id), flower["node-wait-s"],
                                flower["round-timeout-s"])

        def on_round(server, row):
            log(INFO, "fedpft_lite round %d: %s", row["round"], json.dumps(
                {k: row.get(k) for k in ("clients", "train_loss", "fm_accuracy", "proxy_accuracy",
                                         "bytes_down", "bytes_up", "aligned")}))

        history = run_federated(cfg, progress=False, on_round=on_round, clients=clients)
        log(INFO, "fedpft_lite: %s, %d rounds, final FM accuracy %s; results in %s", cfg.method,
            len(history), history.final("fm_accuracy"), cfg.output_dir)

    return app


#: The ServerApp ``flwr run`` loads (pyproject.toml: ``serverapp = "fedpft_lite.flower.server_app:app"``).
app = make_server_app()

__all__ = ["app", "make_server_app", "FlowerClients"]
