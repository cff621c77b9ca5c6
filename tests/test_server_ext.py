"""The jupyter-server extension: REST API over local clusters, limits, culling, auth."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from tornado.httpclient import HTTPClientError

try:
    import jupyter_kremote_server  # noqa: F401 - installed with the wheel
except ImportError:  # a source checkout: hatch maps server_ext/ into the wheel only
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server_ext"))

from conftest import alive, all_agent_pids, wait_for
from jupyter_kremote_server.manager import ClusterManager, Limits
from jupyter_kremote_server.models import BadRequest

pytest_plugins = ["pytest_jupyter.jupyter_server"]

API = ("kremote", "api", "v1")


@pytest_asyncio.fixture
async def jp_asyncio_loop():
    """Run the server on the loop that pytest-asyncio runs the (marked) test on.

    pytest-jupyter otherwise serves on a loop of its own, and a ``@pytest.mark.asyncio`` test
    awaiting ``jp_fetch`` on pytest-asyncio's loop would wait forever.
    """
    return asyncio.get_running_loop()


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_kremote_server": True}},
        "KRemoteApp": {
            "backend": "local",
            "default_ttl": 600.0,
            "max_ttl": 3600.0,
            "max_clusters": 1,
            "max_pods": 2,
            "max_gpus": 2,
            "max_cpu": "1",
            "max_memory": "1Gi",
            "allowed_templates": ["gpu", "shm"],
            "allowed_images": ["python:3.11*"],
            "user": "alice",
            "cull_interval": 3600.0,  # tests call cull_once themselves
        },
    }


@pytest.fixture(autouse=True)
def no_agent_left():
    before = all_agent_pids()
    yield
    assert wait_for(lambda: not (all_agent_pids() - before), 60), \
        f"agents left behind: {all_agent_pids() - before}"


@pytest.fixture
def manager(jp_serverapp) -> ClusterManager:
    return jp_serverapp.web_app.settings["kremote_manager"]


async def _call(jp_fetch, *path: str, method: str = "GET", body=None, **kw):
    if body is not None:
        kw["body"] = json.dumps(body)
    resp = await jp_fetch(*API, *path, method=method, **kw)
    return resp.code, (json.loads(resp.body) if resp.body else None)


async def _refused(jp_fetch, *path: str, method: str = "GET", body=None, **kw):
    with pytest.raises(HTTPClientError) as info:
        await _call(jp_fetch, *path, method=method, body=body, **kw)
    return info.value.code, json.loads(info.value.response.body)["message"]


@pytest.mark.asyncio
async def test_every_endpoint_on_local_backend(jp_fetch):
    code, model = await _call(jp_fetch, "clusters", method="POST",
                              body={"name": "default", "notebook": "work/train.ipynb",
                                    "count": 1})
    assert code == 201
    assert model["id"] == "train-default"
    assert model["state"] == "running" and model["backend"] == "local"
    assert model["ended"] is None

    # ensure is idempotent: the same name and notebook give the same cluster
    code, again = await _call(jp_fetch, "clusters", method="POST",
                              body={"name": "default", "notebook": "work/train.ipynb"})
    assert again["id"] == model["id"] and again["created"] == model["created"]

    code, listing = await _call(jp_fetch, "clusters")
    assert [c["id"] for c in listing["clusters"]] == ["train-default"]

    code, got = await _call(jp_fetch, "clusters", "train-default")
    assert code == 200
    assert [p["rank"] for p in got["pods"]] == [0]
    assert got["pods"][0]["state"] == "idle"
    pid = got["pods"][0]["pid"]
    assert psutil.pid_exists(pid)
    assert 590 < got["deadline"] - time.time() <= 600

    code, extended = await _call(jp_fetch, "clusters", "train-default", "extend",
                                 method="POST", body={"seconds": 120})
    assert code == 200
    assert extended["deadline"] == pytest.approx(got["deadline"] + 120, abs=2)

    assert wait_for(lambda: _log_has(got["pods"][0]["workdir"]), 60)
    code, logs = await _call(jp_fetch, "clusters", "train-default", "logs",
                             params={"rank": "0", "tail": "100"})
    assert code == 200 and logs["rank"] == 0
    assert "listening on" in logs["text"]

    code, _ = await _call(jp_fetch, "clusters", "train-default", method="DELETE")
    assert code == 204
    assert wait_for(lambda: not alive(pid), 60)
    code, listing = await _call(jp_fetch, "clusters")
    assert listing["clusters"] == []

    code, message = await _refused(jp_fetch, "clusters", "train-default")
    assert code == 404 and "no cluster 'train-default'" in message


def _log_has(workdir: str) -> bool:
    log = Path(workdir).parent / "rank-0.log"
    return log.exists() and "listening on" in log.read_text(errors="replace")


@pytest.mark.asyncio
async def test_unknown_id_and_bad_input(jp_fetch):
    for path, method, body in [
        (("clusters", "nope"), "GET", None),
        (("clusters", "nope"), "DELETE", None),
        (("clusters", "nope", "extend"), "POST", {"seconds": 10}),
        (("clusters", "nope", "logs"), "GET", None),
    ]:
        code, message = await _refused(jp_fetch, *path, method=method, body=body)
        assert code == 404, (path, method)
        assert message == "no cluster 'nope' (clusters: none)"

    for body, expect in [
        ({"count": 0}, "--count 0: must be at least 1"),
        ({"count": "two"}, "expected a whole number"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"backend": "cloud"}, "backend 'cloud': expected local or kubernetes"),
        ({"name": ""}, "expected a non-empty cluster name"),
    ]:
        code, message = await _refused(jp_fetch, "clusters", method="POST", body=body)
        assert code == 400, body
        assert expect in message and "\n" not in message
    code, message = await _refused(jp_fetch, "clusters", method="POST", body=[1, 2])
    assert code == 400


@pytest.mark.asyncio
async def test_limits_refuse_and_create_nothing(jp_fetch):
    before = all_agent_pids()
    code, message = await _refused(jp_fetch, "clusters", method="POST",
                                   body={"name": "big", "gpu": 3})
    assert code == 403
    assert message == ("alice: GPU limit 2 reached (0 in use); this cluster asks for 3: "
                       "ask for fewer")
    code, message = await _refused(jp_fetch, "clusters", method="POST",
                                   body={"name": "many", "count": 3})
    assert code == 403 and message.startswith("alice: pod limit 2 reached (0 in use)")
    code, message = await _refused(jp_fetch, "clusters", method="POST",
                                   body={"name": "cpu", "count": 2, "cpu": "600m"})
    assert code == 403
    assert message == ("alice: CPU limit 1 reached (0 in use); this cluster asks for 1.2: "
                       "ask for less")
    code, message = await _refused(jp_fetch, "clusters", method="POST",
                                   body={"name": "mem", "mem": "1536Mi"})
    assert code == 403 and message.startswith(
        "alice: memory limit 1Gi reached (0 in use); this cluster asks for 1.5Gi")
    code, message = await _refused(jp_fetch, "clusters", method="POST",
                                   body={"name": "q", "templates": ["kueue"]})
    assert code == 403
    assert message == "alice: template 'kueue' is not allowed; the admin allows gpu, shm"
    code, message = await _refused(jp_fetch, "clusters", method="POST",
                                   body={"name": "img", "image": "evil/miner:latest"})
    assert code == 403
    assert message == "alice: image 'evil/miner:latest' is not allowed; the admin allows python:3.11*"
    code, message = await _refused(jp_fetch, "clusters", method="POST",
                                   body={"name": "long", "ttl": 7200})
    assert code == 403
    assert message == "alice: TTL limit 1h 00m is less than the 2h 00m asked for; ask for less"

    code, first = await _call(jp_fetch, "clusters", method="POST", body={"name": "one"})
    assert code == 201
    code, message = await _refused(jp_fetch, "clusters", method="POST", body={"name": "two"})
    assert code == 403
    assert message == "alice: cluster limit 1 reached (1 running: cluster one); shut one down first"
    code, listing = await _call(jp_fetch, "clusters")
    assert [c["id"] for c in listing["clusters"]] == ["one"]
    assert len(all_agent_pids() - before) == 1

    # extending past max_ttl (1 h from creation) is refused and moves nothing
    code, message = await _refused(jp_fetch, "clusters", "one", "extend", method="POST",
                                   body={"seconds": 3500})
    assert code == 403 and message.startswith("alice: TTL limit 1h 00m reached: extending by ")
    code, got = await _call(jp_fetch, "clusters", "one")
    assert got["deadline"] == pytest.approx(first["deadline"], abs=0.01)
    code, message = await _refused(jp_fetch, "clusters", "one", "extend", method="POST",
                                   body={"seconds": "soon"})
    assert code == 400
    code, message = await _refused(jp_fetch, "clusters", "one", "logs", params={"rank": "5"})
    assert code == 400 and "no rank 5" in message

    await _call(jp_fetch, "clusters", "one", method="DELETE")
    code, _ = await _call(jp_fetch, "clusters", method="POST", body={"name": "two"})
    assert code == 201
    await _call(jp_fetch, "clusters", "two", method="DELETE")


@pytest.mark.asyncio
async def test_culling_a_cluster_past_its_ttl(jp_fetch, manager):
    code, model = await _call(jp_fetch, "clusters", method="POST", body={"name": "old"})
    pid = model["pods"][0]["pid"]
    assert await manager.cull_once(now=time.time() + 60) == {}
    culled = await manager.cull_once(now=model["deadline"] + 1)
    assert culled == {"old": "its TTL ran out"}
    assert wait_for(lambda: not alive(pid), 60)
    code, got = await _call(jp_fetch, "clusters", "old")
    assert got["state"] == "ended" and got["ended"] == "its TTL ran out"
    assert got["pods"] == [] and got["ended_at"] is not None
    code, message = await _refused(jp_fetch, "clusters", "old", "extend", method="POST",
                                   body={"seconds": 10})
    assert code == 409 and "its TTL ran out" in message
    # an ended cluster does not count against the limits: a new one may start in its place
    code, fresh = await _call(jp_fetch, "clusters", method="POST", body={"name": "old"})
    assert fresh["state"] == "running" and fresh["id"] == "old"
    await _call(jp_fetch, "clusters", "old", method="DELETE")


@pytest.mark.asyncio
async def test_idle_culling_without_a_server(tmp_path):
    manager = ClusterManager(Limits(idle_cull_seconds=30), root=str(tmp_path))
    try:
        model = await manager.ensure("idle", "", {"count": 1})
        assert model.id == "idle"
        assert await manager.cull_once() == {}
        culled = await manager.cull_once(now=time.time() + 31)
        assert culled == {"idle": "it was idle for more than 30s"}
        got = await manager.get("idle")
        assert (got.state, got.ended) == ("ended", "it was idle for more than 30s")
        assert [m.id for m in await manager.list_clusters()] == ["idle"]
        await manager.shutdown("idle")
        assert await manager.list_clusters() == []
    finally:
        await manager.shutdown_all()


def _kernel_client(conn: dict):
    """A client of the cluster's agents of its own, as a kernel holds (not the manager's)."""
    import base64

    from jupyter_kremote.client import ClusterClient, Endpoint

    return ClusterClient(base64.b64decode(conn["key"]),
                         [Endpoint.from_json(e) for e in conn["endpoints"]], lambda r: None)


async def _until(check, what: str, timeout: float = 60.0):
    """Await ``check()`` until it is true (polled, with a deadline)."""
    end = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_without_a_panel_the_monitor_pings_agents_seldom(tmp_path):
    """The hub's service holds hundreds of clusters nobody looks at: while no WebSocket
    listens, the agents are pinged once per monitor_idle_interval, not on every pass; an open
    panel gets every pass; that an agent died is seen on every pass either way."""
    import os
    import signal

    manager = ClusterManager(Limits(monitor_idle_interval=3600), root=str(tmp_path))
    client = None
    try:
        await manager.ensure("quiet", "", {"count": 1})
        client = _kernel_client(await manager.connection("quiet"))
        flag = tmp_path / "go"
        cell = asyncio.ensure_future(asyncio.to_thread(
            client.request, "execute", {"code": "import os, time\nwhile not os.path."
                                        f"exists({str(flag)!r}): time.sleep(0.02)",
                                        "env": {}}, timeout=120))

        async def row() -> dict:
            await manager.monitor_once()
            return (await manager.get("quiet")).pods[0]

        panel = manager.hub.subscribe()  # a panel opens: each pass pings
        await _until(lambda: _is(row(), "busy"), "the panel to show the kernel's cell")
        manager.hub.unsubscribe(panel)
        flag.touch()
        assert (await cell)[0].content["status"] == "ok"
        for _ in range(3):  # the agent is idle now, but no pass asked it again
            assert (await row())["state"] == "busy"
        manager.limits.monitor_idle_interval = 0.0  # its idle interval passed: asked again
        assert (await row())["state"] == "idle"

        manager.limits.monitor_idle_interval = 3600
        os.kill((await row())["pid"], signal.SIGKILL)  # no panel, and yet seen
        await _until(lambda: _is(_model_state(manager, "quiet"), "ended"), "the end")
        got = await manager.get("quiet")
        assert got.ended == "agent rank 0 was killed by SIGKILL" and got.pods == []
    finally:
        if client is not None:
            client.close()
        await manager.shutdown_all()


async def _is(awaitable, state: str) -> bool:
    got = await awaitable
    return (got["state"] if isinstance(got, dict) else got) == state


async def _model_state(manager: ClusterManager, cluster_id: str) -> str:
    await manager.monitor_once()
    return (await manager.get(cluster_id)).state


@pytest.mark.asyncio
async def test_idle_culling_asks_the_agents_when_the_kernel_last_ran(tmp_path):
    """The kernel runs cells on the agents directly and the monitor pings seldom, so the
    culler reads the agents' last request before it calls a cluster idle."""
    manager = ClusterManager(Limits(idle_cull_seconds=30, monitor_idle_interval=3600),
                             root=str(tmp_path))
    client = None
    try:
        await manager.ensure("recent", "", {"count": 1})
        client = _kernel_client(await manager.connection("recent"))
        cluster = manager.registry.get("recent").cluster
        cluster.last_activity -= 100  # what the server last saw: long ago
        replies = await asyncio.to_thread(client.request, "execute",
                                          {"code": "x = 1", "env": {}}, timeout=60)
        assert replies[0].content["status"] == "ok"
        assert await manager.cull_once() == {}  # a cell ran just now
        assert (await manager.get("recent")).state == "running"
        culled = await manager.cull_once(now=time.time() + 31)
        assert culled == {"recent": "it was idle for more than 30s"}
    finally:
        if client is not None:
            client.close()
        await manager.shutdown_all()


