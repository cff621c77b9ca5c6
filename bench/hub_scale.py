"""Scale of the hub's kremote service on kubesim: many users behind one service, compared with
the same users each running a single-user server that watches for itself (today's design).

    .venv/bin/python bench/hub_scale.py [--users 200] [--single 20] [--calls 400] [--idle 10]

A printed table, not a test: nothing is asserted. Setup, in one run:

- kubesim with RBAC on, ``--users`` users with 2 one-pod clusters each (Jobs and Secrets
  rendered by the product's own manifests, labelled and annotated as the service makes them);
- a real JupyterHub (SimpleLocalProcessSpawner, no server started: the benchmark's users only
  hold API tokens) and the kremote service as an external hub service, with the product's
  ServiceAccount token bound to the shipped Role; the service adopts every user's clusters
  on start (its restart path) and serves them;
- ``--single`` single-user Jupyter servers (the extension, Kubernetes backend, each adopting
  its own user's 2 clusters as after a restart, each with its own Kubernetes client), whose
  figures are scaled to ``--users`` servers (marked "x N/K", linear) when K < N.

**The pods run a silent listener, not an agent**: kubesim runs each pod's command as a process
on this machine, and 400 agents (about 40 MB and a second of CPU each) do not fit 2 shared
cores. Each pod runs a few lines of Python that accept connections on the agent's two ports and
never answer. The clusters are adopted, listed and watched as usual, but a ping gets no reply,
so the monitor's look at each cluster waits out its ping timeout instead of getting an answer:
idle CPU is what the watches, the monitor and the culler cost without the agents' replies.

Measured: open watches in the API server (kubesim's count, before and after), the service's
RSS and CPU while idle (``--idle`` seconds, no request), the p50 and p99 of one user's
``GET clusters`` (random users, direct to the service with the user's JupyterHub token, after
one warm-up call each so that the hub's token check is cached) and of the admin's ``GET
admin/clusters``; the same for the single-user servers (``GET clusters`` with their token).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "server_ext")]

CLUSTERS_PER_USER = 2
#: what each pod runs instead of an agent: it accepts the kernel's (here the service's)
#: connections on the agent's two ports and stays silent, so ZeroMQ waits out its handshake
#: instead of reconnecting every 100 ms as it would to a closed port
SILENT = ("import os,socket,select\n"
          "h=os.environ['KREMOTE_HOST'];p=int(os.environ['KREMOTE_PORT'])\n"
          "ls=[socket.create_server((h,q)) for q in (p,p+1)];held=[]\n"
          "while True:\n"
          "    for s in select.select(ls,[],[])[0]: held.append(s.accept()[0])\n")


def percentile(samples: list[float], q: float) -> float:
    """Nearest rank: an observed sample."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def users_of(n: int) -> list[str]:
    return [f"user{i:03d}" for i in range(n)]


