"""Run a registered experiment (:mod:`fedpft_lite.experiments`) for all its cells and seeds.

Layout of a results folder (``root``)::

    runs/<key>/            one federated run: history.json/.csv, results.json, checkpoint/
    aligned/<key>/         the server's layer-level alignment, shared by the runs that need it
    <experiment>/summary.csv   one row per (cell, seed): accuracy, bytes, seconds, run key, and
                               what a client holds and sends (:data:`COST_COLUMNS`)
    <experiment>/meta.json     every invocation: command, seeds, cells, machine, versions, wall
                               time, runs computed / reused

A run's folder is named by a hash of its full config (and the device type), so cells shared by
several experiments (FedPFT in Table 1, the ablation and the parameter study) run once, an
interrupted reproduction resumes where it stopped (finished runs are reused, an unfinished run
continues from its checkpoint), and nothing already computed is overwritten.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from .config import TASK_OPTIONS, FedConfig
from .experiments import QUICK_CHANGES, Experiment, get_experiment
from .utils import is_quick, pick_device

#: Config fields that do not change what a run computes (so not part of its key).
NOT_IN_KEY = {"output_dir", "resume", "overwrite", "device", "eval_batch_size", "checkpoint_every",
              "cache_dir"}
#: Fields added to FedConfig after results were first stored, with their defaults: part of a key
#: only when set otherwise, so the keys (and stored runs) of earlier configs stay valid.
ADDED_LATER = {k: getattr(FedConfig(), k) for k in ("align_before_steps", "client_parallelism",
                                                     "objective", *TASK_OPTIONS)}
#: Bumped when the engine changes what a run with an unchanged config computes, so such runs are
#: never reused: 2 = neuron-level alignment skips the last round and also trains b_out and the
#: post-FFN LayerNorm (results of engine 1 are archived in data/results/archive/).
ENGINE = 2
#: Per run, beside accuracy and bytes: the parameters of the proxy a client holds (without LoRA;
#: tied layers once), the values it sends per round (LoRA + head), seconds per round (the round's
#: wall time: client training, FedAvg, the method's server step, evaluation) and the server's pre-FL
#: work (loading data and FM, building the proxy, distillation or alignment before round 1).
#: Added after the first summaries were written: last, so an older summary.csv is a prefix
#: (:func:`read_summary` reads it with these columns empty); a reused invocation fills them in.
COST_COLUMNS = ["client_params", "sent_params", "seconds_per_round", "setup_seconds"]
SUMMARY_COLUMNS = ["experiment", "cell", "seed", "method", "fm_accuracy", "fm_val_accuracy", "proxy_accuracy",
                   "mib_down_per_round", "mib_up_per_round", "seconds", "device", "run", *COST_COLUMNS]
#: Bytes per value of every run's proxy and state: ``federated.setup`` loads the FM without a dtype
#: (float32; amp only autocasts the forward pass), so byte counts of older runs divide exactly.
FLOAT32_BYTES = 4


def run_key(cfg: FedConfig, device_type: str) -> str:
    """A short stable name for what a config computes on a kind of device (method defaults
    resolved, so ``align_before=None`` and its resolved value name the same run)."""
    d = {k: v for k, v in cfg.resolved().to_dict().items()
         if k not in NOT_IN_KEY and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    blob = json.dumps({"config": d, "device": device_type, "engine": ENGINE}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def machine_info(device) -> dict:
    import torch
    import transformers

    info = {"platform": platform.platform(), "cpu": _cpu_model(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device)}
    if getattr(device, "type", str(device)) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def plan(exp: Experiment, seeds=None, quick: bool | None = None, device: str = "auto",
         cells: list[str] | None = None) -> list[tuple[str, int, FedConfig]]:
    """Every (cell, seed, config) the experiment will run, all validated before any work."""
    quick = is_quick() if quick is None else quick
    seeds = tuple(exp.seeds if seeds is None else seeds)
    chosen = [exp.cell(c) for c in cells] if cells else list(exp.cells)
    changes = dict(QUICK_CHANGES) if quick else {}
    return [(c.label, s, exp.config(c, s, device=device, **changes)) for c in chosen for s in seeds]


class NeedsGPUError(ValueError):
    """A paper-scale experiment was asked to run on a CPU without allow_cpu."""


def _check_resources(exp: Experiment, device, allow_cpu: bool) -> None:
    """Paper-scale experiments need the hub and (sensibly) a GPU: say so before loading anything."""
    if exp.scale != "paper":
        return
    from .catalog import offline_hint
    from .utils import HubUnreachableError, hub_offline, hub_reachable

    if not hub_offline() and not hub_reachable():
        raise HubUnreachableError(
            f"{exp.name} loads {exp.base['model']} and {exp.base['task']} from the Hugging Face hub, "
            "which is unreachable from here (with both in your local cache, set HF_HUB_OFFLINE=1). "
            f"The lite experiments run offline: `fedpft-lite reproduce --list`. {offline_hint()}")
    if getattr(device, "type", "cpu") == "cpu" and not allow_cpu:
        raise NeedsGPUError(f"{exp.name} is a paper-scale experiment ({exp.base['model']}, "
                           f"{exp.base['rounds']} rounds, {exp.base['num_clients']} clients): it needs a "
                           "GPU, and none was found. Pass --allow-cpu (allow_cpu=True) to run it anyway.")


class _RunLock:
    """``runs/<key>/.lock`` while a process computes that run, so two reproductions started side by
    side (experiments share cells) never write the same run; a lock whose process died is taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = int(self.path.read_text() or 0)
            if _alive(pid):
                raise RuntimeError(f"{self.path.parent} is being computed by process {pid}; wait for "
                                   "it (rerun afterwards and the finished run is reused)") from None
            self.path.unlink()
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def client_costs(res: dict, run_dir: Path) -> dict:
    """The :data:`COST_COLUMNS` of one finished run, from what it recorded, never by rerunning it.

    Runs since these columns exist log ``proxy_parameters`` and ``trainable_parameters``; for an
    older run they are derived exactly from what it did record: its ``proxy_bytes`` over 4 bytes
    per float32 value, and one client's state from the history (the smallest per-client upload
    of any round: every client sends the same state, FedPFT's alignment rounds only add activation
    statistics to it). A value the run has no record for stays empty (None), and so does the
    setup time of a run that loaded its alignment from the cache instead of computing it."""
    log = res.get("log") or {}
    params = log.get("proxy_parameters")
    if params is None and log.get("proxy_bytes") is not None:
        params = log["proxy_bytes"] // FLOAT32_BYTES
    sent = log.get("trainable_parameters")
    if sent is None:
        sent = _state_values_from_history(run_dir / "history.json")
    rounds = res.get("rounds")
    # A run that loaded its layer-level alignment from the cache (aligned/) did not compute it: its
    # setup time is not the method's cost, so it is left empty rather than averaged in.
    before = log.get("before_rounds")
    cached = isinstance(before, dict) and before.get("cached")
    return {"client_params": params, "sent_params": sent,
            "seconds_per_round": res["seconds"] / rounds if rounds else None,
            "setup_seconds": None if cached else log.get("setup_seconds")}


