"""One call from Python (tests, notebooks, benchmarks): an experiment through Flower's simulation,
started the way Flower starts it from the command line, ``flwr run``.

Flower's Python ``flwr.simulation.run_simulation`` is deprecated (Flower 1.42 warns that it "will
be removed in a future version" and points to ``flwr run``); the entry point is the command line,
``flwr run <app> <connection>`` against a SuperLink. This module
does, in subprocesses, what you would type:

1. ``flower-superlink --insecure --simulation --disable-runtime-dependency-installation
   --host 127.0.0.1 --port P`` -- a local SuperLink in simulation mode (its SuperExec runs the
   ServerApp and Ray's ClientApp actors, one virtual SuperNode per client), on a free port, with
   ``FLWR_HOME`` in a temporary folder (so ``~/.flwr`` is left alone);
2. a Flower app folder: ``pyproject.toml`` naming this package's ServerApp and ClientApp, with the
   experiment as its ``[tool.flwr.app.config]`` (so it works without a repository checkout), and a
   connection ``[superlink.fedpft-lite] address = "127.0.0.1:P"`` in ``$FLWR_HOME/config.toml``;
3. ``flwr run <app> fedpft-lite --stream --federation-config "num-supernodes=N ..."``;
4. stop the SuperLink, delete the temporary folder, read the history the ServerApp wrote.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ..config import FedConfig
from ..history import History

CONNECTION = "fedpft-lite"   # the SuperLink connection's name in $FLWR_HOME/config.toml
#: How often a run that stopped before round 1 (Ray failing to start on a busy machine) is started,
#: with pauses of 15, 30, 60 and 120 s between: three attempts within a minute all failed on the
#: 2-core machine at load average 6.8 (two busy loops, CI's tests and two more jobs).
START_ATTEMPTS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scripts_dir() -> Path:
    """Where this environment's ``flwr`` and ``flower-superlink`` are (a kernel's PATH may lack it)."""
    here = Path(sys.executable).parent
    return here if (here / "flwr").exists() else Path(shutil.which("flwr") or "flwr").parent


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def write_app(folder: Path, cfg: FedConfig, **flower_settings) -> Path:
    """A Flower app folder running ``cfg``: ``pyproject.toml`` with this package's components
    and the experiment as the app config (every key, so ``--run-config`` may override any)."""
    import tomli_w   # a dependency of flwr

    from .settings import run_config

    project = {"project": {"name": "fedpft-lite-run", "version": "1.0.0"},
               "tool": {"flwr": {"app": {"publisher": "fedpft-lite",
                                         "components": {"serverapp": "fedpft_lite.flower.server_app:app",
                                                        "clientapp": "fedpft_lite.flower.client_app:app"},
                                         "config": run_config(cfg, **flower_settings)}}}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(project))
    return folder


def flower_env(home: Path) -> dict:
    """The environment of the Flower processes: ``FLWR_HOME`` = ``home``, no update check, and
    this ``fedpft_lite`` first on the path when it is a source checkout (not site-packages), so
    the ServerApp and ClientApps run the caller's code, not another installed copy."""
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1"}
    root = Path(__file__).resolve().parents[2]
    if root.name != "site-packages":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env


def write_connection(home: Path, port: int) -> None:
    """``$FLWR_HOME/config.toml`` with one connection, the default: the SuperLink on ``port``."""
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')


def federation_config(num_supernodes: int, client_cpus: float, client_gpus: float,
                      total_cpus: int | None, quiet: bool) -> str:
    """The ``--federation-config`` of a local simulation: its size and Ray's resources."""
    opts = [f"num-supernodes={num_supernodes}", f"client-resources-num-cpus={client_cpus}",
            f"client-resources-num-gpus={float(client_gpus)}"]
    if total_cpus:
        opts.append(f"init-args-num-cpus={total_cpus}")
    if quiet:
        opts += ['init-args-logging-level="ERROR"', "init-args-log-to-driver=false"]
    return " ".join(opts)


