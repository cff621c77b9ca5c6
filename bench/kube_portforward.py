"""The data plane through the API server's port-forward vs. direct to the pod IP, on kubesim.

    .venv/bin/python bench/kube_portforward.py [--calls 200] [--rounds 3] [--mib 256]

One kubesim, two one-pod clusters started side by side: one with ``connect="direct"``, one
with ``connect="port-forward"`` (every byte: kernel -> local listener -> WebSocket to
kubesim's API -> the pod). Timed in the same run, interleaved: a trivial cell (``1 + 1``)
and a push + pull of a ``--mib`` MiB NumPy array. Prints medians and the port-forward /
direct ratio. kubesim relays in Python on the same machine, so its port-forward is slower
than a real API server's; read the ratio as an upper bound. No assertion.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/kube_portforward.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=200, help="trivial cells per path")
    p.add_argument("--rounds", type=int, default=3, help="push+pull rounds per path")
    p.add_argument("--mib", type=int, default=256, help="size of the pushed array")
    args = p.parse_args(argv)
    import numpy as np
    from test_kubernetes import start_sim

    from jupyter_kremote.backends.kube_api import KubeLoop
    from jupyter_kremote.session import Cluster, ClusterOptions

    cell: dict[str, list[float]] = {"direct": [], "port-forward": []}
    data: dict[str, list[float]] = {"direct": [], "port-forward": []}
    array = np.ones(args.mib * 2**20 // 8)
    with tempfile.TemporaryDirectory(prefix="kremote-bench-") as tmp:
        sim = start_sim(Path(tmp), pod_ips="unique")
        clusters = {}
        try:
            os.environ["KREMOTE_KUBECONFIG"] = sim.kubeconfig
            KubeLoop._instance = None
            for mode in cell:
                clusters[mode] = Cluster(f"bench-{mode[:6]}", ClusterOptions(
                    backend="kubernetes", connect_timeout=60, connect=mode))
            for c in clusters.values():  # warm-up
                c.run("1 + 1")
                c.push({"a": array[:1000]})
            for _ in range(args.calls):
                for mode, c in clusters.items():
                    t = time.perf_counter()
                    c.run("1 + 1")
                    cell[mode].append(time.perf_counter() - t)
            for _ in range(args.rounds):
                for mode, c in clusters.items():
                    t = time.perf_counter()
                    c.push({"a": array})
                    back = c.pull(["a"])[0]["a"]
                    data[mode].append(time.perf_counter() - t)
                    assert back.nbytes == array.nbytes
        finally:
            for c in clusters.values():
                c.shutdown()
            if KubeLoop._instance is not None:
                KubeLoop._instance.close()
            sim.ks.stop()
    print(f"\n### Data plane: port-forward vs direct on kubesim ({args.calls} cells, "
          f"{args.rounds} x {args.mib} MiB push+pull)\n")
    print("| what | direct | port-forward | ratio |")
    print("|---|---:|---:|---:|")
    for name, table, unit, scale in (("trivial cell", cell, "ms", 1e3),
                                     (f"{args.mib} MiB push+pull", data, "s", 1.0)):
        d, f = statistics.median(table["direct"]), statistics.median(table["port-forward"])
        print(f"| {name} | {d * scale:.2f} {unit} | {f * scale:.2f} {unit} | {f / d:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
