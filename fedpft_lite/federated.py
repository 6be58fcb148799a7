"""The federated round loop (in-process simulation), read like the paper's algorithm box.

    server: build proxy from FM  ->  (FedPFT) align before FL  ->  add LoRA (+ head)
    for round r = 1..R:
        sample max(1, round(fraction · N)) clients                    (seeded by seed, r)
        each client k: load global state -> train on its data -> send (state, n_k)
        server: global state = FedAvg(states, n_k)
                method.after_aggregation   (FedPFT: neuron-level alignment every t rounds)
                plug state into the FM -> evaluate FM (and proxy) -> history row
                checkpoint every few rounds (method.server_owned_parameters: FedPFT's aligned FFNs)

Every random choice is seeded from (seed, round, client), so a resumed run replays exactly the
rounds an uninterrupted one would. One proxy object serves all clients in turn (its state is
reloaded for each), which keeps memory at one FM + one proxy.

The two halves of a round are named functions: :func:`client_update` (one client's work) and
:func:`finish_round` (the server's work after the replies). Where the clients run is a small
object with ``start(server)`` and ``train(server, rnd, clients, lr, collect)``, which returns a
:class:`ClientUpdate` per sampled client, or a :class:`ClientFailure` for one that did not reply:
:class:`LocalClients` (this process, the default) or ``fedpft_lite.flower``'s Flower clients,
which call the same :func:`client_update` on real (or simulated) remote nodes, so both produce
the same history. With ``cfg.client_parallelism > 1`` :class:`LocalClients` trains that many
clients together in one batched pass (:func:`client_updates_batched`, ``fedpft_lite.batched``):
the same client states up to float rounding when dropout is off.
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .aggregation import fedavg
from .alignment import activation_statistics, public_part
from .config import FedConfig
from .batched import local_train_batched
from .data import Collator, encode, label_names, load_task_for, make_loader, modality
from .evaluation import evaluate
from .history import History
from .lora import LoraSettings, add_lora, load_trainable_state, plug_back, state_bytes, trainable_state
from .methods import get_method
from .models import load_foundation_model
from .partition import partition
from .run_folder import CKPT, RESUME_FREE, check_output_dir  # noqa: F401 (also importable from here)
from .training import local_train
from .utils import derived_seed, pick_device, seed_everything  # derived_seed: also importable from here



def round_lr(cfg: FedConfig, rnd: int) -> float:
    """Linear decay across rounds that never reaches 0: round r (1-based) uses lr·(1-(r-1)/R)."""
    if cfg.lr_decay == "none":
        return cfg.lr
    return cfg.lr * (1.0 - (rnd - 1) / cfg.rounds)


def sample_clients(cfg: FedConfig, rnd: int) -> list[int]:
    rng = np.random.default_rng(derived_seed(cfg.seed, rnd, 0xC11E))
    return sorted(rng.choice(cfg.num_clients, cfg.clients_per_round, replace=False).tolist())


@dataclass
class Server:
    """Everything the server holds; methods' hooks read and change it."""
    cfg: FedConfig
    device: torch.device
    fm: torch.nn.Module
    proxy: torch.nn.Module
    preprocessor: object
    method: object
    train: object                      # encoded training split (clients' data, by partition)
    parts: list
    test_loader: object
    public: object = None              # encoded public unlabelled split (server only)
    val_loader: object = None          # the task's validation split, if it has one: choose settings here
    global_state: dict = field(default_factory=dict)
    history: History = field(default_factory=History)
    log: dict = field(default_factory=dict)
    progress: bool = True              # show progress bars for long server work
    label_names: list = field(default_factory=list)  # class name of each label id

    def client_examples(self, k: int):
        if self.parts is None:
            raise RuntimeError("this server holds no client data (its clients run elsewhere)")
        return self.train.select(self.parts[k])

    def client_loader(self, k: int, rnd: int, shuffle: bool = True):
        return client_loader(self.cfg, self.client_examples(k), self.preprocessor, k, rnd, shuffle)

    def server_owned_state(self) -> dict:
        """The current values of the proxy weights the server itself changes (the method's
        ``server_owned_parameters``: FedPFT's aligned FFNs; none for FedPETuning and FedOT)."""
        return {n: p.detach().cpu().contiguous()
                for n, p in self.method.server_owned_parameters(self).items()}

    def load_server_owned_state(self, saved: dict) -> None:
        """Write :meth:`server_owned_state` values back into the proxy (resuming). Names the
        method owns must all be there; extra names are ignored (a checkpoint written before
        checkpoints were trimmed held the whole proxy, whose other weights equal the rebuilt ones)."""
        params = self.method.server_owned_parameters(self)
        missing = sorted(set(params) - set(saved))
        if missing:
            raise KeyError(f"the checkpoint lacks server-owned proxy weights {missing[:5]}"
                           f"{' ...' if len(missing) > 5 else ''}")
        with torch.no_grad():
            for n, p in params.items():
                if saved[n].shape != p.shape:
                    raise ValueError(f"checkpoint weight {n}: shape {tuple(saved[n].shape)}, "
                                     f"proxy needs {tuple(p.shape)}")
                p.copy_(saved[n].to(p))