# -- kubesim and the clusters ------------------------------------------------------------------
def start_kubesim(tmp: Path, pods: int) -> Any:
    from kubesim.scheduler import NodeSpec
    from test_kubernetes import start_sim

    nodes = [NodeSpec(name=f"kubesim-node-{i}", cpu="256", memory="1024Gi", pods=250)
             for i in range(max(1, -(-pods // 240)))]
    return start_sim(tmp, pod_ips="unique", nodes=nodes)


def populate(sim: Any, users: list[str]) -> int:
    """Each user's clusters, as the product renders them, their pods running ``sleep``."""
    import zmq

    from jupyter_kremote.backends.base import StartRequest
    from jupyter_kremote.backends.kubernetes import KubernetesBackend
    from jupyter_kremote.protocol import new_key
    from jupyter_kremote.spec import PodSpec, dns_safe_name

    backend = KubernetesBackend()
    made = 0
    rendered: list[list[dict[str, Any]]] = []
    for user in users:
        backend.settings.user = user
        for c in range(CLUSTERS_PER_USER):
            _public, curve_secret = zmq.curve_keypair()
            request = StartRequest(name=f"c{c}", notebook=f"work/nb{c}.ipynb",
                                   spec=PodSpec(cpu="10m", mem="16Mi", ttl=86400))
            docs = backend.render(
                request, key=new_key().decode(), redact=False,
                curve_secret=curve_secret.decode(), namespace="default",
                cluster_id=dns_safe_name(f"c{c}", base64.b32encode(os.urandom(5)).decode()
                                         .lower()))
            job = next(d for d in docs if d["kind"] == "Job")
            container = job["spec"]["template"]["spec"]["containers"][0]
            container["command"], container["args"] = ["python", "-S", "-c", SILENT], []
            container.pop("readinessProbe", None)  # nothing listens: no probe every 2 s
            rendered.append(sorted(docs, key=lambda d: d["kind"] != "Secret"))  # Secret first
    for batch in range(0, len(rendered), 50):  # one call on kubesim's loop per 50 clusters

        def create(ks: Any, clusters: list[list[dict[str, Any]]]) -> None:
            for docs in clusters:
                for doc in docs:
                    ks.create(doc)
        sim.ks.call(create, rendered[batch:batch + 50])
        made += len(rendered[batch:batch + 50])
    return made


def running_pods(sim: Any) -> int:
    from kubesim.resources import PODS

    def count(ks: Any) -> int:
        return sum(1 for p in ks.store.iter_objects(PODS)
                   if (p.get("status") or {}).get("phase") == "Running")
    return sim.ks.call(count)


def open_watches(sim: Any) -> int:
    return sim.ks.call(lambda ks: ks.store.watch_count)


def wait(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise SystemExit(f"hub_scale: gave up waiting for {what}")
        time.sleep(interval)


# -- HTTP --------------------------------------------------------------------------------------
def get(url: str, token: str) -> tuple[float, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as resp:
        body = resp.read()
    return time.perf_counter() - t0, json.loads(body)


def idle_cost(pids: list[int], seconds: float) -> tuple[float, float]:
    """(summed RSS in MiB, summed CPU % of one core) of ``pids`` over ``seconds`` of idleness."""
    import psutil

    procs = [psutil.Process(p) for p in pids]

    def cpu() -> float:
        total = 0.0
        for p in procs:
            t = p.cpu_times()
            total += t.user + t.system
        return total

    before, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    used, elapsed = cpu() - before, time.monotonic() - t0
    rss = sum(p.memory_info().rss for p in procs) / 2**20
    return rss, 100.0 * used / elapsed


def latencies(urls_tokens: list[tuple[str, str]], calls: int,
              check: Any = None) -> list[float]:
    samples = []
    for _ in range(calls):
        url, token = random.choice(urls_tokens)
        elapsed, body = get(url, token)
        if check is not None:
            check(body)
        samples.append(elapsed)
    return samples


# -- the run -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--single", type=int, default=20,
                        help="single-user servers actually started (scaled to --users)")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--monitor-interval", type=float, default=0.5,
                        help="the live view's look at every cluster (the product's default "
                             "0.5 s; silent pods make each look wait out a ping timeout)")
    parser.add_argument("--monitor-idle-interval", type=float, default=30.0,
                        help="pings of agents no panel watches (the product's default 30 s)")
    args = parser.parse_args()
    random.seed(1)
    users = users_of(args.users)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="kremote-bench-hub-") as tmpdir:
        tmp = Path(tmpdir)
        sim = start_kubesim(tmp, args.users * CLUSTERS_PER_USER)
        os.environ["KREMOTE_KUBECONFIG"] = sim.admin  # this process only renders
        try:
            t0 = time.monotonic()
            made = populate(sim, users)
            wait(lambda: running_pods(sim) >= made, 600, f"{made} pods Running")
            print(f"{made} clusters of {args.users} users, pods Running in "
                  f"{time.monotonic() - t0:.0f} s", flush=True)
            base_watches = open_watches(sim)
            rows += run_service(sim, tmp, users, args, base_watches)
            print_table(rows, args)  # printed now too, in case the second half fails
            rows += run_single(sim, tmp, users, args, open_watches(sim))
        finally:
            sim.ks.stop()
    print_table(rows, args)


def start_service(hub: Any, tmp: Path, monitor_interval: float,
                  monitor_idle_interval: float) -> Any:
    """The kremote service as the hub's external service (as tests/test_hub.py starts it), but
    never ending clusters for want of a running server: the benchmark's users have none."""
    import subprocess

    from test_hub import SERVICE

    env = {**os.environ, "JUPYTERHUB_API_TOKEN": hub.service_token,
           "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.hub_port}/hub/api",
           "JUPYTERHUB_SERVICE_NAME": SERVICE,
           "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{hub.service_port}",
           "JUPYTERHUB_SERVICE_PREFIX": f"/services/{SERVICE}/",
           "KREMOTE_KUBECONFIG": hub.kube[0]}
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_kremote_server.service",
         "--KRemoteService.owner_stopped_grace=-1", "--KRemoteService.cull_interval=5",
         f"--KRemoteService.monitor_interval={monitor_interval}",
         f"--KRemoteService.monitor_idle_interval={monitor_idle_interval}"],
        cwd=tmp, env=env, stdout=open(tmp / "service.log", "ab"),
        stderr=subprocess.STDOUT)


def stop(proc: Any, group: bool = False) -> None:
    import signal
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_service(sim: Any, tmp: Path, users: list[str], args: Any,
                base_watches: int) -> list[tuple[str, str, str]]:
    from test_hub import API, Hub

    hub = Hub(tmp, sim)
    hub.start()  # stops the hub again if it does not come up
    service = None
    try:
        r = hub.api("POST", "users", json={"usernames": users})
        assert r.status_code in (201, 409), r.text
        tokens = {u: hub.token(u) for u in users}
        admin = hub.token("admin")
        print(f"hub: {len(users)} users and their tokens", flush=True)
        t0 = time.monotonic()
        service = start_service(hub, tmp, args.monitor_interval,
                                args.monitor_idle_interval)
        base = f"http://127.0.0.1:{hub.service_port}/{API}"
        total = len(users) * CLUSTERS_PER_USER

        def adopted_all() -> bool:
            try:
                return len(get(f"{base}/admin/clusters", admin)[1]["clusters"]) >= total
            except OSError:
                return False

        wait(adopted_all, 900, f"the service to adopt {total} clusters", interval=2)
        adopted = time.monotonic() - t0
        print(f"service: {total} clusters adopted in {adopted:.0f} s", flush=True)
        watches = open_watches(sim) - base_watches
        rss, cpu = idle_cost([service.pid], args.idle)
        for u in users:  # warm the service's cache of the hub's token checks
            get(f"{base}/clusters", tokens[u])

        def two(body: Any) -> None:
            assert len(body["clusters"]) == CLUSTERS_PER_USER, body

        user_lat = latencies([(f"{base}/clusters", tokens[u]) for u in users], args.calls, two)
        admin_lat = latencies([(f"{base}/admin/clusters", admin)], max(20, args.calls // 10))
    finally:
        stop(service)
        stop(hub.proc, group=True)
    ms = 1000.0
    return [
        ("service: open watches", f"{watches}", "goal: as many as for 1 user"),
        ("service: adoption of every cluster", f"{adopted:.1f} s", "start to all listed"),
        ("service: RSS idle", f"{rss:.0f} MiB", "one process"),
        ("service: CPU idle", f"{cpu:.1f} %", f"of one core, over {args.idle:g} s"),
        ("service: user GET clusters p50 / p99",
         f"{statistics.median(user_lat) * ms:.1f} / {percentile(user_lat, 99) * ms:.1f} ms",
         f"{len(user_lat)} calls, random users"),
        ("service: admin GET admin/clusters p50 / p99",
         f"{statistics.median(admin_lat) * ms:.1f} / {percentile(admin_lat, 99) * ms:.1f} ms",
         f"{len(admin_lat)} calls, {len(users) * CLUSTERS_PER_USER} clusters"),
    ]


def run_single(sim: Any, tmp: Path, users: list[str], args: Any,
               base_watches: int) -> list[tuple[str, str, str]]:
    import test_server_kernel
    from test_server_kernel import TOKEN, Server

    # the tests' 30 s for a server to answer is short on a loaded machine next to 400 pods
    waits = test_server_kernel.wait_for
    test_server_kernel.wait_for = lambda ok, timeout=10.0, interval=0.05: waits(
        ok, max(timeout, 240.0), interval)

    k = min(args.single, len(users))
    scale = len(users) / k
    servers = []
    try:
        for i, user in enumerate(users[:k]):
            root = tmp / f"single-{i}" / "root"
            root.mkdir(parents=True)
            for attempt in range(3):  # a loaded machine may miss the server's 30 s start
                try:
                    servers.append(Server(root, tmp / f"single-{i}" / f"runtime-{attempt}", args=(
                        "--KRemoteApp.backend=kubernetes", f"--KRemoteApp.user={user}",
                        "--KRemoteApp.cull_interval=5",
                        f"--KRemoteApp.monitor_interval={args.monitor_interval}",
                        f"--KRemoteApp.monitor_idle_interval={args.monitor_idle_interval}"),
                        env={"KREMOTE_KUBECONFIG": sim.kubeconfig}))
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
        print(f"{k} single-user servers started", flush=True)
        wait(lambda: all(len(s.call("GET", "kremote/api/v1/clusters")["clusters"])
                         >= CLUSTERS_PER_USER for s in servers), 600,
             "the single-user servers to adopt their clusters", interval=2)
        watches = open_watches(sim) - base_watches
        rss, cpu = idle_cost([s.proc.pid for s in servers], args.idle)
        urls = [(f"{s.url}kremote/api/v1/clusters", TOKEN) for s in servers]
        lat = latencies(urls, args.calls)
    finally:
        for s in servers:
            s.stop()
    ms = 1000.0
    mark = f" (x {scale:g})" if k < len(users) else ""
    return [
        (f"{len(users)} single-user servers: open watches{mark}", f"{watches * scale:.0f}",
         f"{watches} for {k} servers"),
        (f"{len(users)} single-user servers: RSS idle{mark}", f"{rss * scale:.0f} MiB",
         f"{rss / k:.0f} MiB each"),
        (f"{len(users)} single-user servers: CPU idle{mark}", f"{cpu * scale:.1f} %",
         f"{cpu / k:.2f} % each"),
        ("single-user server: GET clusters p50 / p99",
         f"{statistics.median(lat) * ms:.1f} / {percentile(lat, 99) * ms:.1f} ms",
         f"{len(lat)} calls over {k} servers"),
    ]


def print_table(rows: list[tuple[str, str, str]], args: Any) -> None:
    print()
    print(f"Hub scale on kubesim: {args.users} users x {CLUSTERS_PER_USER} one-pod clusters "
          f"(pods run a silent listener, no agent: see the module's docstring); monitor every "
          f"{args.monitor_interval:g} s, agents pinged every {args.monitor_idle_interval:g} s "
          f"(no panel open); load average {os.getloadavg()[0]:.1f}")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>{vwidth}}  {note}")


if __name__ == "__main__":
    main()
