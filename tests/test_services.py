"""Interactive services: ports named kremote-<name>, rank 0's service commands, the proxy.

The tensorboard template is rendered and validated strictly (TensorBoard itself is not
installed here); a test template runs a small web app (tests/web_service.py) beside rank 0's
agent on kubesim, reached through the server extension's proxy route over HTTP and WebSocket.
"""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

try:
    import jupyter_kremote_server  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server_ext"))

from conftest import wait_for
from test_kubernetes import kkernel, managed, sim  # noqa: F401 - fixtures
from test_server_ext import _call, _refused
from test_server_kube import jp_asyncio_loop, kube_env  # noqa: F401 - fixtures

from jupyter_kremote.agent import services
from jupyter_kremote.manifests import ManifestError, render_cluster, services_of
from jupyter_kremote.spec import PodSpec
from jupyter_kremote.templates import TemplateResolver

pytest_plugins = ["pytest_jupyter.jupyter_server"]
WEB_APP = Path(__file__).resolve().parent / "web_service.py"
WEB_PORT = 8642


def web_template(folder: Path, port_name: str = "kremote-web", port: int = WEB_PORT) -> Path:
    """A template whose rank 0 serves tests/web_service.py on the port `port_name`."""
    path = folder / "web.yaml"
    path.write_text(f"""\
spec:
  template:
    spec:
      containers:
        - name: agent
          ports:
            - name: {port_name}
              containerPort: {port}
          env:
            - name: KREMOTE_SERVICE_WEB
              value: "exec {sys.executable} {WEB_APP} {port}"
""")
    return path


def _render(*templates: str, **variables: str) -> dict:
    _, job = render_cluster(PodSpec(templates=list(templates)), cluster_id="c1", user="ann",
                            notebook="a.ipynb", resolver=TemplateResolver(), namespace="ml",
                            key="00ff", variables=variables)
    return job