def test_cluster_model_to_dict_is_asdict():
    """to_dict copies one level (cheap for the admin's list of every cluster), same content."""
    from dataclasses import asdict

    from jupyter_kremote_server.models import ClusterModel

    model = ClusterModel(id="a", name="a", notebook="", backend="local", count=1,
                         pods=[{"rank": 0, "telemetry": {"cpu": 1.0}}],
                         events=[{"reason": "Ready"}], templates=["gpu"])
    data = model.to_dict()
    assert data == asdict(model) and json.loads(json.dumps(data)) == data
    data["pods"].append({})
    assert len(model.pods) == 1  # the lists are the caller's own


@pytest.mark.asyncio
async def test_pod_groups_are_records_of_one_cluster(tmp_path):
    """`%remote group add train` starts `swimmy-train`: the panel shows it in swimmy's card."""
    manager = ClusterManager(Limits(), root=str(tmp_path))
    try:
        main = await manager.ensure("swimmy", "nb/s.ipynb", {"count": 1})
        train = await manager.ensure("swimmy-train", "nb/s.ipynb",
                                     {"count": 2, "group": "train"})
        assert (main.group, main.family) == ("main", "swimmy")
        assert (train.id, train.group, train.family) == ("s-swimmy-train", "train", "swimmy")
        assert [p["group"] for p in train.pods] == ["train", "train"]
        assert [p["group"] for p in main.pods] == ["main"]
        listed = {m["id"]: (m["family"], m["group"]) for m in manager.snapshot()}
        assert listed == {"s-swimmy": ("swimmy", "main"), "s-swimmy-train": ("swimmy", "train")}
        with pytest.raises(BadRequest, match=r"^--group 'Train!': use 1-20 lowercase"):
            await manager.ensure("bad", "nb/s.ipynb", {"group": "Train!"})
        assert len(await manager.list_clusters()) == 2
    finally:
        await manager.shutdown_all()


