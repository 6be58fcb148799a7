"""A real Flower deployment on this machine: one ``flower-superlink`` and one ``flower-supernode``
per partition on 127.0.0.1, and ``flwr run`` against them -- for the fault tests and the faults
benchmark, where a SuperNode or the ServerApp must be a process that can be killed.

Unlike the simulation (:mod:`fedpft_lite.flower.simulation`, Ray workers inside the SuperLink),
every node here is its own ``flower-supernode`` process, which starts a fresh ClientApp process
for every message (so each message pays for importing torch and loading the proxy). The commands
are what the README's "Real machines" section types on several machines::

    flower-superlink --insecure --disable-runtime-dependency-installation --host 127.0.0.1 --port P
    flower-supernode --insecure --superlink 127.0.0.1:P --port Q_k \\
        --node-config "partition-id=k num-partitions=N"
    flwr run <app> fedpft-lite --stream

Every process runs in its own session, so killing a node kills its running ClientApp with it;
``close`` (also on an exception) stops every process started here and deletes the temporary
``FLWR_HOME`` (the SuperExecs that SuperLink and SuperNodes start watch their parent and exit with it).
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ..config import FedConfig
from ..history import History
from .settings import fedconfig_from_run_config
from .simulation import (CONNECTION, _free_port, _scripts_dir, _stop, _tail, _wait_ready,
                         flower_env, write_app, write_connection)


class LoopbackDeployment:
    """A SuperLink and ``num_nodes`` SuperNodes (node k holds partition k) on loopback.

    Use as a context manager. ``node_env`` gives one node extra environment variables (the
    ClientApp's testing hook ``FEDPFT_LITE_TEST_FAULT``, see :mod:`fedpft_lite.flower.client_app`).
    """

    def __init__(self, num_nodes: int, node_env: dict[int, dict] | None = None,
                 startup_timeout_s: float = 180.0):
        self.num_nodes, self.node_env = num_nodes, node_env or {}
        self.startup_timeout_s = startup_timeout_s
        self.home = Path(tempfile.mkdtemp(prefix="fedpft_lite_flwr_home_"))
        self.env = flower_env(self.home)
        self.bin = _scripts_dir()
        self.port = _free_port()
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[int, subprocess.Popen] = {}
        self.runs: list[subprocess.Popen] = []

    def _spawn(self, cmd: list[str], log_name: str, env: dict | None = None) -> subprocess.Popen:
        with open(self.home / log_name, "a") as log:
            return subprocess.Popen([str(self.bin / cmd[0]), *cmd[1:]], env=env or self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> "LoopbackDeployment":
        try:
            write_connection(self.home, self.port)
            self.superlink = self._spawn(["flower-superlink", "--insecure",
                                          "--disable-runtime-dependency-installation",
                                          "--host", "127.0.0.1", "--port", str(self.port)],
                                         "superlink.log")
            _wait_ready(self.superlink, self.port, self.startup_timeout_s, self.home / "superlink.log")
            for k in range(self.num_nodes):
                self.start_node(k)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_node(self, k: int) -> None:
        """(Re)start the SuperNode holding partition k."""
        self.nodes[k] = self._spawn(
            ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
             "--port", str(_free_port()), "--max-wait-time", str(self.startup_timeout_s),
             "--node-config", f"partition-id={k} num-partitions={self.num_nodes}"],
            f"node-{k}.log", {**self.env, **self.node_env.get(k, {})})

    def kill_node(self, k: int, sig: int = signal.SIGKILL) -> None:
        """Kill SuperNode k and its running ClientApp (its whole process group)."""
        os.killpg(self.nodes[k].pid, sig)
        self.nodes[k].wait()

    def submit(self, cfg: FedConfig, **flower_settings) -> subprocess.Popen:
        """Start ``flwr run`` for ``cfg`` (returns at once; the run goes on in the ServerApp)."""
        fedconfig_from_run_config({}, {**cfg.to_dict(), **flower_settings})  # fail here, not there
        app = write_app(self.home / f"app-{len(self.runs)}", cfg, **flower_settings)
        run = self._spawn(["flwr", "run", str(app), CONNECTION, "--stream"],
                          f"run-{len(self.runs)}.log")
        self.runs.append(run)
        return run

    def run(self, cfg: FedConfig, timeout_s: float, **flower_settings) -> History:
        """Run ``cfg`` to the end (at most ``timeout_s``) and return its history."""
        run = self.submit(cfg, **flower_settings)
        try:
            code = run.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"`flwr run` did not finish within {timeout_s:.0f} s\n{self.logs()}")
        if code != 0 or not (Path(cfg.output_dir) / "results.json").exists():
            raise RuntimeError(f"`flwr run` exited with {code} and wrote no results to "
                               f"{cfg.output_dir}\n{self.logs()}")
        return History.load(cfg.output_dir)

    def logs(self, n: int = 30) -> str:
        """The last lines of every process's log (for error messages)."""
        return "\n".join(f"--- {p.name}\n{_tail(p, n)}" for p in sorted(self.home.glob("*.log")))

    def close(self) -> None:
        """Stop every process this deployment started, then delete its FLWR_HOME."""
        for p in [*self.runs, *self.nodes.values(), self.superlink]:
            if p is not None:
                _stop(p, grace_s=5)
        import shutil
        shutil.rmtree(self.home, ignore_errors=True)


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.2):
    """Poll ``condition()`` until it returns something truthy (returned), or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")


__all__ = ["LoopbackDeployment", "wait_for"]