# -- checkpoints ---------------------------------------------------------------------------------
def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    meta = {"python": repr(random.getstate()),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    import ast
    random.setstate(ast.literal_eval(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


SERVER_PROXY = "server_proxy.safetensors"


def save_checkpoint(server: Server, rnd: int) -> Path:
    """Write the global state, server-side proxy changes, RNG states and history (atomically).

    Of the proxy only what the server changed on its own is written (``server_proxy.safetensors``,
    the method's ``server_owned_parameters``: FedPFT's compressed FFNs and their LayerNorms, about
    4.7 MB for MiniLM instead of the whole 76 MB sub-FM every round); a resumed run rebuilds the
    rest from the FM exactly as the first run built it."""
    folder = Path(server.cfg.output_dir) / CKPT
    tmp = folder.with_name(CKPT + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(dict(server.global_state), str(tmp / "global_state.safetensors"))
    owned = server.server_owned_state()
    if owned:
        save_file(owned, str(tmp / SERVER_PROXY))
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    (tmp / "checkpoint.json").write_text(json.dumps(
        {"round": rnd, "config": server.cfg.to_dict(), "history": list(server.history),
         "log": server.log, "rng": rng_meta}, indent=1))
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


# -- one client ----------------------------------------------------------------------------------
def client_partitions(cfg: FedConfig, train_labels) -> list:
    """Row indices of every client's share of the training split (seeded by cfg.seed)."""
    return partition(train_labels, cfg.num_clients, cfg.partition, alpha=cfg.alpha,
                     labels_per_client=cfg.labels_per_client, min_size=cfg.min_client_size,
                     seed=cfg.seed)


def client_loader(cfg: FedConfig, examples, preprocessor, k: int, rnd: int, shuffle: bool = True):
    """Client k's batches in round rnd (order seeded by seed, round, client)."""
    return make_loader(examples, preprocessor, cfg.batch_size, shuffle=shuffle,
                       seed=derived_seed(cfg.seed, rnd, k, 0xDA7A))


@dataclass
class ClientUpdate:
    """What client k sends back: its trained state (FM naming), its example count (FedAvg's
    weight), its mean training loss and, in FedPFT's alignment rounds, activation statistics."""
    k: int
    state: dict
    num_examples: int
    loss: float
    stats: dict | None = None


def client_update(cfg: FedConfig, proxy, global_state: dict, examples, preprocessor, k: int,
                  rnd: int, lr: float, device, collect: bool = False) -> ClientUpdate:
    """One client's work in round rnd: load the global state into its proxy, train on its
    examples (dropout masks seeded by seed, round, client), and report."""
    load_trainable_state(proxy, global_state)                             # server -> client
    torch.manual_seed(derived_seed(cfg.seed, rnd, k, 0x7EA1))             # dropout masks
    res = local_train(proxy, client_loader(cfg, examples, preprocessor, k, rnd), lr=lr,
                      epochs=cfg.local_epochs, grad_clip=cfg.grad_clip,
                      weight_decay=cfg.weight_decay, device=device, amp=cfg.amp)
    return _report(cfg, proxy, examples, preprocessor, k, rnd, res["loss"], device, collect)


def _report(cfg: FedConfig, proxy, examples, preprocessor, k: int, rnd: int, loss: float,
            device, collect: bool) -> ClientUpdate:
    """Client k's reply from the trained ``proxy``: its state and, in FedPFT's alignment
    rounds, the activation statistics of the trained proxy on its examples."""
    stats = None
    if collect:
        stats = activation_statistics(proxy, client_loader(cfg, examples, preprocessor, k, rnd,
                                                           shuffle=False), device)
    return ClientUpdate(k, trainable_state(proxy), len(examples), loss, stats)  # -> server


def client_updates_batched(cfg: FedConfig, proxy, global_state: dict, examples: list,
                           preprocessor, ks: list[int], rnd: int, lr: float, device,
                           collect: bool = False) -> list[ClientUpdate]:
    """Clients ``ks`` of round rnd trained together in one batched pass
    (:func:`fedpft_lite.batched.local_train_batched`): the same batches in the same order and
    the same optimiser as :func:`client_update` for each, dropout masks seeded by (seed, round,
    first client). Then each client's trained state goes into the proxy in turn for its reply
    (and activation statistics), exactly as after sequential training."""
    load_trainable_state(proxy, global_state)                             # server -> clients
    torch.manual_seed(derived_seed(cfg.seed, rnd, ks[0], 0xBA7C))        # dropout masks
    loaders = [client_loader(cfg, ex, preprocessor, k, rnd) for k, ex in zip(ks, examples)]
    results = local_train_batched(proxy, loaders, lr=lr, epochs=cfg.local_epochs,
                                  grad_clip=cfg.grad_clip, weight_decay=cfg.weight_decay,
                                  device=device, amp=cfg.amp, pad_id=Collator(preprocessor).pad_id)
    updates = []
    for k, ex, res in zip(ks, examples, results):
        load_trainable_state(proxy, res["state"], fm_names=False)
        updates.append(_report(cfg, proxy, ex, preprocessor, k, rnd, res["loss"], device, collect))
    return updates


@dataclass
class ClientFailure:
    """A sampled client that sent nothing usable this round (only remote clients fail: Flower
    nodes that are gone, raise, or miss the reply timeout). ``reason`` is short and stable
    (``timeout``, ``node_unavailable``, ``client_app_raised_exception``, ``not_connected``, ...),
    ``detail`` what the transport said; ``sent``: whether the round's state reached it."""
    k: int
    reason: str
    detail: str = ""
    sent: bool = True


class LocalClients:
    """Clients simulated in this process on the server's proxy object: one after another
    (``cfg.client_parallelism = 1``, the default) or up to ``client_parallelism`` of them
    together in one batched pass (:func:`client_updates_batched`)."""
    server_holds_client_data = True

    def start(self, server: Server) -> None:
        """Called once, after the server's pre-FL work and before LoRA is attached."""

    def train(self, server: Server, rnd: int, clients: list[int], lr: float,
              collect: bool) -> list[ClientUpdate]:
        cfg, n = server.cfg, server.cfg.client_parallelism
        if n == 1:
            return [client_update(cfg, server.proxy, server.global_state,
                                  server.client_examples(k), server.preprocessor, k, rnd, lr,
                                  server.device, collect) for k in clients]
        updates = []
        for group in (clients[i:i + n] for i in range(0, len(clients), n)):
            updates += client_updates_batched(cfg, server.proxy, server.global_state,
                                              [server.client_examples(k) for k in group],
                                              server.preprocessor, group, rnd, lr,
                                              server.device, collect)
        return updates


# -- the loop ------------------------------------------------------------------------------------
def setup(cfg: FedConfig, progress: bool = True, client_data: bool = True) -> Server:
    """Load data and FM, partition, build the proxy (pre-FL server work and LoRA come after).

    ``client_data=False``: the server keeps only the public and test splits (its clients load
    their own partitions elsewhere, as Flower's clients do)."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    ds = load_task_for(cfg)
    names = label_names(ds)
    fm, pre = load_foundation_model(cfg.model, num_labels=len(names), seed=cfg.seed, objective=cfg.objective)
    if modality(ds) != fm.modality:
        raise ValueError(f"task {cfg.task!r} holds {modality(ds)}s but model {cfg.model!r} is a "
                         f"{fm.modality} model; for images use model='vit-tiny-fmnist' (offline) "
                         "or a hub ViT, for text 'minilm' or a hub BERT/RoBERTa")
    if not client_data:
        ds = type(ds)({k: v for k, v in ds.items() if k != "train"})
    if "public" in ds and cfg.max_public is not None and cfg.max_public < len(ds["public"]):
        ds["public"] = ds["public"].shuffle(seed=cfg.seed).select(range(cfg.max_public))
    enc = encode(ds, pre, cfg.max_length, causal_lm=cfg.objective == "causal-lm")
    parts = client_partitions(cfg, ds["train"]["label"]) if client_data else None
    method = get_method(cfg.method)
    public = enc.get("public")
    proxy = method.build_proxy(fm, cfg, public=None if public is None or len(public) < 2 else
                               lambda: make_loader(public_part(public), pre, cfg.batch_size * 2))
    server = Server(cfg=cfg, device=device, fm=fm.to(device), proxy=proxy.to(device),
                    preprocessor=pre, method=method, train=enc.get("train"), parts=parts,
                    test_loader=make_loader(enc["test"], pre, cfg.eval_batch_size), public=public,
                    val_loader=make_loader(enc["validation"], pre, cfg.eval_batch_size)
                    if "validation" in enc else None, progress=progress, label_names=names)
    return server


def add_proxy_lora(proxy, cfg: FedConfig, method=None):
    """LoRA on the layers the method trains (all, or a FedOT emulator's adapters), seeded.
    The server's proxy and every Flower client's copy of it get it the same way."""
    method = get_method(cfg.method) if method is None else method
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    return add_lora(proxy, lora, layers=method.lora_layers(proxy), seed=cfg.seed)


def _attach_lora(server: Server) -> None:
    cfg = server.cfg
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    add_lora(server.fm, lora, seed=cfg.seed)  # all layers: any proxy's state plugs in
    add_proxy_lora(server.proxy, cfg, server.method)
    server.global_state = trainable_state(server.proxy)


def run_federated(cfg: FedConfig, progress: bool = True, stop_after: int | None = None,
                  on_round=None, clients=None) -> History:
    """Run (or resume) one federated experiment; returns its :class:`History`.

    Args:
        stop_after: stop after this round (after checkpointing), as if interrupted. For tests
            and notebooks that show resuming.
        on_round: ``callback(server, row)`` after each round (live plots).
        clients: where clients run: :class:`LocalClients` (default, this process) or
            ``fedpft_lite.flower``'s nodes.
    """
    cfg = cfg.validate().resolved()   # method defaults written out: what runs is what is saved
    clients = LocalClients() if clients is None else clients
    saved = check_output_dir(cfg)  # before any model is loaded
    t_setup = time.time()
    server = setup(cfg, progress, client_data=clients.server_holds_client_data)
    start = 1
    if saved is None:
        server.log["before_rounds"] = server.method.before_rounds(server)
    else:
        server.log = saved["log"]   # before clients.start: Flower's clients find their proxy there
    clients.start(server)
    _attach_lora(server)
    if saved is not None:
        ckpt = Path(cfg.output_dir) / CKPT
        if server.method.server_owned_parameters(server):
            server.load_server_owned_state(load_file(str(ckpt / SERVER_PROXY)))
        saved_state = load_file(str(ckpt / "global_state.safetensors"))
        server.global_state = {k: saved_state[k] for k in server.global_state}  # keys and order as built
        server.history = History(saved["history"])
        _set_rng_state(load_file(str(ckpt / "rng.safetensors")), saved["rng"])
        start = saved["round"] + 1
    server.log.setdefault("setup_seconds", round(time.time() - t_setup, 2))
    proxy_weights = [p for n, p in server.proxy.named_parameters() if "lora_" not in n]  # tied: once
    server.log.setdefault("proxy_bytes", sum(p.numel() * p.element_size() for p in proxy_weights))
    # What a client holds besides LoRA, and the values it sends per round (LoRA + head): the
    # summary's client_params and sent_params (reproduce.client_costs)
    server.log.setdefault("proxy_parameters", sum(p.numel() for p in proxy_weights))
    server.log.setdefault("trainable_parameters", sum(t.numel() for t in server.global_state.values()))

    bar = tqdm(range(start, cfg.rounds + 1), desc=cfg.method, disable=not progress,
               initial=start - 1, total=cfg.rounds)
    for rnd in bar:
        row = run_round(server, rnd, clients)
        server.history.append(row)
        if on_round is not None:
            on_round(server, row)
        if progress:
            bar.set_postfix(fm_acc=row.get("fm_accuracy"), loss=round(row["train_loss"], 3))
        if cfg.output_dir and (rnd % cfg.checkpoint_every == 0 or rnd == cfg.rounds
                               or rnd == stop_after):
            save_checkpoint(server, rnd)
        if stop_after is not None and rnd >= stop_after and rnd < cfg.rounds:
            bar.close()
            return server.history
    bar.close()
    if cfg.output_dir:
        write_results(server)
    return server.history


def run_round(server: Server, rnd: int, clients=None) -> dict:
    """One round: sample, let the clients train (:class:`LocalClients` by default), finish."""
    cfg, t0 = server.cfg, time.time()
    sampled = sample_clients(cfg, rnd)
    lr = round_lr(cfg, rnd)
    collect = server.method.wants_activations(server, rnd)
    results = (clients or LocalClients()).train(server, rnd, sampled, lr, collect)
    return finish_round(server, rnd, sampled, lr, results, t0)


def finish_round(server: Server, rnd: int, sampled: list[int], lr: float,
                 results: list, t0: float) -> dict:
    """The server's work once the clients replied: ``results`` holds, in ``sampled`` order, a
    :class:`ClientUpdate` or a :class:`ClientFailure` per client. FedAvg over the updates (a
    failed client is left out, the others weighted by their examples as usual), the method's
    after-aggregation step (FedPFT: neuron-level alignment every t rounds), plug the state into
    the FM and evaluate; returns the history row: ``clients`` are the clients aggregated, and
    ``failed`` (only when some failed) lists the others with the reason. ``bytes_down`` /
    ``bytes_up`` count the trainable state each way (down: to every client it reached),
    activation statistics up, and what the method ships extra."""
    cfg = server.cfg
    if [u.k for u in results] != list(sampled):
        raise ValueError(f"client results {[u.k for u in results]} do not match the sampled clients {sampled}")
    failed = [u for u in results if isinstance(u, ClientFailure)]
    updates = [u for u in results if not isinstance(u, ClientFailure)]
    if not updates:
        raise RuntimeError(f"round {rnd}: none of the sampled clients {sampled} sent an update")
    reached = len(updates) + sum(f.sent for f in failed)     # clients the state was sent to
    down = reached * state_bytes(server.global_state)
    up = sum(state_bytes(u.state) + (u.stats["bytes"] if u.stats is not None else 0) for u in updates)
    sizes = [u.num_examples for u in updates]
    server.global_state = fedavg([u.state for u in updates], sizes, cfg.aggregation)
    stats = [u.stats for u in updates if u.stats is not None]
    extra = server.method.after_aggregation(server, rnd, stats) or {}
    down += int(extra.pop("bytes_down_extra", 0))
    row = {"round": rnd, "clients": [u.k for u in updates], "lr": lr,
           "train_loss": float(np.average([u.loss for u in updates], weights=sizes)),
           "bytes_down": int(down), "bytes_up": int(up),
           "aligned": bool(extra.pop("aligned", False)), **extra}
    if failed:
        row["failed"] = [{"client": u.k, "reason": u.reason, "detail": u.detail} for u in failed]
    if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
        plug_back(server.fm, server.global_state)
        fm_eval = evaluate(server.fm, server.test_loader, server.device)
        row.update(fm_accuracy=fm_eval["accuracy"], fm_loss=fm_eval["loss"])
        if "perplexity" in fm_eval:   # a language model: accuracy is next-token top-1
            row["fm_perplexity"] = fm_eval["perplexity"]
        if server.val_loader is not None and rnd == cfg.rounds:   # settings are chosen on the
            # final validation accuracy, never on the test split
            row["fm_val_accuracy"] = evaluate(server.fm, server.val_loader, server.device)["accuracy"]
        if cfg.eval_proxy == "every" or (cfg.eval_proxy == "final" and rnd == cfg.rounds):
            load_trainable_state(server.proxy, server.global_state)
            row["proxy_accuracy"] = evaluate(server.proxy, server.test_loader, server.device)["accuracy"]
    row["seconds"] = round(time.time() - t0, 3)
    return row


def write_results(server: Server) -> Path:
    cfg, h = server.cfg, server.history
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    h.save(out)
    save_file(dict(server.global_state), str(out / "global_state.safetensors"))
    summary = {"method": cfg.method, "fm_accuracy": h.final("fm_accuracy"),
               "fm_val_accuracy": h.final("fm_val_accuracy"),
               "proxy_accuracy": h.final("proxy_accuracy"), "rounds": len(h),
               "mean_bytes_down_per_round": float(np.mean([r["bytes_down"] for r in h])),
               "mean_bytes_up_per_round": float(np.mean([r["bytes_up"] for r in h])),
               "seconds": round(sum(r["seconds"] for r in h), 2), "log": server.log,
               "labels": dict(enumerate(server.label_names)),   # id -> class name (JSON: "0": ...)
               "config": cfg.to_dict()}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return out