@pytest.mark.asyncio
async def test_kernels_report_map_counts_to_the_panel(jp_fetch, jp_ws_fetch):
    ws = await jp_ws_fetch(*API, "stream")
    assert json.loads(await ws.read_message())["tasks"] == {}
    squares = {"cluster": "sq", "function": "square", "total": 20, "done": 12, "running": 4,
               "failed": 1, "retried": 1, "started": 1767000000.0, "state": "running",
               "extra": "dropped"}
    code, put = await _call(jp_fetch, "tasks", method="PUT",
                            body={"notebook": "nb/map.ipynb", "maps": [squares]})
    assert code == 200
    pushed = await _next(ws, lambda m: m["type"] == "tasks")
    assert pushed["notebook"] == "nb/map.ipynb" and pushed["maps"] == put["maps"]
    (m,) = pushed["maps"]
    assert (m["function"], m["done"], m["running"], m["failed"], m["state"]) == (
        "square", 12, 4, 1, "running")
    assert "extra" not in m
    code, listing = await _call(jp_fetch, "tasks")
    assert listing == {"tasks": {"nb/map.ipynb": put["maps"]}}
    # a new kernel's first report replaces the notebook's maps; no maps forgets them
    for maps, expect in [
        ([{**squares, "done": "12"}], "maps[0].done '12': expected a whole number >= 0"),
        ([{**squares, "state": "lost"}], "maps[0].state 'lost': expected one of running,"),
        ([{"function": "f"}], "maps[0].cluster: expected a non-empty string"),
        ({"sq": 1}, "maps: expected a list of maps"),
    ]:
        code, message = await _refused(jp_fetch, "tasks", method="PUT",
                                       body={"notebook": "nb/map.ipynb", "maps": maps})
        assert code == 400 and message.startswith(expect), message
    code, listing = await _call(jp_fetch, "tasks")
    assert listing["tasks"]["nb/map.ipynb"] == put["maps"]  # refused: nothing changed
    await _call(jp_fetch, "tasks", method="PUT", body={"notebook": "nb/map.ipynb", "maps": []})
    code, listing = await _call(jp_fetch, "tasks")
    assert listing == {"tasks": {}}
    ws.close()