def _state_values_from_history(path: Path) -> int | None:
    if not path.exists():
        return None
    uploads = [r["bytes_up"] / len(r["clients"]) for r in json.loads(path.read_text()) if r.get("clients")]
    return int(min(uploads)) // FLOAT32_BYTES if uploads else None


def _row(exp: Experiment, cell: str, seed: int, key: str, device_type: str, res: dict, run_dir: Path) -> dict:
    return {"experiment": exp.name, "cell": cell, "seed": seed, "method": res["method"],
            "fm_accuracy": res["fm_accuracy"], "fm_val_accuracy": res.get("fm_val_accuracy"),
            "proxy_accuracy": res["proxy_accuracy"],
            "mib_down_per_round": res["mean_bytes_down_per_round"] / 2**20,
            "mib_up_per_round": res["mean_bytes_up_per_round"] / 2**20,
            "seconds": res["seconds"], "device": device_type, "run": key, **client_costs(res, run_dir)}


def reproduce(name: str | Experiment, root: str | Path = "outputs/reproduce", seeds=None,
              quick: bool | None = None, device: str = "auto", cells: list[str] | None = None,
              allow_cpu: bool = False, progress: bool = True, verbose: bool | None = None,
              command: str | None = None):
    """Run every cell and seed of an experiment (reusing finished runs); returns the summary
    DataFrame, also written to ``root/<experiment>/summary.csv``.

    ``progress`` shows each run's progress bar; ``verbose`` (default: as ``progress``) prints a
    line per run."""
    import pandas as pd

    from .federated import CKPT, run_federated

    exp = get_experiment(name) if isinstance(name, str) else name
    verbose = progress if verbose is None else verbose
    quick = is_quick() if quick is None else quick
    todo = plan(exp, seeds, quick, device, cells)             # every config checked first
    dev = pick_device(device)
    _check_resources(exp, dev, allow_cpu)
    root = Path(root)
    out = summary_folder(exp.name, root, quick)
    out.mkdir(parents=True, exist_ok=True)
    call = {"command": command or " ".join(sys.argv),
            "seeds": sorted({s for _, s, _ in todo}), "cells": list(dict.fromkeys(c for c, _, _ in todo)),
            "quick": quick, "machine": machine_info(dev),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    rows, computed, t0 = [], 0, time.time()
    for i, (cell, seed, cfg) in enumerate(todo, 1):
        key = run_key(cfg, dev.type)
        run_dir = root / "runs" / key
        done = run_dir / "results.json"
        status = "reused"
        if not done.exists():
            with _RunLock(run_dir):
                if not done.exists():      # (re-checked under the lock)
                    resume = (run_dir / CKPT / "checkpoint.json").exists()
                    status = "resumed" if resume else "ran"
                    if verbose:
                        print(f"[{i}/{len(todo)}] {exp.name}: {cell}, seed {seed} -> {run_dir}", flush=True)
                    # The server's layer-level alignment is shared by every run with the same
                    # server-side inputs (all FedPFT cells of a seed): computed once, in aligned/.
                    run_federated(cfg.replace(output_dir=str(run_dir), resume=resume,
                                              cache_dir=str(root / "aligned")), progress=progress)
                    computed += 1
        res = json.loads(done.read_text())
        rows.append(_row(exp, cell, seed, key, dev.type, res, run_dir))
        if verbose:
            # the experiment's own metric first: a validation-read experiment shows validation
            read = (f"FM validation accuracy {100 * res['fm_val_accuracy']:.2f} % (test "
                    f"{100 * res['fm_accuracy']:.2f} %)" if exp.metric == "fm_val_accuracy"
                    and res.get("fm_val_accuracy") is not None else
                    f"FM accuracy {100 * res['fm_accuracy']:.2f} %")
            print(f"[{i}/{len(todo)}] {cell}, seed {seed}: {read} ({status})", flush=True)
        write_summary(out, rows)
    call.update(finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"), wall_seconds=round(time.time() - t0, 1),
                computed=computed, reused=len(todo) - computed)
    with _summary_lock(out):
        _append_invocation(out / "meta.json", exp.name, call)
    return read_summary(out / "summary.csv")


@contextlib.contextmanager
def _summary_lock(folder: Path):
    """An exclusive lock on an experiment's folder (POSIX ``flock``; none where there is none), so
    reproductions of one experiment run side by side (other seeds or cells) never write its
    summary.csv or meta.json at the same moment."""
    try:
        import fcntl
    except ImportError:              # Windows: no side-by-side protection
        yield
        return
    with open(folder / "summary.csv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_summary(folder: Path, rows: list[dict]) -> None:
    """Merge this invocation's rows into ``folder/summary.csv``: rows of the same (cell, seed) are
    replaced, every other row is kept. The file is re-read under the lock at every write, never
    from a copy taken at the start: two reproductions of one experiment started side by side
    (other seeds or cells) would otherwise each write back their own start-time copy and drop
    the rows the other added meanwhile."""
    import pandas as pd

    mine = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    path = folder / "summary.csv"
    with _summary_lock(folder):
        if path.exists():
            on_disk = read_summary(path)
            ids = set(zip(mine["cell"], mine["seed"]))
            kept = on_disk[[(c, s) not in ids for c, s in zip(on_disk["cell"], on_disk["seed"])]]
            mine = pd.concat([kept, mine], ignore_index=True) if len(kept) else mine
        tmp = path.with_name(f"summary.csv.tmp{os.getpid()}")
        in_column_order(mine).to_csv(tmp, index=False)
        os.replace(tmp, path)             # atomic: a reader sees the old or the new file


def _append_invocation(path: Path, name: str, call: dict) -> None:
    """meta.json keeps every invocation (a reproduction may be spread over several)."""
    meta = json.loads(path.read_text()) if path.exists() else {"experiment": name, "invocations": []}
    meta["invocations"].append(call)
    path.write_text(json.dumps(meta, indent=1))


def summary_folder(name: str, root: str | Path, quick: bool = False) -> Path:
    """Where an experiment's summary lives (quick runs apart, so they never mix with real ones)."""
    return Path(root) / name / "quick" if quick else Path(root) / name


def load_summary(name: str, root: str | Path, quick: bool = False) -> "pd.DataFrame":  # noqa: F821
    """The summary of a finished (or partly finished) reproduction."""
    path = summary_folder(name, root, quick) / "summary.csv"
    if not path.exists():
        raise FileNotFoundError(f"no results for {name} under {root}: run `fedpft-lite reproduce "
                                f"{name} --root {root}` first")
    return read_summary(path)


def read_summary(path: str | Path) -> "pd.DataFrame":  # noqa: F821
    """A summary.csv with every :data:`SUMMARY_COLUMNS` column (in that order, any others after):
    a file written before a column existed gets it empty (NaN), so readers never need to ask.
    ``fedpft-lite reproduce NAME --root ROOT --seeds ...`` with the runs already there fills the
    new columns in from the runs' results (all reused, nothing trained)."""
    import pandas as pd

    return in_column_order(pd.read_csv(path))


def in_column_order(df: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """``df`` with the :data:`SUMMARY_COLUMNS` first, in that order (missing ones empty), any others after."""
    return df.reindex(columns=SUMMARY_COLUMNS + [c for c in df.columns if c not in SUMMARY_COLUMNS])
