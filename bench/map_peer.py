"""A map peer (dask or ipyparallel) in a process of its own: it holds a warm 4-worker
cluster and times ``map`` rounds when asked, so that no client thread of theirs runs in
the benchmark process while kremote is timed (see README.md).

    python bench/map_peer.py dask|ipyparallel WORKERS

Reads one JSON command per line on stdin (``{"op": "map", "n": N}``, ``{"op": "stop"}``)
and answers one JSON line: the seconds the round took, or an error.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def square(x):
    return x * x


square.__module__ = "__main__"  # shipped by value: the workers cannot import this file


def start(kind: str, workers: int):
    if kind == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)

        def run(n: int) -> list:
            return client.gather(client.map(square, range(n), pure=False))

        def stop() -> None:
            client.close()
            cluster.close()

        return run, stop
    import ipyparallel as ipp

    cluster = ipp.Cluster(n=workers, log_level=logging.WARNING)
    rc = cluster.start_and_connect_sync()
    rc.wait_for_engines(workers, timeout=120)
    view = rc.load_balanced_view()

    def run(n: int) -> list:
        return view.map_sync(square, range(n))

    def stop() -> None:
        rc.close()
        cluster.stop_cluster_sync()

    return run, stop


def main() -> int:
    kind, workers = sys.argv[1], int(sys.argv[2])
    run, stop = start(kind, workers)
    try:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "stop":
                break
            try:
                n = int(cmd["n"])
                t0 = time.perf_counter()
                out = run(n)
                elapsed = time.perf_counter() - t0
                if list(out) != [x * x for x in range(n)]:
                    raise RuntimeError(f"{kind} returned other values")
                print(json.dumps({"elapsed": elapsed}), flush=True)
            except Exception as exc:  # noqa: BLE001 - reported to the benchmark
                print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:200]}), flush=True)
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
