"""Kubernetes control plane on kubesim: what jupyter-kremote adds around the API's own work.

    .venv/bin/python bench/kube_control.py [--runs 5] [--count 2]

Two figures per run, next to kubesim's own timings:

- *all pods Running -> first cell's result*: from the moment the backend's watch shows every
  pod Running to the first ``%%remote`` cell's result (agents registering over CURVE, the
  drift check, MASTER_ADDR, the cell itself);
- *shutdown -> nothing left*: from ``%remote shutdown`` until no Job, pod or Secret of the
  cluster exists and no agent process runs.

Goal: <= 1 s each. kubesim's own figure is "Job created -> all pods Running" (its scheduler,
kubelet and the agents' start-up as processes). No assertion: a MISS is information.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
GOAL = 1.0
MANAGED = "app.kubernetes.io/managed-by=jupyter-kremote"


def _left(admin: str) -> list[str]:
    async def go() -> list[str]:
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(config_file=admin, client_configuration=cfg)
        async with client.ApiClient(cfg) as api:
            core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
            out = [f"job/{j.metadata.name}" for j in (await batch.list_namespaced_job(
                "default", label_selector=MANAGED)).items]
            out += [f"pod/{p.metadata.name}" for p in (await core.list_namespaced_pod(
                "default", label_selector=MANAGED)).items]
            out += [f"secret/{s.metadata.name}" for s in (await core.list_namespaced_secret(
                "default", label_selector=MANAGED)).items]
            return out

    return asyncio.run(go())


def one_run(sim, count: int) -> tuple[float, float, float]:
    """(Job created -> all Running, all Running -> first result, shutdown -> nothing left)."""
    from jupyter_kremote.session import Cluster, ClusterOptions

    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        stages = [part.split(": ", 1)[1] for part in line.split(", ")]
        if len(stages) == count and all(s == "Running" for s in stages):
            marks.setdefault("running", time.perf_counter())

    t0 = time.perf_counter()
    cluster = Cluster("bench", ClusterOptions(backend="kubernetes", count=count,
                                              connect_timeout=60), progress=progress)
    replies = cluster.run("1 + 1")
    t_result = time.perf_counter()
    assert all(r.get("status") == "ok" for r in replies.values()), replies
    t_stop = time.perf_counter()
    cluster.shutdown()
    while _left(sim.admin) or sim.ks.call("processes"):
        time.sleep(0.02)
    t_gone = time.perf_counter()
    running = marks.get("running", t_result)
    return running - t0, t_result - running, t_gone - t_stop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/kube_control.py", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--count", type=int, default=2, help="pods per cluster")
    args = p.parse_args(argv)
    from test_kubernetes import start_sim

    from jupyter_kremote.backends.kube_api import KubeLoop

    with tempfile.TemporaryDirectory(prefix="kremote-bench-") as tmp:
        sim = start_sim(Path(tmp), pod_ips="unique")
        try:
            os.environ["KREMOTE_KUBECONFIG"] = sim.kubeconfig
            KubeLoop._instance = None
            one_run(sim, args.count)  # warm-up: imports, the shared watches
            rows = [one_run(sim, args.count) for _ in range(args.runs)]
        finally:
            if KubeLoop._instance is not None:
                KubeLoop._instance.close()
            sim.ks.stop()
    names = ("kubesim: Job created -> all pods Running",
             "kremote: all pods Running -> first cell's result",
             "kremote: %remote shutdown -> nothing left")
    print(f"\n### Kubernetes control plane on kubesim ({args.count} pods, {args.runs} runs)\n")
    print("| step | median | max | goal |")
    print("|---|---:|---:|---|")
    for i, name in enumerate(names):
        values = [r[i] for r in rows]
        med = statistics.median(values)
        goal = "-" if i == 0 else (f"<= {GOAL:g} s " + ("ok" if med <= GOAL else "MISS"))
        print(f"| {name} | {med:.3f} s | {max(values):.3f} s | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