def _kremote_routes(web_app) -> list[tuple[str, type]]:
    routes = []
    for host_rule in web_app.default_router.rules:
        for rule in getattr(host_rule.target, "rules", []):
            pattern = getattr(rule.matcher, "regex", None)
            if pattern is not None and "kremote/api" in pattern.pattern:
                routes.append((pattern.pattern, rule.target))
    return routes


@pytest.mark.asyncio
async def test_every_endpoint_requires_the_token(jp_serverapp, http_server_client,
                                                 jp_auth_header, jp_ws_fetch):
    routes = _kremote_routes(jp_serverapp.web_app)
    assert len(routes) == 11
    client = http_server_client  # a plain HTTP client: no token unless given
    checked = 0
    for pattern, handler in routes:
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "x", pattern).removesuffix("$").removesuffix("/?")
        if path.endswith("/stream"):
            continue  # the WebSocket, below
        for method in ("GET", "POST", "PUT", "DELETE"):
            if method.lower() not in vars(handler):
                continue
            body = '{"colour": "red"}' if method in ("POST", "PUT") else None  # 400: no change
            anonymous = await client.fetch(path, method=method, body=body, raise_error=False)
            assert anonymous.code in (401, 403), (method, path, anonymous.code)
            # the same request with the token gets past authentication (400 or 404: no cluster x)
            known = await client.fetch(path, method=method, body=body, raise_error=False,
                                       headers=jp_auth_header)
            if "/admin/" in path:  # authenticated, but no one is an admin of a one-user server
                assert known.code == 403, (method, path, known.code)
                assert json.loads(known.body)["message"] == (
                    "admin routes need the hub's kremote service: this Jupyter server holds "
                    f"only {jp_serverapp.web_app.settings['kremote_admin'].user}'s clusters "
                    "(GET clusters lists them)")
            else:
                assert known.code not in (401, 403), (method, path, known.code)
            checked += 1
    assert checked == 13

    # the WebSocket: refused without the token, a snapshot with it
    from tornado.websocket import websocket_connect

    port = jp_serverapp.port
    base = jp_serverapp.base_url
    with pytest.raises(HTTPClientError) as info:
        await websocket_connect(f"ws://localhost:{port}{base}kremote/api/v1/stream")
    assert info.value.code in (401, 403)
    ws = await jp_ws_fetch(*API, "stream")
    first = json.loads(await ws.read_message())
    assert first == {"type": "snapshot", "clusters": [], "tasks": {}}
    ws.close()


