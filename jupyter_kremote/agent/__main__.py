"""Entry point: ``python -m jupyter_kremote.agent``.

Settings come from flags, else from the environment a pod gets from its template
(``KREMOTE_RANK``, ``KREMOTE_COUNT``, ``KREMOTE_PORT``, ``KREMOTE_TTL``). The key comes
from ``KREMOTE_KEY`` (a Kubernetes Secret) or, with ``--key-stdin``, from the first line
of standard input, so that it never shows in a process listing or a manifest. On pods,
``KREMOTE_CURVE_SECRET`` encrypts both sockets and ``KREMOTE_CURVE_CLIENTS`` (the owner's
public key) is the only client admitted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import services
from .server import Agent, AgentSettings, install_signal_handlers
from .zap import parse_keys


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jupyter_kremote.agent")
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--host", default=os.environ.get("KREMOTE_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=_env_int("KREMOTE_PORT", 0))
    p.add_argument("--control-port", type=int, default=_env_int("KREMOTE_CONTROL_PORT", 0))
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--ttl", type=float, default=float(os.environ.get("KREMOTE_TTL", 3600)))
    p.add_argument("--parent-pid", type=int, default=None)
    p.add_argument("--ready-file", type=Path, default=None)
    p.add_argument("--key-stdin", action="store_true")
    p.add_argument("--cluster-dir", type=Path, default=None,
                   help="the cluster's folder: the agent removes its work folder on exit, "
                        "and the folder itself once empty if the kernel is gone")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s agent %(levelname)s %(message)s")
    if args.key_stdin:
        key = sys.stdin.readline().strip().encode()
    else:
        key = os.environ.pop("KREMOTE_KEY", "").encode()
    if not key:
        print("jupyter-kremote agent: no key (set KREMOTE_KEY or use --key-stdin)",
              file=sys.stderr)
        return 2
    os.environ.pop("KREMOTE_KEY", None)  # user code has no business reading it
    curve = os.environ.pop("KREMOTE_CURVE_SECRET", "").encode() or None
    try:
        clients = parse_keys(os.environ.pop("KREMOTE_CURVE_CLIENTS", ""))
    except ValueError as exc:
        print(f"jupyter-kremote agent: {exc}", file=sys.stderr)
        return 2
    rank = args.rank if args.rank is not None else _env_int(
        "KREMOTE_RANK", _env_int("JOB_COMPLETION_INDEX", 0))
    count = args.count if args.count is not None else _env_int("KREMOTE_COUNT", 1)
    control_port = args.control_port or (args.port + 1 if args.port else 0)
    workdir = (args.workdir or Path.cwd()).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))  # shipped modules import like local ones
    os.environ.update(KREMOTE_RANK=str(rank), KREMOTE_COUNT=str(count))
    for name, value in (("RANK", rank), ("WORLD_SIZE", count), ("LOCAL_RANK", 0),
                        ("LOCAL_WORLD_SIZE", 1)):  # pods: one agent per pod
        os.environ.setdefault(name, str(value))
    agent = Agent(AgentSettings(key=key, rank=rank, count=count, host=args.host,
                                port=args.port, control_port=control_port,
                                workdir=workdir, ttl=args.ttl, parent_pid=args.parent_pid,
                                ready_file=args.ready_file, curve_secret=curve,
                                curve_clients=clients,
                                cluster=os.environ.get("KREMOTE_CLUSTER", ""),
                                cluster_dir=args.cluster_dir))
    install_signal_handlers(agent)
    running = services.start(rank)  # rank 0's TensorBoard & co., in the working folder
    try:
        return agent.serve()
    finally:
        services.stop(running)
        agent.remove_workdir()  # also when serving failed


if __name__ == "__main__":
    sys.exit(main())
