"""The server extension on the Kubernetes backend, against the kubesim emulator.

Every endpoint with pods, the stream seeing a pod's phase change, adoption of a previous
server's clusters, and users who cannot see each other's clusters. With
``KREMOTE_TEST_KUBECONFIG`` set, the same run against that cluster (fault knobs skipped).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import pytest
import pytest_asyncio

try:
    import jupyter_kremote_server  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server_ext"))

from conftest import wait_for
from jupyter_kremote_server.manager import ClusterManager, Limits
from test_kubernetes import REAL, managed, sim  # noqa: F401 - sim is a fixture
from test_server_ext import API, _call, _next, _refused

pytest_plugins = ["pytest_jupyter.jupyter_server"]
IMAGE = os.environ.get("KREMOTE_TEST_IMAGE")


@pytest_asyncio.fixture
async def jp_asyncio_loop():
    return asyncio.get_running_loop()


@pytest.fixture
def kube_env(sim, monkeypatch):  # noqa: F811
    from jupyter_kremote.backends.kube_api import KubeLoop

    monkeypatch.setenv("KREMOTE_KUBECONFIG", sim[0])
    monkeypatch.setattr(KubeLoop, "_instance", None)  # this test's emulator
    return sim


def _limits(user: str) -> Limits:
    return Limits(backend="kubernetes", user=user, default_ttl=600, max_ttl=3600)


@pytest_asyncio.fixture
async def left_by_earlier_servers(kube_env, tmp_path):
    """Clusters that servers of alice and of bob started, then left running on their exit."""
    for user, notebook in (("alice", "old/prev.ipynb"), ("bob", "bob/secret.ipynb")):
        manager = ClusterManager(_limits(user), root=str(tmp_path))
        model = await manager.ensure("default", notebook,
                                     {"cpu": "100m", "mem": "100Mi", "image": IMAGE})
        assert model.state == "running"
        await manager.close(keep=("kubernetes",))
    yield kube_env
    bob = ClusterManager(_limits("bob"), root=str(tmp_path))
    await bob.adopt()
    await bob.shutdown_all()


@pytest.fixture
def jp_server_config(left_by_earlier_servers):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_kremote_server": True}},
        "KRemoteApp": {"backend": "kubernetes", "user": "alice", "default_ttl": 600.0,
                       "max_ttl": 3600.0, "cull_interval": 3600.0,
                       "telemetry_interval": 1.0},
    }


def _ext(jp_serverapp):
    return next(iter(jp_serverapp.extension_manager.extensions["jupyter_kremote_server"]
                     .extension_points.values())).app


@pytest.mark.asyncio
async def test_kubernetes_clusters_through_the_server(jp_serverapp, jp_fetch, jp_ws_fetch,
                                                      left_by_earlier_servers):
    _, ks, admin = left_by_earlier_servers
    ext = _ext(jp_serverapp)
    await ext._start_jupyter_server_extension(jp_serverapp)  # what the server's start calls

    # adoption: alice's earlier cluster is back, bob's is not visible at all
    code, listing = await _call(jp_fetch, "clusters")
    assert [(c["id"], c["notebook"], c["state"], c["user"]) for c in listing["clusters"]] == [
        ("prev-default", "old/prev.ipynb", "running", "alice")]
    # its events say so (the pod's own, such as a readiness probe that failed while the agent
    # started on a loaded machine, may come before)
    assert "Adopted" in [e["reason"] for e in listing["clusters"][0]["events"]]
    code, message = await _refused(jp_fetch, "clusters", "secret-default")
    assert code == 404
    code, message = await _refused(jp_fetch, "clusters", "secret-default", method="DELETE")
    assert code == 404
    # the adopted cluster works: its agent kept running, the key came back from its Secret
    code, conn = await _call(jp_fetch, "clusters", "prev-default", "connection")
    await _run_via(conn, "print('adopted ok')")
    await _call(jp_fetch, "clusters", "prev-default", method="DELETE")
    assert not any("prev" in m for m in await asyncio.to_thread(managed, admin))

    ws = await jp_ws_fetch(*API, "stream")
    assert json.loads(await ws.read_message())["type"] == "snapshot"

    code, model = await _call(jp_fetch, "clusters", method="POST", body={
        "name": "default", "notebook": "nb/train.ipynb", "count": 2, "cpu": "100m",
        "mem": "100Mi", "image": IMAGE})
    assert code == 201 and model["backend"] == "kubernetes"
    rows = model["pods"]
    assert [r["rank"] for r in rows] == [0, 1]
    for r in rows:
        assert r["phase"] == "Running" and r["node"] and r["restarts"] == 0
        assert r["name"].startswith("jupyter-kremote-") and r["started"]
    # a second cluster in the namespace: still one set of watches, each sees its own pods
    from jupyter_kremote.backends.kube_watch import NamespaceWatch

    code, other = await _call(jp_fetch, "clusters", method="POST", body={
        "name": "other", "notebook": "nb/train.ipynb", "cpu": "100m", "mem": "100Mi",
        "image": IMAGE})
    assert [r["rank"] for r in other["pods"]] == [0]
    assert other["pods"][0]["name"] not in {r["name"] for r in rows}
    assert NamespaceWatch.count() == 1
    await _call(jp_fetch, "clusters", "train-other", method="DELETE")

    # Kubernetes events of the Job and its pods reach the model
    reasons: set[str] = set()
    for _ in range(20):  # the monitor copies them every half second
        code, events = await _call(jp_fetch, "clusters", "train-default", "events")
        reasons = {e["reason"] for e in events["events"]}
        if "Scheduled" in reasons:
            break
        await asyncio.sleep(0.25)
    assert {"Ready", "Scheduled"} <= reasons, reasons

    code, logs = await _call(jp_fetch, "clusters", "train-default", "logs",
                             params={"rank": "1", "tail": "50"})
    assert "listening on" in logs["text"]

    code, extended = await _call(jp_fetch, "clusters", "train-default", "extend",
                                 method="POST", body={"seconds": 600})
    assert extended["deadline"] == pytest.approx(model["deadline"] + 600, abs=5)
    msg = await _next(ws, lambda m: m["type"] == "cluster" and m["cluster"]["id"] ==
                      "train-default" and m["cluster"]["deadline"] == extended["deadline"])
    assert msg["cluster"]["events"][0]["reason"] == "Extended"

    if ks is not None:  # a pod's phase change reaches the stream within a second
        pod = rows[1]["name"]
        ks.call("evict", "default", pod, "The node was low on resource: memory.")
        ended = await _next(ws, lambda m: m["type"] == "ended")
        assert "rank 1" in ended["reason"] and "evicted" in ended["reason"], ended
    await _call(jp_fetch, "clusters", "train-default", method="DELETE")
    ws.close()
    assert await asyncio.to_thread(wait_for, lambda: not [
        m for m in managed(admin) if "train" in m], 20)


async def _run_via(conn: dict, code: str) -> None:
    from jupyter_kremote.client import ClusterClient, Endpoint

    eps = [Endpoint.from_json(e) for e in conn["endpoints"]]
    client = ClusterClient(base64.b64decode(conn["key"]), eps, lambda r: None)
    try:
        replies = await asyncio.to_thread(client.request, "execute",
                                          {"code": code, "env": {}}, timeout=30)
        assert all(m.content["status"] == "ok" for m in replies.values()), replies
    finally:
        client.close()



@pytest.mark.asyncio
async def test_server_compares_the_agents_with_the_kernels_python(kube_env, tmp_path):
    """The kernel asking for a cluster sends its own Python; the server (whose Python may
    differ) compares the agents with that one."""
    from jupyter_kremote_server.models import StartFailed

    manager = ClusterManager(_limits("carol"), root=str(tmp_path))
    try:
        with pytest.raises(StartFailed) as info:
            await manager.ensure("default", "d.ipynb", {
                "cpu": "100m", "mem": "100Mi", "image": IMAGE,
                "runtime": {"python": "3.9.18", "packages": {}, "imports": []}})
        assert "this kernel runs Python 3.9.18" in str(info.value)
    finally:
        await manager.shutdown_all()
    assert await asyncio.to_thread(wait_for, lambda: not managed(kube_env.admin), 20)


@pytest.mark.asyncio
async def test_adoption_carries_on_past_a_cluster_it_cannot_take_back(kube_env, tmp_path):
    """A restarted server adopts the user's clusters even when one is busy running a cell
    (no version check may time out and shut it down) and another cannot be taken back (its
    key Secret is gone): the busy one keeps running, the rest are adopted."""
    import subprocess
    import threading

    from jupyter_kremote.client import ClusterClient, Endpoint

    _, _, admin = kube_env
    first = ClusterManager(_limits("carol"), root=str(tmp_path))
    for notebook in ("a/broken.ipynb", "b/busy.ipynb", "c/fine.ipynb"):
        model = await first.ensure("default", notebook,
                                   {"cpu": "100m", "mem": "100Mi", "image": IMAGE})
        assert model.state == "running"
    conn = await first.connection("busy-default")
    going, done = threading.Event(), threading.Event()

    def long_cell() -> None:  # what a kernel does: a cell still running when the server goes
        eps = [Endpoint.from_json(e) for e in conn["endpoints"]]
        client = ClusterClient(base64.b64decode(conn["key"]), eps, lambda r: None)
        try:
            client.request("execute", {"code": "print('go', flush=True)\nimport time\n"
                                                "time.sleep(120)", "env": {}},
                           on_output=lambda rank, msg: going.set(), timeout=150)
        except Exception:  # noqa: BLE001 - ended by the shutdown at the end of the test
            pass
        finally:
            client.close()
            done.set()

    threading.Thread(target=long_cell, daemon=True).start()
    assert going.wait(30)
    await first.close(keep=("kubernetes",))

    def kubectl(*args: str) -> str:
        return subprocess.run(["kubectl", f"--kubeconfig={admin}", "-n", "default", *args],
                              check=True, capture_output=True, text=True, timeout=60).stdout

    jobs = json.loads(kubectl("get", "jobs", "-l", "kremote/user=carol", "-o", "json"))["items"]
    broken = next(j["metadata"]["name"] for j in jobs
                  if j["metadata"]["annotations"]["kremote/notebook-path"] == "a/broken.ipynb")
    secrets = json.loads(kubectl("get", "secrets", "-l", "kremote/user=carol", "-o", "json"))
    (key,) = [s["metadata"]["name"] for s in secrets["items"]
              if s["metadata"]["ownerReferences"][0]["name"] == broken]
    kubectl("delete", "secret", key)

    second = ClusterManager(_limits("carol"), root=str(tmp_path))
    try:
        assert sorted(await second.adopt()) == ["busy-default", "fine-default"]
        await _run_via(await second.connection("fine-default"), "print('adopted')")
        assert not done.is_set()  # the busy cell still runs: adoption did not end it
        # the one it could not take back is left as it was (its TTL still ends it)
        assert broken in kubectl("get", "jobs", "-o", "name")
    finally:
        await second.shutdown_all()
        kubectl("delete", "job", broken, "--wait=false")
    assert done.wait(30)
    assert wait_for(lambda: not kubectl("get", "jobs,pods,secrets", "-l", "kremote/user=carol",
                                        "-o", "name").split(), 60)


@pytest.mark.asyncio
async def test_a_refusal_over_a_limit_creates_nothing_in_kubernetes(kube_env, tmp_path):
    """Over the user's pod limit: one line naming the limit and the cluster in use, and no
    Job, pod or Secret made; a JupyterHub group's larger limit (the hub's policy, passed by the
    caller) lets the same request through."""
    from jupyter_kremote_server.models import OverLimit
    from jupyter_kremote_server.policy import LimitPolicy

    _, _, admin = kube_env
    manager = ClusterManager(Limits(backend="kubernetes", user="dave", default_ttl=600,
                                    max_pods=1), root=str(tmp_path))
    pod = {"cpu": "100m", "mem": "100Mi", "image": IMAGE}
    try:
        first = await manager.ensure("default", "d.ipynb", pod)
        made = sorted(await asyncio.to_thread(managed, admin))
        assert len(made) == 4, made  # its Job, pod, Secret and NetworkPolicy
        with pytest.raises(OverLimit) as info:
            await manager.ensure("more", "d.ipynb", pod)
        assert str(info.value) == (
            f"dave: pod limit 1 reached (1 in use by cluster {first.id}); this cluster asks "
            "for 1: ask for fewer or shut one down")
        assert sorted(await asyncio.to_thread(managed, admin)) == made
        policy = LimitPolicy({"max_pods": 1}, {"big": {"max_pods": 2}})
        with pytest.raises(OverLimit, match=r"^dave: pod limit 1 reached"):
            await manager.ensure("more", "d.ipynb", pod, limits=policy.resolve("dave", []))
        more = await manager.ensure("more", "d.ipynb", pod,
                                    limits=policy.resolve("dave", ["big"]))
        assert more.state == "running"
    finally:
        await manager.shutdown_all()
    assert await asyncio.to_thread(wait_for, lambda: not managed(admin), 20)


@pytest.mark.asyncio
async def test_server_reaches_and_adopts_clusters_through_port_forward(kube_env, tmp_path,
                                                                       monkeypatch):
    """`connect: port-forward` through the server: the endpoints it hands the kernel are its
    own 127.0.0.1 listeners; a restarted server (KREMOTE_CONNECT=port-forward, a server
    outside the cluster) adopts the cluster through port-forward too, variables kept."""
    if kube_env.ks is None:
        pytest.skip("counts the emulator's port-forward WebSockets")
    first = ClusterManager(_limits("erin"), root=str(tmp_path))
    model = await first.ensure("default", "pf.ipynb", {"cpu": "100m", "mem": "100Mi",
                                                       "image": IMAGE,
                                                       "connect": "port-forward"})
    assert model.state == "running"
    conn = await first.connection("pf-default")
    assert {e["host"] for e in conn["endpoints"]} == {"127.0.0.1"}
    await _run_via(conn, "kept = 5")
    await first.close(keep=("kubernetes",))
    monkeypatch.setenv("KREMOTE_CONNECT", "port-forward")
    before = kube_env.ks.call("portforwards_served")
    second = ClusterManager(_limits("erin"), root=str(tmp_path))
    try:
        assert await second.adopt() == ["pf-default"]
        conn = await second.connection("pf-default")
        assert {e["host"] for e in conn["endpoints"]} == {"127.0.0.1"}
        await _run_via(conn, "assert kept == 5")
        assert kube_env.ks.call("portforwards_served") > before
    finally:
        await second.shutdown_all()
    assert await asyncio.to_thread(wait_for, lambda: not managed(kube_env.admin), 20)