def test_tensorboard_template_renders_and_validates_strictly():
    job = _render("tensorboard")  # render_cluster validates against the 1.33 schema, strict
    assert services_of(job) == {"tb": 6006}
    agent = job["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "kremote-tb", "containerPort": 6006, "protocol": "TCP"} in agent["ports"]
    assert agent["ports"][0]["name"] == "agent"  # the agent's own port is kept
    command = {e["name"]: e.get("value") for e in agent["env"]}["KREMOTE_SERVICE_TB"]
    assert command == ("exec python -m tensorboard.main --logdir /kremote/runs --bind_all "
                       "--port 6006")
    # the log folder is an admin variable; pip-install layers with it (no command clash)
    job = _render("pip-install", "tensorboard", tensorboard_logdir="/data/tb")
    agent = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert "--logdir /data/tb " in env["KREMOTE_SERVICE_TB"]
    assert "pip install" in agent["args"][0]


def test_service_port_names_are_checked_as_kubernetes_does(tmp_path):
    with pytest.raises(ManifestError) as info:
        _render(str(web_template(tmp_path, "kremote-tensorboard")))
    assert str(info.value) == (
        "Job jupyter-kremote-c1: spec.template.spec.containers[0].ports[1].name: "
        "'kremote-tensorboard' is not valid: must be no more than 15 characters; a service "
        "port is kremote-<name>, <name> at most 7 characters")
    # kubesim refuses it too, in the API server's words
    from kubesim.validation import validate_pod_spec

    causes: list = []
    validate_pod_spec({"restartPolicy": "Never", "containers": [{
        "name": "agent", "image": "x", "ports": [{"name": "kremote-tensorboard"},
                                                 {"name": "Web--"}]}]}, "spec", causes)
    assert causes == [
        ("spec.containers[0].ports[0].name",
         'Invalid value: "kremote-tensorboard": must be no more than 15 characters'),
        ("spec.containers[0].ports[1].name", ('Invalid value: "Web--": must contain only '
                                              "alpha-numeric characters (a-z, 0-9), and "
                                              "hyphens (-)")),
        ("spec.containers[0].ports[1].name",
         'Invalid value: "Web--": must not contain consecutive hyphens'),
        ("spec.containers[0].ports[1].name",
         'Invalid value: "Web--": must not begin or end with a hyphen')]


def test_rank_0_starts_the_service_commands_and_stops_them_with_their_children(tmp_path):
    env = {"KREMOTE_SERVICE_A": f"echo started > {tmp_path}/a; sleep 60 & sleep 60",
           "KREMOTE_SERVICE_EMPTY": " ", "OTHER": "x"}
    assert services.start(1, env) == []  # other ranks run none
    procs = services.start(0, env)
    assert len(procs) == 1
    assert wait_for(lambda: (tmp_path / "a").exists(), 60)
    tree = [procs[0].pid, *(c.pid for c in psutil.Process(procs[0].pid).children(True))]
    assert len(tree) >= 2
    services.stop(procs)
    assert not [p for p in tree if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert procs[0].returncode is not None


# -- on kubesim, through the server extension --------------------------------------------------
@pytest.fixture
def jp_server_config(kube_env):  # noqa: F811
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_kremote_server": True}},
        "KRemoteApp": {"backend": "kubernetes", "user": "alice", "default_ttl": 600.0,
                       "cull_interval": 3600.0},
    }


async def _raw(url: str, **kw):
    """A request without the server's token; the response whatever its status."""
    try:
        return await AsyncHTTPClient().fetch(url, follow_redirects=False, **kw)
    except HTTPClientError as exc:
        return exc.response


@pytest.mark.asyncio
async def test_proxy_serves_rank_0s_service_over_http_and_websocket(
        jp_fetch, jp_ws_fetch, jp_base_url, jp_http_port, kube_env, tmp_path):  # noqa: F811
    admin = kube_env[2]
    template = web_template(tmp_path)
    code, model = await _call(jp_fetch, "clusters", method="POST", body={
        "name": "default", "notebook": "nb/web.ipynb", "count": 2, "cpu": "100m",
        "mem": "100Mi", "templates": [str(template)]})
    assert code == 201
    cid = model["id"]
    rank0 = model["pods"][0]["name"]
    assert model["services"] == [{"name": "web", "port": WEB_PORT,
                                  "path": f"kremote/proxy/{cid}/web/"}]

    async def page(path, **kw):
        return await jp_fetch("kremote", "proxy", cid, f"web/{path}", **kw)

    # the page comes from the app rank 0's agent started, in rank 0's pod (polled: it starts
    # beside the agent and may not listen yet)
    for _ in range(100):
        try:
            resp = await page("", params={"x": "1"})
            break
        except HTTPClientError as exc:
            assert exc.code == 502, exc
            await asyncio.sleep(0.1)
    text = resp.body.decode()
    assert f"served by pod {rank0} rank 0 from " in text
    assert "<p id='query'>x=1</p>" in text  # the query reaches it, Jupyter's token does not
    headers = text.split("<p id='headers'>")[1].split("</p>")[0].split(", ")
    assert "authorization" not in headers and "cookie" not in headers
    assert "x-forwarded-prefix" in headers

    # POST (token-authenticated), a redirect kept under the prefix, the trailing slash
    resp = await page("echo", method="POST", body="hello")
    assert resp.body == b"echo: hello"
    prefix = f"{jp_base_url}kremote/proxy/{cid}/web"
    base = f"http://localhost:{jp_http_port}"
    resp = await page("go", follow_redirects=False, raise_error=False)
    assert resp.code == 302 and resp.headers["Location"] == f"{prefix}/"
    resp = await jp_fetch("kremote", "proxy", cid, "web", follow_redirects=False,
                          raise_error=False)
    assert resp.code == 302 and resp.headers["Location"] == f"{prefix}/"

    # the answer is streamed: the first chunk arrives while the app still holds the rest
    chunks: list[bytes] = []
    streamed = asyncio.ensure_future(page("stream", streaming_callback=chunks.append))
    for _ in range(300):
        if b"".join(chunks).endswith(b"\n") or streamed.done():
            break
        await asyncio.sleep(0.05)
    assert b"".join(chunks) == b"first chunk\n" and not streamed.done()
    await page("release", method="POST", body="")
    await streamed
    assert b"".join(chunks) == b"first chunk\nlast chunk\n"

    # WebSocket, both ways
    ws = await jp_ws_fetch("kremote", "proxy", cid, "web", "ws")
    await ws.write_message("ping")
    assert await asyncio.wait_for(ws.read_message(), 10) == "ping"
    await ws.write_message(b"\x00\x01", binary=True)
    assert await asyncio.wait_for(ws.read_message(), 10) == b"\x00\x01"
    ws.close()

    # refused: no token, a wrong token, a cluster this server does not hold, no such service
    resp = await _raw(f"{base}{prefix}/")
    assert resp.code in (302, 403) and b"served by pod" not in (resp.body or b"")
    if resp.code == 302:
        assert "/login" in resp.headers["Location"]
    resp = await _raw(f"{base}{prefix}/", headers={"Authorization": "token wrong"})
    assert resp.code in (302, 403) and b"served by pod" not in (resp.body or b"")
    resp = await _raw(f"{base}{prefix}/echo", method="POST", body="x")
    assert resp.code == 403
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("kremote", "proxy", "bob-default", "web/")
    assert info.value.code == 404
    assert b"no cluster 'bob-default'" in info.value.response.body
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("kremote", "proxy", cid, "tb/")
    assert info.value.code == 404
    assert info.value.response.body.decode().strip().endswith(
        f"cluster '{cid}' has no service 'tb'; its services: web")
    with pytest.raises(Exception):  # noqa: B017 - the upgrade is refused (403)
        await jp_ws_fetch("kremote", "proxy", cid, "web", "ws", headers={
            "Authorization": "token wrong"})

    # a server that reaches its agents through the API server's port-forward reaches the
    # service the same way (a listener opened on first use, closed with the cluster)
    code, fwd = await _call(jp_fetch, "clusters", method="POST", body={
        "name": "fwd", "notebook": "nb/web.ipynb", "cpu": "100m", "mem": "100Mi",
        "templates": [str(template)], "connect": "port-forward"})
    assert code == 201 and fwd["services"][0]["name"] == "web"
    for _ in range(100):
        resp = await jp_fetch("kremote", "proxy", fwd["id"], "web/", raise_error=False)
        if resp.code != 502:
            break
        await asyncio.sleep(0.1)
    assert f"served by pod {fwd['pods'][0]['name']} rank 0" in resp.body.decode()
    ws = await jp_ws_fetch("kremote", "proxy", fwd["id"], "web", "ws")
    await ws.write_message("through port-forward")
    assert await asyncio.wait_for(ws.read_message(), 10) == "through port-forward"
    ws.close()
    await _call(jp_fetch, "clusters", fwd["id"], method="DELETE")

    # after shutdown nothing answers there, and nothing is left
    await _call(jp_fetch, "clusters", cid, method="DELETE")
    code, _ = await _refused(jp_fetch, "clusters", cid)
    assert code == 404
    with pytest.raises(HTTPClientError) as info:
        await page("")
    assert info.value.code == 404
    for _ in range(300):
        if not await asyncio.to_thread(managed, admin):
            break
        await asyncio.sleep(0.1)
    assert not await asyncio.to_thread(managed, admin)
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(WEB_APP) in " ".join(p.info["cmdline"] or [])]



