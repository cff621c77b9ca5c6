"""Where a kremote request spends its time, on both sides (cProfile; not a benchmark).

    .venv/bin/python bench/profile_cell.py [--calls 500] [--mib 0] [--top 15]

Client side: ``Cluster.run("pass")`` (or push + pull of ``--mib`` MiB when given)
profiled in this process against a normal local agent. Agent side: an agent started
as the local backend starts it but under ``python -m cProfile``, driven by the same
requests; its profile is written when it is shut down and shown from
``Agent._handle`` down (idle polling left out). Profiling slows Python code down,
so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def top(stats: pstats.Stats, sort: str, n: int, *restrict: Any) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(*restrict, n)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:])


def workload(args: argparse.Namespace) -> tuple[str, Callable[[Any], None]]:
    if not args.mib:
        return (f'{args.calls} x run("pass")',
                lambda c: c.run("pass") if hasattr(c, "run") else c.request(
                    "execute", {"code": "pass", "env": {}, "execution_count": None}))
    import numpy as np

    arr = np.random.default_rng(0).random(args.mib * 1024 * 1024 // 8)

    def push_pull(c: Any) -> None:
        if hasattr(c, "push"):
            c.push({"a": arr})
            c.pull(["a"])
        else:
            c.request("push", payload={"a": arr})
            c.request("pull", {"names": ["a"]})

    return f"{args.calls} x push + pull of {args.mib} MiB", push_pull


def profile_client(args: argparse.Namespace, label: str, fn: Callable[[Any], None]) -> None:
    from jupyter_kremote.session import Cluster, ClusterOptions

    cluster = Cluster("bench-profile", ClusterOptions(count=1))
    try:
        for _ in range(min(50, args.calls)):
            fn(cluster)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(args.calls):
            fn(cluster)
        prof.disable()
        wall = time.perf_counter() - t0
    finally:
        cluster.shutdown()
    st = pstats.Stats(prof)
    print(f"## client: {label}, {wall / args.calls * 1e3:.3f} ms per call under cProfile\n")
    print("### by own time\n\n```\n" + top(st, "tottime", args.top) + "\n```\n")
    print("### by cumulative time\n\n```\n" + top(st, "cumulative", args.top) + "\n```\n")


def profile_agent(args: argparse.Namespace, label: str, fn: Callable[[Any], None]) -> None:
    from jupyter_kremote.client import ClusterClient, Endpoint
    from jupyter_kremote.protocol import new_key

    base = Path(tempfile.mkdtemp(prefix="kremote-profile-"))
    out = base / "agent.prof"
    key = new_key()
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "jupyter_kremote.agent",
           "--rank", "0", "--count", "1", "--host", "127.0.0.1", "--workdir",
           str(base / "rank-0"), "--ttl", "600", "--parent-pid", str(os.getpid()),
           "--ready-file", str(base / "ready"), "--key-stdin"]
    log = open(base / "agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log,
                            start_new_session=True)
    client = None
    try:
        proc.stdin.write(key + b"\n")  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        end = time.monotonic() + 30
        while not (base / "ready").exists():
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError((base / "agent.log").read_text()[-2000:])
            time.sleep(0.01)
        info = json.loads((base / "ready").read_text())
        client = ClusterClient(key, [Endpoint(0, "127.0.0.1", info["port"],
                                              info["control_port"])],
                               lambda r: None if proc.poll() is None else "exited")
        t0 = time.perf_counter()
        for _ in range(args.calls + min(50, args.calls)):
            fn(client)
        wall = time.perf_counter() - t0
        client.control("shutdown", timeout=1.0)
        proc.wait(10)
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
    n = args.calls + min(50, args.calls)
    st = pstats.Stats(str(out))
    shutil.rmtree(base, ignore_errors=True)
    print(f"## agent: {label} (+ warm-up), {wall / n * 1e3:.3f} ms per call seen by the "
          "client with the agent under cProfile\n")
    print("### by own time (idle polling left out)\n\n```\n"
          + top(st, "tottime", args.top, AGENT_OWN) + "\n```\n")
    print("### the request path, cumulative\n\n```\n"
          + top(st, "cumulative", args.top, AGENT_PATH) + "\n```\n")


#: pstats restrictions are regexes searched in "file:line(function)"
AGENT_OWN = r"^(?!.*\((poll|_data_loop|_control_loop|_watchdog)\)$)"
AGENT_PATH = (r"\((_handle|_do_\w+|run_cell|run_cell_async|run_ast_nodes|run_code|_send|"
              r"decode|encode|send_multipart|recv_multipart|store_inputs|transform_cell|"
              r"_flush_figures|runner|dumps|loads|_digest)\)$")


def micro(n: int) -> None:
    """Per-call costs of the pieces, in this process, without a profiler."""
    import zmq

    from jupyter_kremote.agent.shell import CellRunner
    from jupyter_kremote.protocol import Signer, new_key

    key = new_key()
    tx, rx = Signer(key, "kernel"), Signer(key, "agent-0")
    content = {"code": "pass", "env": {}, "execution_count": None}

    def per_call(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6

    rows = [("Signer.encode (execute request)", per_call(lambda: tx.encode("execute", content)))]
    msgs = iter([tx.encode("execute", content) for _ in range(n)])
    rows.append(("Signer.decode (execute request)", per_call(lambda: rx.decode(next(msgs)))))
    rows.append(("Signer.encode (reply)", per_call(
        lambda: rx.encode("reply", {"status": "ok", "execution_count": 1}, parent_id="x" * 32,
                          rank=0))))
    runner = CellRunner(lambda *a, **k: None)
    runner.run_cell("pass")
    rows.append(('CellRunner.run_cell("pass") (IPython)', per_call(lambda: runner.run_cell("pass"))))
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    port = a.bind_to_random_port("tcp://127.0.0.1")
    b.connect(f"tcp://127.0.0.1:{port}")

    def poller_call() -> None:
        poller = zmq.Poller()
        poller.register(a, zmq.POLLIN)
        poller.poll(0)

    rows.append(("new zmq.Poller + register + poll(0)", per_call(poller_call)))
    a.close(0)
    b.close(0)
    print("## pieces in isolation (no profiler)\n")
    print("| piece | us per call |\n|---|---|")
    for what, us in rows:
        print(f"| {what} | {us:.1f} |")
    print()


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/profile_cell.py", description=__doc__)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--mib", type=int, default=0, help="profile push + pull of this size")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    if not args.mib:
        micro(max(200, args.calls))
    label, fn = workload(args)
    profile_client(args, label, fn)
    profile_agent(args, label, fn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
