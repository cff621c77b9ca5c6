"""Interactive services beside rank 0's agent (TensorBoard, a web app): started and stopped
with it.

A template declares a service as a container port named ``kremote-<name>`` (what the Jupyter
server proxies) and, when the agent should start its server, the command in the env variable
``KREMOTE_SERVICE_<NAME>`` (upper case, ``-`` as ``_``). Rank 0 runs each such command with
``sh -c`` in its working folder; its output goes to the agent's log. The agent stops them when it
ends; a container that ends takes them with it in any case (they stay in its process group).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Mapping

import psutil

log = logging.getLogger("jupyter_kremote.agent")

ENV_PREFIX = "KREMOTE_SERVICE_"


def commands(env: Mapping[str, str]) -> dict[str, str]:
    """The service commands an environment declares: {env name: command}."""
    return {k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIX) and v.strip()}


def start(rank: int, env: Mapping[str, str] | None = None) -> list[subprocess.Popen]:
    """Start rank 0's services (other ranks run none); a command that cannot start is logged."""
    env = os.environ if env is None else env
    if rank != 0:
        return []
    procs = []
    for name, command in commands(env).items():
        try:
            procs.append(subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL))
        except OSError as exc:
            log.warning("service %s did not start: %s", name, exc)
            continue
        log.info("service %s started (pid %d): %s", name, procs[-1].pid, command)
    return procs


def stop(procs: list[subprocess.Popen], grace: float = 3.0) -> None:
    """Stop each service and what it started: SIGTERM, then SIGKILL after `grace` seconds."""
    tree: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(proc.pid)
            tree += [parent, *parent.children(recursive=True)]
    for p in tree:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)  # reaped: no zombie left