@pytest.mark.asyncio
async def test_culler_task_runs_in_the_server_and_stops_with_it(jp_serverapp, jp_fetch, manager):
    ext = next(iter(jp_serverapp.extension_manager.extensions["jupyter_kremote_server"]
                    .extension_points.values())).app
    ext.cull_interval = 0.02
    await ext._start_jupyter_server_extension(jp_serverapp)  # what the server's start calls
    _, model = await _call(jp_fetch, "clusters", method="POST", body={"name": "ttl"})
    pid = model["pods"][0]["pid"]
    manager._entries["ttl"].cluster.handle.deadline = time.time() - 1  # as if the TTL passed
    for _ in range(200):
        if manager._entries["ttl"].model.state == "ended":
            break
        await asyncio.sleep(0.02)
    assert manager._entries["ttl"].model.ended == "its TTL ran out"
    assert wait_for(lambda: not alive(pid), 60)

    await _call(jp_fetch, "clusters", method="POST", body={"name": "ttl"})
    await ext.stop_extension()  # cancels the culler, shuts every cluster down
    assert ext._culler is None
    assert await manager.list_clusters() == []


async def _next(ws, want, timeout: float = 60.0):
    """The first message within ``timeout`` seconds for which ``want(msg)`` is true."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        assert left > 0, "no such message in time"
        raw = await asyncio.wait_for(ws.read_message(), left)
        assert raw is not None, "the stream closed"
        msg = json.loads(raw)
        if want(msg):
            return msg


@pytest.mark.asyncio
async def test_stream_sends_changes_within_a_second(jp_fetch, jp_ws_fetch, manager):
    ws = await jp_ws_fetch(*API, "stream")
    assert json.loads(await ws.read_message())["type"] == "snapshot"
    # a second client: the server still runs one monitor, and both get every change
    ws2 = await jp_ws_fetch(*API, "stream")
    await ws2.read_message()
    assert manager.hub.subscribers == 2

    code, model = await _call(jp_fetch, "clusters", method="POST",
                              body={"name": "live", "notebook": "nb/live.ipynb"})
    running = await _next(ws, lambda m: m["type"] == "cluster"
                          and m["cluster"]["state"] == "running")
    pod = running["cluster"]["pods"][0]
    assert (pod["rank"], pod["name"], pod["phase"], pod["restarts"]) == (0, "rank-0",
                                                                         "Running", 0)
    assert pod["node"] and pod["started"] >= model["created"] - 1
    assert running["cluster"]["user"] and running["cluster"]["notebook"] == "nb/live.ipynb"
    ready = await _next(ws2, lambda m: m["type"] == "event")
    assert ready["event"]["reason"] == "Ready" and ready["id"] == "live-live"

    # the TTL moved from the REST API shows in the stream (pushed, not left to a poll)
    await _call(jp_fetch, "clusters", "live-live", "extend", method="POST",
                body={"seconds": 300})
    moved = await _next(ws, lambda m: m["type"] == "cluster"
                        and m["cluster"]["deadline"] >= model["deadline"] + 299)
    assert moved["cluster"]["events"][0]["reason"] == "Extended"

    # telemetry samples arrive every 2 s, and the history is served
    sample = await _next(ws, lambda m: m["type"] == "telemetry")
    assert sample["rank"] == 0 and sample["sample"]["mem_bytes"] > 10_000_000
    assert "gpus" not in sample["sample"]  # no NVML on this machine: absent, not zero
    code, history = await _call(jp_fetch, "clusters", "live-live", "telemetry")
    assert history["pods"]["0"][-1]["time"] >= sample["sample"]["time"]

    # an agent killed outside the server: the stream says so within a second
    import os
    import signal

    os.kill(pod["pid"], signal.SIGKILL)
    ended = await _next(ws, lambda m: m["type"] == "ended")
    assert ended == {"type": "ended", "id": "live-live",
                     "reason": "agent rank 0 was killed by SIGKILL"}
    after = await _next(ws, lambda m: m["type"] == "cluster")
    assert after["cluster"]["state"] == "ended" and after["cluster"]["pods"] == []
    code, events = await _call(jp_fetch, "clusters", "live-live", "events")
    assert [e["reason"] for e in events["events"]][:1] == ["Ended"]
    assert events["events"][0]["type"] == "Warning"

    await _call(jp_fetch, "clusters", "live-live", method="DELETE")
    removed = await _next(ws2, lambda m: m["type"] == "removed")
    assert removed == {"type": "removed", "id": "live-live"}
    ws.close()
    ws2.close()


@pytest.mark.asyncio
async def test_connection_lets_a_client_run_code_and_logs_follow(jp_fetch, jp_serverapp,
                                                                 jp_auth_header):
    import base64

    from jupyter_kremote.client import ClusterClient, Endpoint

    code, model = await _call(jp_fetch, "clusters", method="POST", body={"name": "conn"})
    code, conn = await _call(jp_fetch, "clusters", "conn", "connection")
    assert code == 200 and set(conn) == {"id", "key", "deadline", "endpoints"}
    key = base64.b64decode(conn["key"])
    eps = [Endpoint(e["rank"], e["host"], e["port"], e["control_port"])
           for e in conn["endpoints"]]
    client = ClusterClient(key, eps, lambda r: None)
    try:
        replies = await asyncio.to_thread(client.request, "execute",
                                          {"code": "print('via the server', 6 * 7)",
                                           "env": {}}, timeout=30)
        assert replies[0].content["status"] == "ok"
        # the key never shows in the models the panel reads
        code, listing = await _call(jp_fetch, "clusters")
        assert conn["key"] not in json.dumps(listing)

        # logs?follow=1 streams the log as it grows
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        chunks: list[str] = []
        url = (f"http://localhost:{jp_serverapp.port}{jp_serverapp.base_url}"
               "kremote/api/v1/clusters/conn/logs?rank=0&follow=1")
        request = HTTPRequest(url, headers=jp_auth_header, request_timeout=30,
                              streaming_callback=lambda b: chunks.append(b.decode()))
        fetch = asyncio.ensure_future(AsyncHTTPClient().fetch(request))
        assert await asyncio.to_thread(wait_for, lambda: "listening on" in "".join(chunks), 5)
        await asyncio.to_thread(client.request, "execute",
                                {"code": "import logging; logging.getLogger('jupyter_kremote"
                                         ".agent').warning('a warning for the log')",
                                 "env": {}}, timeout=30)
        await _call(jp_fetch, "clusters", "conn", method="DELETE")
        await asyncio.wait_for(fetch, 10)  # the stream ends with the agent
        assert "listening on" in "".join(chunks)
    finally:
        client.close()


def test_the_hub_service_has_room_for_hundreds_of_clusters():
    """ZeroMQ's default of 1023 sockets per context ran out at about 250 adopted clusters
    ("Too many open files"): the service raises it (and the open-files limit) on start."""
    import resource
    import subprocess

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"this machine allows {hard} open files per process")
    code = ("from jupyter_kremote_server.service import allow_many_sockets\n"
            "import zmq\n"
            "limit = allow_many_sockets()\n"
            "ctx = zmq.Context.instance()\n"
            "socks = [ctx.socket(zmq.DEALER) for _ in range(1500)]\n"
            "print(limit, len(socks))\n"
            "for s in socks: s.close(0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    limit, made = map(int, out.stdout.split())
    assert made == 1500 and limit >= 1500