# -- a real kernel of a real Jupyter server, on kubesim ----------------------------------------
def test_remote_open_prints_the_link_through_the_users_server(sim, tmp_path):  # noqa: F811
    from test_server_kernel import TOKEN, Server

    root = tmp_path / "root"
    (root / "work").mkdir(parents=True)
    template = web_template(tmp_path)
    srv = Server(root, tmp_path / "runtime", args=("--KRemoteApp.backend=kubernetes",
                                                   "--KRemoteApp.user=alice"),
                 env={"KREMOTE_KUBECONFIG": sim[0]})
    session, k = srv.open_notebook("work/web.ipynb", root / "work")
    try:
        assert k.run("%load_ext jupyter_kremote").status == "ok"
        # with -t tensorboard too: TensorBoard is not installed here, so its command fails on
        # rank 0 and the agent carries on
        res = k.run(f"%%remote --backend kubernetes -t {template} -t tensorboard --cpu 100m "
                    "--mem 100Mi\n"
                    "print('up')", timeout=120)
        assert res.status == "ok", res.traceback_text
        res = k.run("%remote open web")
        assert res.status == "ok", res.traceback_text
        [shown] = res.of_type("display_data")
        url = f"{srv.url}kremote/proxy/web-default/web/"
        assert shown["data"]["text/plain"] == f"cluster 'default': service\nweb: {url}"
        assert ('<a href="/kremote/proxy/web-default/web/" target="_blank" rel="noopener">'
                "web</a>") in shown["data"]["text/html"]

        def page() -> str:
            req = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.read().decode()
            except urllib.error.HTTPError as exc:
                assert exc.code == 502, exc  # polled: the app may not listen yet
                return ""

        assert wait_for(lambda: "served by pod" in page(), 60)
        assert " rank 0 from " in page()
        # without a name: every service; a template's name: the services it declares
        tb = f"{srv.url}kremote/proxy/web-default/tb/"
        assert k.run("%remote open").text == (
            f"cluster 'default': services\ntb: {tb}\nweb: {url}\n")
        assert k.run("%remote open tensorboard").text == f"cluster 'default': service\ntb: {tb}\n"
        # a name it lacks: a one-line error naming them
        res = k.run("%remote open board")
        assert res.status == "error"
        assert res.stderr == ("UsageError: cluster 'default' has no service 'board'; its "
                              "services: tb, web\n")
        # a service that is not listening: the proxy says so in one line
        req = urllib.request.Request(tb, headers={"Authorization": f"token {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=30)
        assert info.value.code == 502
        message = info.value.read().decode()
        assert message.startswith("502 Bad Gateway: service 'tb' of cluster 'web-default' does "
                                  "not answer at "), message
        assert message.count("\n") == 1
        assert k.run("%%remote\nprint('agent still fine')").stdout == "agent still fine\n"
        assert k.run("%remote shutdown").status == "ok"
    finally:
        k.kc.stop_channels()
        srv.call("DELETE", f"api/sessions/{session['id']}")
        srv.stop()
    assert wait_for(lambda: not managed(sim[2]), 60)


def test_remote_open_without_a_server_forwards_the_port_itself(kkernel):  # noqa: F811
    """A kernel on its own (no Jupyter server) reaching its agents through port-forward: the
    link is a local listener of the kernel's, forwarding to rank 0's service."""
    template = web_template(kkernel.cwd)
    res = kkernel.run(f"%%remote -t {template} --connect port-forward --cpu 100m --mem 100Mi\n"
                      "print('up')", timeout=120)
    assert res.status == "ok", res.traceback_text
    [shown] = kkernel.run("%remote open web").of_type("display_data")
    title, line = shown["data"]["text/plain"].split("\n")
    assert title == ("cluster 'default': service (through this kernel's port-forward, while "
                     "the cluster runs)")
    assert line.startswith("web: http://127.0.0.1:")
    url = line.split(" ", 1)[1]

    def page() -> str:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.read().decode()
        except OSError:
            return ""  # the app may not listen yet

    assert wait_for(lambda: "served by pod" in page(), 60)
    assert " rank 0 from " in page()
