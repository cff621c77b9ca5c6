"""Interactive services of local clusters (the embedded backend): a template's port named
kremote-<name> is served by rank 0's agent on this machine, linked by ``%remote open`` and
proxied by the user's Jupyter server like a pod's, through real kernels (and a real server)."""

from __future__ import annotations

import urllib.error
import urllib.request

import psutil
from conftest import wait_for
from test_server_kernel import TOKEN, Server, _free_port
from test_services import WEB_APP, web_template


def fetch(url: str, token: str | None = None) -> str:
    """The page at `url`; "" while nothing answers there (the app may not listen yet)."""
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token
                                 else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        assert exc.code == 502, exc  # the proxy: the app does not listen yet
        return ""
    except OSError:
        return ""


def web_apps(port: int) -> list[int]:
    """This test's web app processes (other runs may share the machine)."""
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if f"{WEB_APP} {port}" in " ".join(p.info["cmdline"] or [])]


def test_local_cluster_serves_a_template_service_on_this_machine(kernel, tmp_path):
    port = _free_port()
    template = web_template(tmp_path, port=port)
    res = kernel.run(f"%%remote -n 2 -t {template}\nprint('up')")
    assert res.status == "ok", res.outputs
    [shown] = kernel.run("%remote open web").of_type("display_data")
    url = f"http://127.0.0.1:{port}/"
    assert shown["data"]["text/plain"] == (
        f"cluster 'default': service (served on this machine, while the cluster runs)\n"
        f"web: {url}")
    assert wait_for(lambda: "served by pod" in fetch(url), 60)
    assert " rank 0 from " in fetch(url)  # rank 0 alone runs it
    assert len(web_apps(port)) == 1
    # the service goes with the cluster
    assert kernel.run("%remote shutdown").status == "ok"
    assert wait_for(lambda: not web_apps(port), 60), web_apps(port)
    # a template that does not exist: one line, nothing started
    res = kernel.run("%%remote -t no-such-template\nprint('never')")
    assert res.status == "error"
    assert "\n" not in res.error["evalue"]
    assert res.error["evalue"].startswith(
        "cluster 'default' could not start: unknown template 'no-such-template'"), res.error
    assert not kernel.agent_pids()


def test_local_cluster_service_through_the_users_server(tmp_path):
    """A kernel of a Jupyter server on the local backend: the server holds the cluster, the
    model lists the service (the panel's link) and its proxy route serves it, behind the
    server's token; ``%remote open`` prints that link."""
    port = _free_port()
    root = tmp_path / "root"
    (root / "work").mkdir(parents=True)
    template = web_template(tmp_path, port=port)
    srv = Server(root, tmp_path / "runtime")
    session, k = srv.open_notebook("work/web.ipynb", root / "work")
    try:
        assert k.run("%load_ext jupyter_kremote").status == "ok"
        res = k.run(f"%%remote -t {template}\nprint('up')", timeout=120)
        assert res.status == "ok", res.traceback_text
        [model] = srv.call("GET", "kremote/api/v1/clusters")["clusters"]
        path = f"kremote/proxy/{model['id']}/web/"
        assert model["services"] == [{"name": "web", "port": port, "path": path}]
        [shown] = k.run("%remote open web").of_type("display_data")
        url = f"{srv.url}{path}"
        assert shown["data"]["text/plain"] == f"cluster 'default': service\nweb: {url}"
        assert f'<a href="/{path}" target="_blank" rel="noopener">web</a>' in \
            shown["data"]["text/html"]
        assert wait_for(lambda: "served by pod" in fetch(url, TOKEN), 60)
        assert "<p id='query'></p>" in fetch(url, TOKEN)
        # without the server's token the proxy serves nothing (a 403, or the login page)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                anonymous = resp.read().decode()
        except urllib.error.HTTPError as exc:
            anonymous = str(exc.code)
        assert anonymous and "served by pod" not in anonymous
        assert k.run("%remote shutdown").status == "ok"
        assert wait_for(lambda: not web_apps(port), 60), web_apps(port)
    finally:
        k.kc.stop_channels()
        srv.call("DELETE", f"api/sessions/{session['id']}")
        srv.stop()
