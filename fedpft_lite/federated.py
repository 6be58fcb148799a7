"""The federated round loop (in-process simulation), read like the paper's algorithm box.

    server: build proxy from FM  ->  (FedPFT) align before FL  ->  add LoRA (+ head)
    for round r = 1..R:
        sample max(1, round(fraction · N)) clients                    (seeded by seed, r)
        each client k: load global state -> train on its data -> send (state, n_k)
        server: global state = FedAvg(states, n_k)
                method.after_aggregation   (FedPFT: neuron-level alignment every t rounds)
                plug state into the FM -> evaluate FM (and proxy) -> history row
                checkpoint every few rounds

Every random choice is seeded from (seed, round, client), so a resumed run replays exactly the
rounds an uninterrupted one would. One proxy object serves all clients in turn (its state is
reloaded for each), which keeps memory at one FM + one proxy.
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
from .config import FedConfig
from .data import encode, label_names, load_task, make_loader
from .evaluation import evaluate
from .history import History
from .lora import LoraSettings, add_lora, load_trainable_state, plug_back, state_bytes, trainable_state
from .methods import get_method
from .models import load_foundation_model
from .partition import partition
from .training import local_train
from .utils import pick_device, seed_everything

CKPT = "checkpoint"
# Config fields that may differ between an interrupted run and its resumption.
RESUME_FREE = {"resume", "overwrite", "output_dir", "device", "eval_batch_size"}


def derived_seed(*parts: int) -> int:
    """A stable 31-bit seed from (seed, round, client, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


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
    global_state: dict = field(default_factory=dict)
    history: History = field(default_factory=History)
    log: dict = field(default_factory=dict)
    progress: bool = True              # show progress bars for long server work

    def client_loader(self, k: int, rnd: int, shuffle: bool = True):
        ds = self.train.select(self.parts[k])
        return make_loader(ds, self.preprocessor, self.cfg.batch_size, shuffle=shuffle,
                           seed=derived_seed(self.cfg.seed, rnd, k, 0xDA7A))

    def server_owned_state(self) -> dict:
        """Proxy weights the server may change (alignment): everything but the trainable state."""
        return {n: p.detach().cpu().contiguous() for n, p in self.proxy.named_parameters()
                if not p.requires_grad}


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


def save_checkpoint(server: Server, rnd: int) -> Path:
    """Write the global state, server-side proxy changes, RNG states and history (atomically)."""
    folder = Path(server.cfg.output_dir) / CKPT
    tmp = folder.with_name(CKPT + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(dict(server.global_state), str(tmp / "global_state.safetensors"))
    if server.cfg.method == "fedpft" and (server.cfg.align_before or server.cfg.align_during):
        save_file(server.server_owned_state(), str(tmp / "server_proxy.safetensors"))
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


def check_output_dir(cfg: FedConfig) -> dict | None:
    """Refuse to clobber finished results or a checkpoint; return the checkpoint when resuming."""
    if cfg.output_dir is None:
        return None
    out = Path(cfg.output_dir)
    done, ckpt = out / "results.json", out / CKPT / "checkpoint.json"
    if cfg.overwrite:
        return None
    if cfg.resume:
        if done.exists():
            raise FileExistsError(f"{out} holds a finished run (results.json); nothing to resume")
        if not ckpt.exists():
            raise FileNotFoundError(f"resume=True but {ckpt} does not exist")
        saved = json.loads(ckpt.read_text())
        a, b = saved["config"], cfg.to_dict()
        diff = sorted(k for k in set(a) | set(b) if k not in RESUME_FREE and a.get(k) != b.get(k))
        if diff:
            raise ValueError(f"cannot resume: config differs from the checkpoint's in {diff}")
        return saved
    if done.exists():
        raise FileExistsError(f"{out} already holds a finished run's results; pass overwrite=True "
                              "(--overwrite) to replace them, or choose another output_dir")
    if ckpt.exists():
        raise FileExistsError(f"{out} holds a checkpoint of an unfinished run; pass resume=True "
                              "(--resume) to continue it, or overwrite=True to start over")
    return None


# -- the loop ------------------------------------------------------------------------------------
def setup(cfg: FedConfig, progress: bool = True) -> Server:
    """Load data and FM, partition, build the proxy (pre-FL server work and LoRA come after)."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    ds = load_task(cfg.task, max_train=cfg.max_train, max_test=cfg.max_test)
    names = label_names(ds)
    fm, pre = load_foundation_model(cfg.model, num_labels=len(names), seed=cfg.seed)
    enc = encode(ds, pre, cfg.max_length)
    parts = partition(ds["train"]["label"], cfg.num_clients, cfg.partition, alpha=cfg.alpha,
                      labels_per_client=cfg.labels_per_client, min_size=cfg.min_client_size,
                      seed=cfg.seed)
    method = get_method(cfg.method)
    proxy = method.build_proxy(fm, cfg)
    public = enc.get("public")
    if public is not None and cfg.max_public is not None and cfg.max_public < len(public):
        public = public.shuffle(seed=cfg.seed).select(range(cfg.max_public))
    server = Server(cfg=cfg, device=device, fm=fm.to(device), proxy=proxy.to(device),
                    preprocessor=pre, method=method, train=enc["train"], parts=parts,
                    test_loader=make_loader(enc["test"], pre, cfg.eval_batch_size), public=public,
                    progress=progress)
    return server


def _attach_lora(server: Server) -> None:
    cfg = server.cfg
    lora = LoraSettings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    add_lora(server.fm, lora, seed=cfg.seed)  # all layers: any proxy's state plugs in
    add_lora(server.proxy, lora, layers=server.method.lora_layers(server.proxy), seed=cfg.seed)
    server.global_state = trainable_state(server.proxy)


def run_federated(cfg: FedConfig, progress: bool = True, stop_after: int | None = None,
                  on_round=None) -> History:
    """Run (or resume) one federated experiment; returns its :class:`History`.

    Args:
        stop_after: stop after this round (after checkpointing), as if interrupted. For tests
            and notebooks that show resuming.
        on_round: ``callback(server, row)`` after each round (live plots).
    """
    cfg.validate()
    saved = check_output_dir(cfg)  # before any model is loaded
    t_setup = time.time()
    server = setup(cfg, progress)
    start = 1
    if saved is None:
        server.log["before_rounds"] = server.method.before_rounds(server)
        _attach_lora(server)
    else:
        _attach_lora(server)
        ckpt = Path(cfg.output_dir) / CKPT
        if (ckpt / "server_proxy.safetensors").exists():
            server.proxy.load_state_dict(load_file(str(ckpt / "server_proxy.safetensors")), strict=False)
        saved_state = load_file(str(ckpt / "global_state.safetensors"))
        server.global_state = {k: saved_state[k] for k in server.global_state}  # keys and order as built
        server.history = History(saved["history"])
        server.log = saved["log"]
        _set_rng_state(load_file(str(ckpt / "rng.safetensors")), saved["rng"])
        start = saved["round"] + 1
    server.log.setdefault("setup_seconds", round(time.time() - t_setup, 2))
    server.log.setdefault("proxy_bytes", sum(p.numel() * p.element_size()
                                             for n, p in server.proxy.named_parameters() if "lora_" not in n))

    bar = tqdm(range(start, cfg.rounds + 1), desc=cfg.method, disable=not progress,
               initial=start - 1, total=cfg.rounds)
    for rnd in bar:
        row = run_round(server, rnd)
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


def run_round(server: Server, rnd: int) -> dict:
    cfg, t0 = server.cfg, time.time()
    clients = sample_clients(cfg, rnd)
    lr = round_lr(cfg, rnd)
    collect = server.method.wants_activations(server, rnd)
    states, sizes, losses, stats = [], [], [], []
    down = up = 0
    for k in clients:
        load_trainable_state(server.proxy, server.global_state)          # server -> client
        down += state_bytes(server.global_state)
        torch.manual_seed(derived_seed(cfg.seed, rnd, k, 0x7EA1))          # dropout masks
        loader = server.client_loader(k, rnd)
        res = local_train(server.proxy, loader, lr=lr, epochs=cfg.local_epochs,
                          grad_clip=cfg.grad_clip, weight_decay=cfg.weight_decay,
                          device=server.device, amp=cfg.amp)
        state = trainable_state(server.proxy)                              # client -> server
        up += state_bytes(state)
        if collect:
            from .alignment import activation_statistics
            s = activation_statistics(server.proxy, server.client_loader(k, rnd, shuffle=False),
                                      server.device)
            up += s["bytes"]
            stats.append(s)
        states.append(state)
        sizes.append(len(server.parts[k]))
        losses.append(res["loss"])
    server.global_state = fedavg(states, sizes, cfg.aggregation)
    extra = server.method.after_aggregation(server, rnd, stats) or {}
    down += int(extra.pop("bytes_down_extra", 0))
    row = {"round": rnd, "clients": clients, "lr": lr,
           "train_loss": float(np.average(losses, weights=sizes)),
           "bytes_down": int(down), "bytes_up": int(up),
           "aligned": bool(extra.pop("aligned", False)), **extra}
    if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
        plug_back(server.fm, server.global_state)
        fm_eval = evaluate(server.fm, server.test_loader, server.device)
        row.update(fm_accuracy=fm_eval["accuracy"], fm_loss=fm_eval["loss"])
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
               "proxy_accuracy": h.final("proxy_accuracy"), "rounds": len(h),
               "mean_bytes_down_per_round": float(np.mean([r["bytes_down"] for r in h])),
               "mean_bytes_up_per_round": float(np.mean([r["bytes_up"] for r in h])),
               "seconds": round(sum(r["seconds"] for r in h), 2), "log": server.log,
               "config": cfg.to_dict()}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return out