def run_simulation(cfg: FedConfig, *, client_cpus: float = 1, client_gpus: float | None = None,
                   total_cpus: int | None = None, quiet: bool = True, echo: bool = False, startup_timeout_s: float = 180.0,
                   timeout_s: float | None = None, **flower_settings) -> History:
    """Run ``cfg`` through ``flwr run`` on a local simulation SuperLink (see the module
    docstring); returns its :class:`History` (read back from ``cfg.output_dir``, which defaults
    to a new folder under the system temp dir).

    Args:
        client_cpus: CPUs per ClientApp actor (Ray runs ``total_cpus / client_cpus`` at once).
        client_gpus: GPUs per ClientApp actor. Default: 1 if ``cfg.device`` resolves to CUDA
            (Ray hides the GPUs from an actor that asks for none), else 0.
        total_cpus: CPUs Ray may use (default: all).
        quiet: keep the run's log (Flower, Ray) out of the output; it is shown if the run fails.
        echo: print the commands as they run.
        timeout_s: stop ``flwr run`` (and the SuperLink) after this many seconds (default: none).
        startup_timeout_s: how long the SuperLink may take to answer (generous: a busy machine).
        flower_settings: Flower-only keys with underscores (``proxy_dir=...``).

    A run that stops before finishing round 1 (no new checkpoint: typically Ray failing to start
    on a busy machine) is started again, up to :data:`START_ATTEMPTS` times in all, each failed
    attempt's log printed to stderr; any other failure raises ``RuntimeError`` with the run's and
    the SuperLink's logs.
    """
    from ..utils import pick_device
    from .settings import fedconfig_from_run_config

    from ..federated import check_output_dir

    fedconfig_from_run_config({}, {**cfg.to_dict(), **flower_settings})  # fail before starting,
    check_output_dir(cfg.validate().resolved())   # also on finished results or a missing checkpoint
    if client_gpus is None:
        client_gpus = 1.0 if pick_device(cfg.device).type == "cuda" else 0.0
    if cfg.output_dir is None:   # else the ServerApp picks a folder we cannot find
        cfg = cfg.replace(output_dir=tempfile.mkdtemp(prefix="fedpft_lite_flower_"))
    out = Path(cfg.output_dir)
    flower_settings.setdefault("proxy_dir", str(out / "proxy"))

    before = _progress(out)
    for attempt in range(1, START_ATTEMPTS + 1):
        failure = _run_once(cfg, out, client_cpus, client_gpus, total_cpus, quiet, echo,
                            startup_timeout_s, timeout_s, flower_settings)
        if failure is None:
            return History.load(out)
        # Ray's start is the fragile part on a busy machine: its raylet must register with its GCS
        # within 30 s (fixed inside Ray 2.55's node.py), else Flower's simulation runtime exits. A
        # run that got nothing done, not even round 1's checkpoint, is started again (after a
        # pause that grows). A run that got somewhere (a checkpoint newer than before) failed for
        # a reason of its own and is reported as it is.
        if attempt < START_ATTEMPTS and _progress(out) == before:
            pause = 15 * 2 ** (attempt - 1)   # a busy spell may last minutes: wait longer each time
            print(f"fedpft_lite.flower: attempt {attempt} of {START_ATTEMPTS} stopped before finishing round 1 "
                  f"({failure.splitlines()[0]}); Ray or Flower may have failed to start on a busy machine, "
                  f"so it is started again in {pause} s. That attempt's log:\n{failure}",
                  file=sys.stderr, flush=True)
            time.sleep(pause)
            continue
        raise RuntimeError(failure)
    raise AssertionError("unreachable")


def _progress(out: Path) -> tuple[bool, int]:
    """How far the run in ``out`` has got: finished?, last checkpointed round (0: none)."""
    import json

    from ..run_folder import checkpoint_file, finished

    ckpt = checkpoint_file(out)
    try:
        rnd = json.loads(ckpt.read_text())["round"] if ckpt.exists() else 0
    except (OSError, ValueError, KeyError):   # being replaced right now: count it as progress
        rnd = -1
    return finished(out), rnd


def _run_once(cfg: FedConfig, out: Path, client_cpus, client_gpus, total_cpus, quiet, echo,
              startup_timeout_s, timeout_s, flower_settings) -> str | None:
    """One SuperLink and one ``flwr run``; None when the run wrote its history, else what failed
    (with the logs' tails)."""
    home = Path(tempfile.mkdtemp(prefix="fedpft_lite_flwr_home_"))   # FLWR_HOME: removed below
    port = _free_port()
    env = flower_env(home)
    superlink_cmd = ["flower-superlink", "--insecure", "--simulation",
                     "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
                     "--port", str(port)]
    run_cmd = ["flwr", "run", str(home / "app"), CONNECTION, "--stream", "--federation-config",
               federation_config(cfg.num_clients, client_cpus, client_gpus, total_cpus, quiet)]
    superlink_log, run_log = home / "superlink.log", home / "run.log"
    bin_dir = _scripts_dir()
    try:
        write_connection(home, port)
        write_app(home / "app", cfg, **flower_settings)
        if echo:
            print("$", shlex.join(superlink_cmd))
        with open(superlink_log, "w") as log:
            superlink = subprocess.Popen([str(bin_dir / superlink_cmd[0]), *superlink_cmd[1:]],
                                         env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            _wait_ready(superlink, port, startup_timeout_s, superlink_log)
            if echo:
                print(f"$ FLWR_HOME={home}", shlex.join(run_cmd))
            with open(run_log, "w") as log:
                try:
                    done = subprocess.run([str(bin_dir / run_cmd[0]), *run_cmd[1:]], env=env,
                                          stdout=log if quiet else None, stderr=subprocess.STDOUT,
                                          timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise TimeoutError(f"`flwr run` did not finish within {timeout_s:g} s. Its "
                                       f"output:\n{_tail(run_log)}") from None
        finally:
            _stop(superlink)
        if done.returncode != 0 or not (out / "history.json").exists():
            return (f"`flwr run` exited with {done.returncode} and wrote no history to {out}. Its "
                    f"output:\n{_tail(run_log)}\nSuperLink log:\n{_tail(superlink_log)}")
        return None
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _wait_ready(process: subprocess.Popen, port: int, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"flower-superlink did not answer on port {port} within {timeout_s:.0f} s:\n"
                       f"{_tail(log)}")


def _stop(process: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGTERM to a process group we started (the SuperLink stops its SuperExec), SIGKILL after
    ``grace_s``. The group may outlive its leader (a killed node's ClientApp): signal it anyway."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:   # the whole group is gone
        process.poll()
        return
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
