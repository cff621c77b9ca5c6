"""A real JupyterHub with the kremote service in front of kubesim; users' servers in hub mode.

One hub for the module: configurable-http-proxy, SimpleLocalProcessSpawner, users alice and
bob and an admin. The service runs as an external JupyterHub service (as its own Deployment
would) with the only Kubernetes credentials: a ServiceAccount token bound to the shipped Role,
RBAC enforced. The single-user servers hold none; they forward to the service through the
hub's proxy. Kernels are started through each user's server (sessions API + WebSocket), as
JupyterLab does.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jupyterhub")
requests = pytest.importorskip("requests")
websocket = pytest.importorskip("websocket")

from conftest import wait_for
from test_kubernetes import PRODUCT_USER, managed, start_sim

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CHP = ROOT / ".venv" / "chp" / "node_modules" / ".bin" / "configurable-http-proxy"
SERVICE = "kremote"
API = f"services/{SERVICE}/kremote/api/v1"
ADMIN_SCOPE = "custom:kremote:admin"
LIMITS = {"max_pods": 1, "max_ttl": "2h"}
GROUP_LIMITS = {"gpu-team": {"max_pods": 2}}
CELL = ("%%remote --cpu 100m --mem 100Mi\n"
        "import os\nprint('on', os.environ['HOSTNAME'], 'as', os.environ.get('KREMOTE_USER', ''))")

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("configurable-http-proxy") or CHP.exists()),
        reason="configurable-http-proxy is not installed (scripts/test.sh installs it with npm)"),
    pytest.mark.timeout(300),  # the module's hub and servers start in the first test
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """A running JupyterHub and the test's admin token."""

    def __init__(self, tmp: Path, kube: Any) -> None:
        self.tmp, self.kube = tmp, kube
        self.port, self.hub_port, self.proxy_api, self.service_port = (
            _port(), _port(), _port(), _port())
        self.url = f"http://127.0.0.1:{self.port}/"
        self.admin_token = secrets.token_hex(16)
        self.service_token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.service: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}

    # -- the hub --------------------------------------------------------------------------------
    def config(self) -> str:
        chp = shutil.which("configurable-http-proxy") or str(CHP)
        env = {"KREMOTE_SERVICE_URL": f"{self.url}services/{SERVICE}/",
               "KREMOTE_BACKEND": "kubernetes", "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
        return f"""
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.JupyterHub.db_url = "sqlite:///{self.tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{self.tmp}/cookie_secret"
c.JupyterHub.pid_file = "{self.tmp}/hub.pid"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api}"
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "hub-pw"
c.Authenticator.allowed_users = {{"alice", "bob", "ops"}}
c.Authenticator.admin_users = {{"admin"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{self.tmp}/home/{{username}}"
c.Spawner.cmd = [{str(VENV_BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = {["--LabApp.expose_app_in_browser=True"]
                  + (["--allow-root"] if os.getuid() == 0 else [])!r}
c.Spawner.environment = {env!r}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server",
                                 "access:services!service={SERVICE}"]
c.JupyterHub.services = [
    {{"name": "test-admin", "api_token": "{self.admin_token}"}},
    {{"name": "{SERVICE}", "url": "http://127.0.0.1:{self.service_port}",
      "api_token": "{self.service_token}"}},
]
c.JupyterHub.load_groups = {{"gpu-team": {{"users": ["bob"]}}}}
c.JupyterHub.custom_scopes = {{
    "{ADMIN_SCOPE}": {{"description": "See and shut down every user's kremote clusters"}},
}}
c.JupyterHub.load_roles = [
    {{"name": "kremote-operators", "scopes": ["{ADMIN_SCOPE}"], "users": ["ops"]}},
    {{"name": "user", "scopes": ["self", "access:services!service={SERVICE}"]}},
    {{"name": "test-admin", "services": ["test-admin"],
      "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users"]}},
    {{"name": "kremote-service", "services": ["{SERVICE}"],
      "scopes": ["list:users", "read:users:name", "read:servers"]}},
]
"""

    def start(self) -> None:
        (self.tmp / "jupyterhub_config.py").write_text(self.config())
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
        for key in ("KUBECONFIG", "KREMOTE_KUBECONFIG", "JUPYTERHUB_API_TOKEN"):
            env.pop(key, None)  # the users' servers must hold no Kubernetes credentials
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyterhub"), "-f", str(self.tmp / "jupyterhub_config.py")],
            cwd=self.tmp, env=env, stdout=open(self.tmp / "hub.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True)
        up = wait_for(self._up, 180, 0.2)  # a loaded machine: the proxy's route comes late
        if not up:  # never leave the hub and its proxy running behind a failed start
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        assert up, self.log()

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.url}hub/api/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log(self, name: str = "hub.log") -> str:
        return (self.tmp / name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop the servers (the service ends their clusters), the service, the hub."""
        for user in ("alice", "bob", "admin"):
            self.api("DELETE", f"users/{user}/server")
        wait_for(lambda: not managed(self.kube.admin), 60)
        self.stop_service()
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.url}hub/api/{path}", timeout=30,
                                headers={"Authorization": f"token {self.admin_token}"}, **kw)

    # -- the kremote service ------------------------------------------------------------------------
    def start_service(self) -> None:
        env = {**os.environ,
               "JUPYTERHUB_API_TOKEN": self.service_token,
               "JUPYTERHUB_API_URL": f"http://127.0.0.1:{self.hub_port}/hub/api",
               "JUPYTERHUB_SERVICE_NAME": SERVICE,
               "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.service_port}",
               "JUPYTERHUB_SERVICE_PREFIX": f"/services/{SERVICE}/",
               "KREMOTE_KUBECONFIG": self.kube[0],
               # the admin's template folder: users name its templates (-t web); the
               # service reads no file a user names
               "KREMOTE_TEMPLATE_PATH": str(self.admin_templates())}
        self.service = subprocess.Popen(
            [sys.executable, "-m", "jupyter_kremote_server.service",
             "--KRemoteService.owner_poll_interval=0.5",
             "--KRemoteService.owner_stopped_grace=1", "--KRemoteService.default_ttl=600",
             "--KRemoteService.cull_interval=3600",
             f"--KRemoteService.config_file={self.service_config()}"],
            cwd=self.tmp, env=env, stdout=open(self.tmp / "service.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT)
        assert wait_for(lambda: self._get_service().status_code == 403, 60, 0.2), \
            self.log("service.log")

    def admin_templates(self) -> Path:
        from test_services import web_template

        folder = self.tmp / "admin-templates"
        folder.mkdir(exist_ok=True)
        web_template(folder)  # web.yaml: rank 0 serves a page on its kremote-web port
        return folder

    def service_config(self) -> Path:
        """The admin's limits, JupyterHub style: every user 1 pod, gpu-team (bob) 2."""
        path = self.tmp / "kremote_config.py"
        path.write_text(f"c.KRemoteService.limits = {LIMITS!r}\n"
                        f"c.KRemoteService.group_limits = {GROUP_LIMITS!r}\n")
        return path

    def _get_service(self) -> Any:
        try:
            return requests.get(f"http://127.0.0.1:{self.service_port}/{API}/clusters",
                                timeout=2)
        except requests.RequestException as exc:
            return type("R", (), {"status_code": str(exc)})()

    def stop_service(self) -> None:
        if self.service is not None and self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            self.service.wait(30)

    # -- users ------------------------------------------------------------------------------------
    def token(self, user: str) -> str:
        if user not in self.tokens:
            r = self.api("POST", f"users/{user}/tokens", json={"note": "test"})
            assert r.status_code == 201, r.text
            self.tokens[user] = r.json()["token"]
        return self.tokens[user]

    def start_servers(self, *users: str) -> None:
        """Spawn the users' servers at once; return when all are ready."""
        for user in users:
            r = self.api("POST", f"users/{user}/server")
            assert r.status_code in (201, 202), r.text

        def ready() -> bool:
            models = [self.api("GET", f"users/{u}").json() for u in users]
            return all((m.get("servers") or {}).get("", {}).get("ready") for m in models)

        assert wait_for(ready, 120, 0.5), self.log()

    def call(self, user: str, method: str, path: str, **kw: Any) -> requests.Response:
        """A request through the hub's proxy with the user's own token."""
        return requests.request(method, f"{self.url}{path}", timeout=120,
                                headers={"Authorization": f"token {self.token(user)}"}, **kw)


class HubKernel:
    """A kernel started through a user's server (sessions API), driven over its WebSocket."""

    def __init__(self, hub: Hub, user: str, notebook: str) -> None:
        self.hub, self.user = hub, user
        r = hub.call(user, "POST", f"user/{user}/api/sessions", json={
            "path": notebook, "type": "notebook", "name": notebook,
            "kernel": {"name": "python3"}})
        assert r.status_code == 201, r.text
        self.kernel_id = r.json()["kernel"]["id"]
        self.session = uuid.uuid4().hex
        self.ws = self._connect()

    def _connect(self) -> websocket.WebSocket:
        return websocket.create_connection(
            f"ws://127.0.0.1:{self.hub.port}/user/{self.user}/api/kernels/{self.kernel_id}/"
            f"channels?session_id={self.session}",
            header=[f"Authorization: token {self.hub.token(self.user)}"], timeout=120)

    def run(self, code: str, timeout: float = 120) -> tuple[str, str]:
        """(status, text of stream and error outputs) of one cell.

        On a WebSocket of its own: jupyter_server closes one whose pings went unanswered for
        90 s, and nothing reads (so answers) this one between cells (a long test in between
        closed it, under load)."""
        self.ws.close()
        self.ws = self._connect()
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": self.user,
                       "session": self.session, "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": False},
        }))
        text, status, idle = [], None, False
        end = time.monotonic() + timeout
        while status is None or not idle:
            assert time.monotonic() < end, f"cell timed out; so far: {''.join(text)}"
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                text.append(content["text"])
            elif kind == "error":
                text.append(f"{content['ename']}: {content['evalue']}\n")
            elif kind == "execute_reply":
                status = content["status"]
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        return status, "".join(text)

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    started = start_sim(tmp_path_factory.mktemp("kube"), pod_ips="unique")
    try:
        yield started
        assert started.ks.call("access_log", user=PRODUCT_USER, allowed=False) == []
    finally:
        started.ks.stop()


@pytest.fixture(scope="module")
def hub(tmp_path_factory, kube):
    h = Hub(tmp_path_factory.mktemp("hub"), kube)
    h.start()
    try:
        h.start_service()
        h.start_servers("alice", "bob")
        yield h
    finally:
        h.stop()
        assert wait_for(lambda: not managed(kube.admin), 60), managed(kube.admin)


@pytest.fixture(scope="module")
def kernels(hub):
    ks = {user: HubKernel(hub, user, f"{user}-work.ipynb") for user in ("alice", "bob")}
    for k in ks.values():
        assert k.run("%load_ext jupyter_kremote") == ("ok", "")
    yield ks
    for k in ks.values():
        k.close()


def _clusters(hub: Hub, user: str) -> list[dict[str, Any]]:
    r = hub.call(user, "GET", f"{API}/clusters")
    assert r.status_code == 200, r.text
    return r.json()["clusters"]


def _owned(kube: Any, user: str) -> list[str]:
    """The user's Jobs, pods and Secrets (by the kremote/user label)."""
    return managed(kube.admin, f"kremote/user={user}")


def test_users_cells_run_on_pods_through_the_hub(hub, kernels):
    for k in kernels.values():
        status, text = k.run(CELL)
        assert status == "ok", text
        assert text.startswith("on jupyter-kremote-"), text
    # the service holds each user's cluster, labelled with its owner; servers hold none
    alice, bob = _clusters(hub, "alice"), _clusters(hub, "bob")
    assert [(c["user"], c["notebook"], c["state"]) for c in alice] == [
        ("alice", "alice-work.ipynb", "running")]
    assert [(c["user"], c["notebook"], c["state"]) for c in bob] == [
        ("bob", "bob-work.ipynb", "running")]
    # the panel's view under /user/alice/ is the service's, forwarded with the server's token
    r = hub.call("alice", "GET", "user/alice/kremote/api/v1/clusters")
    assert r.status_code == 200 and [c["id"] for c in r.json()["clusters"]] == [alice[0]["id"]]


def test_another_users_cluster_is_404(hub, kernels):
    (alice,) = _clusters(hub, "alice")
    for path in ("", "/connection", "/events", "/logs"):
        r = hub.call("bob", "GET", f"{API}/clusters/{alice['id']}{path}")
        assert r.status_code == 404, (path, r.text)
    r = hub.call("bob", "DELETE", f"{API}/clusters/{alice['id']}")
    assert r.status_code == 404
    # nor through bob's own server
    r = hub.call("bob", "GET", f"user/bob/kremote/api/v1/clusters/{alice['id']}/connection")
    assert r.status_code == 404
    # and alice's cluster still works
    assert kernels["alice"].run("%%remote\nprint('still', 1 + 1)") == ("ok", "still 2\n")
    # local agents would run inside the service, with its rights: refused, nothing started
    r = hub.call("alice", "POST", f"{API}/clusters", json={"name": "x", "backend": "local"})
    assert r.status_code == 403, r.text
    assert r.json()["message"].startswith("backend 'local' is not offered here; use --backend "
                                          "kubernetes")
    # nor may a request make the service read its own files, use another namespace or
    # forward ports to itself: one line each, nothing started
    for fields, says in (
            ({"templates": ["/var/run/secrets/kubernetes.io/serviceaccount/token"]},
             "is a file: the hub's kremote service reads no files of yours"),
            ({"templates": ["mine.yaml"]}, "is a file"),
            ({"namespace": "kube-system"}, "namespace 'kube-system': clusters of alice run in"),
            ({"connect": "port-forward"}, "--connect port-forward: the hub's service")):
        r = hub.call("alice", "POST", f"{API}/clusters",
                     json={"name": "x", "backend": "kubernetes", **fields})
        assert r.status_code == 400 and says in r.json()["message"], r.text
    assert [c["name"] for c in _clusters(hub, "alice")] == ["default"]
    # a token without the service's access scope is refused
    r = requests.get(f"{hub.url}{API}/clusters", timeout=30,
                     headers={"Authorization": "token not-a-token"})
    assert r.status_code == 403


def test_a_service_opens_through_the_owners_server_only(hub, kernels):
    """Hub mode: the user's server proxies rank 0's service of a cluster the hub's service
    holds, straight to the pod; another user gets 403 at the hub or 404 through their own.
    bob's (gpu-team: 2 pods) beside his first cluster: alice may hold only one pod."""
    status, text = kernels["bob"].run("%%remote --name web -t web --cpu 100m "
                                      "--mem 100Mi\nprint('web up')")  # the admin's template
    assert status == "ok", text
    [web] = [c for c in _clusters(hub, "bob") if c["name"] == "web"]
    path = f"user/bob/{web['services'][0]['path']}"
    assert path == f"user/bob/kremote/proxy/{web['id']}/web/"

    def page() -> str:
        r = hub.call("bob", "GET", path)
        assert r.status_code in (200, 502), r.text  # 502 until the app listens
        return r.text

    assert wait_for(lambda: "served by pod" in page(), 60)
    assert f"served by pod {web['pods'][0]['name']} rank 0" in page()
    r = hub.call("alice", "GET", path, allow_redirects=False)  # bob's server: not alice's
    assert r.status_code in (302, 403) and "served by pod" not in r.text
    r = hub.call("alice", "GET", f"user/alice/kremote/proxy/{web['id']}/web/")
    assert r.status_code == 404 and f"no cluster {web['id']!r}" in r.text
    assert kernels["bob"].run("%remote shutdown --name web")[0] == "ok"
    assert not [c for c in _clusters(hub, "bob") if c["name"] == "web"]


def test_admin_lists_every_users_clusters(hub, kernels):
    r = hub.call("admin", "GET", f"{API}/admin/clusters")
    assert r.status_code == 200, r.text
    assert sorted(c["user"] for c in r.json()["clusters"]) == ["alice", "bob"]
    r = hub.call("bob", "GET", f"{API}/admin/clusters")
    assert r.status_code == 403 and "not a JupyterHub admin" in r.json()["message"]


def test_limits_per_user_and_jupyterhub_group(hub, kernels):
    """Every user may hold 1 pod, gpu-team (bob) 2: alice's second cluster is refused in her
    cell with the limit's one line, and nothing is made; bob's second one starts."""
    (held,) = _clusters(hub, "alice")
    before = sorted(_owned(hub.kube, "alice"))
    status, text = kernels["alice"].run(
        "%%remote --name more --cpu 100m --mem 100Mi\nprint('never')")
    assert (status, text) == ("error", (
        f"ServerError: alice: pod limit 1 reached (1 in use by cluster {held['id']}); this "
        "cluster asks for 1: ask for fewer or shut one down\n"))
    assert sorted(_owned(hub.kube, "alice")) == before
    assert [c["id"] for c in _clusters(hub, "alice")] == [held["id"]]
    r = hub.call("bob", "POST", f"{API}/clusters", json={
        "name": "extra", "notebook": "bob-extra.ipynb", "cpu": "100m", "mem": "100Mi"})
    assert r.status_code == 201 and r.json()["state"] == "running", r.text
    # over the group's limit too: the message names both clusters in use
    r = hub.call("bob", "POST", f"{API}/clusters", json={
        "name": "third", "notebook": "bob-extra.ipynb", "cpu": "100m", "mem": "100Mi"})
    assert r.status_code == 403 and r.json()["message"].startswith(
        "bob: pod limit 2 reached (2 in use by clusters "), r.text


def test_admin_scope_holders_list_every_cluster_others_get_403(hub, kernels):
    r = hub.call("ops", "GET", f"{API}/admin/clusters")  # ops holds custom:kremote:admin
    assert r.status_code == 200, r.text
    assert sorted((c["user"], c["notebook"]) for c in r.json()["clusters"]) == [
        ("alice", "alice-work.ipynb"), ("bob", "bob-extra.ipynb"), ("bob", "bob-work.ipynb")]
    (alice,) = _clusters(hub, "alice")
    r = hub.call("bob", "DELETE", f"{API}/admin/users/alice/clusters/{alice['id']}")
    assert r.status_code == 403 and r.json()["message"] == (
        f"bob is not a JupyterHub admin and lacks the {ADMIN_SCOPE} scope; GET clusters "
        "lists your own clusters")
    r = hub.call("ops", "DELETE", f"{API}/admin/users/carol/clusters/{alice['id']}")
    assert r.status_code == 404
    assert [c["state"] for c in _clusters(hub, "alice")] == ["running"]


def _chromium_or_skip() -> Any:
    """Playwright's sync API, or a skip where Chromium or Playwright is absent."""
    from test_panel_browser import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (./scripts/test.sh installs Debian's chromium)")
    return pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def _panel_after_hub_login(sync_api: Any, hub: Hub, user: str) -> Iterator[Any]:
    """Chromium logged in to the hub as ``user`` (the password form), on the user's
    JupyterLab with the kremote panel open; yields the page, closes the browser after."""
    from test_panel_browser import CHROMIUM, CHROMIUM_ARGS, open_panel_from_palette

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(f"{hub.url}hub/login?next=/user/{user}/lab")
            page.fill("#username_input", user)
            page.fill("#password_input", "hub-pw")
            page.click("#login_submit")
            page.wait_for_url(f"**/user/{user}/lab**")
            page.wait_for_selector("#jp-main-dock-panel")
            page.wait_for_function("() => !!window.jupyterapp")
            page.evaluate("() => window.jupyterapp.restored.then(() => true)")
            open_panel_from_palette(page)
            yield page
        finally:
            browser.close()


def test_an_admin_sees_all_users_in_the_panel_and_shuts_a_cluster_down(hub, kernels):
    """The hub admin logs in; the panel's "All users" view lists alice's and bob's clusters
    (from the service, through the admin's own server in hub mode) and shuts bob's extra one
    down: its Job, pod and Secret go, bob's other cluster stays."""
    from test_panel_browser import screenshot, widen_sidebar

    sync_api = _chromium_or_skip()
    extra = next(c for c in _clusters(hub, "bob") if c["name"] == "extra")
    hub.start_servers("admin")
    with _panel_after_hub_login(sync_api, hub, "admin") as page:
        widen_sidebar(page)
        panel = page.locator("#jupyter-kremote-panel")
        toggle = panel.locator(".jp-kremote-admin-toggle")
        toggle.click()
        assert toggle.get_attribute("aria-pressed") == "true"
        users = panel.locator(".jp-kremote-admin-user")
        panel.locator('.jp-kremote-admin-user[data-user="bob"]').wait_for()
        assert users.evaluate_all("els => els.map(e => e.dataset.user)") == ["alice", "bob"]
        assert panel.locator(".jp-kremote-admin-summary").inner_text() == (
            "2 users · 3 clusters · 3 pods · 0 GPUs")
        row = panel.locator(f'.jp-kremote-admin-user[data-user="bob"] '
                            f'.jp-kremote-admin-cluster[data-cluster="{extra["id"]}"]')
        assert row.locator(".jp-kremote-status").inner_text() == "running"
        screenshot(page, "panel-all-users.png")
        row.locator(".jp-kremote-shutdown").click()
        page.locator(".jp-Dialog .jp-Dialog-button", has_text="Shut down").click()
        row.wait_for(state="detached")
        assert panel.locator(".jp-kremote-admin-summary").inner_text() == (
            "2 users · 2 clusters · 2 pods · 0 GPUs")
        toggle.click()  # back to the admin's own clusters: none
        panel.locator(".jp-kremote-empty").wait_for()
        assert panel.locator(".jp-kremote-admin-user").count() == 0
    assert wait_for(lambda: not any(extra["id"] in o or "extra" in o
                                    for o in _owned(hub.kube, "bob")), 60)
    assert [c["notebook"] for c in _clusters(hub, "bob")] == ["bob-work.ipynb"]


def test_a_restarted_service_adopts_every_users_clusters(hub, kernels):
    before = {u: [c["id"] for c in _clusters(hub, u)] for u in ("alice", "bob")}
    hub.stop_service()
    assert hub.service is not None and hub.service.returncode == 0, hub.log("service.log")
    assert _owned(hub.kube, "alice") and _owned(hub.kube, "bob")  # left running
    hub.start_service()
    for user, ids in before.items():
        clusters = _clusters(hub, user)
        assert [c["id"] for c in clusters] == ids
        assert "Adopted" in [e["reason"] for e in clusters[0]["events"]]
    for k in kernels.values():
        status, text = k.run(CELL)
        assert status == "ok" and text.startswith("on jupyter-kremote-"), text


def test_the_panel_under_the_users_server_after_a_hub_login(hub, kernels):
    """alice logs in to the hub in Chromium; her panel shows her cluster, from the service."""
    sync_api = _chromium_or_skip()
    (cluster,) = _clusters(hub, "alice")
    with _panel_after_hub_login(sync_api, hub, "alice") as page:
        panel = page.locator("#jupyter-kremote-panel")
        card = panel.locator(".jp-kremote-card")
        card.wait_for()
        assert card.count() == 1  # hers only: bob's cluster is not in her view
        assert card.locator(".jp-kremote-name").inner_text() == cluster["name"]
        assert card.locator(".jp-kremote-backend").inner_text().startswith("kubernetes")
        assert card.locator(".jp-kremote-status").inner_text() == "running"
        assert panel.locator(".jp-kremote-group-title").first.inner_text() == \
            "alice-work.ipynb"
        panel.locator(".jp-kremote-connection", has_text="live").wait_for()
        # not an admin: once the service said so (403), no "All users" toggle
        page.wait_for_selector('#jupyter-kremote-panel[data-admin="no"]', state="attached")
        assert panel.locator(".jp-kremote-admin-toggle").count() == 0


def test_stopping_a_users_server_ends_their_clusters(hub, kernels):
    (cluster,) = _clusters(hub, "alice")
    assert _owned(hub.kube, "alice")
    r = hub.api("DELETE", "users/alice/server")
    assert r.status_code in (202, 204), r.text
    # 202: the hub is still stopping it (a loaded machine); the 10 s count from its stop
    assert wait_for(lambda: not hub.api("GET", "users/alice").json()["servers"], 60, 0.2)
    assert wait_for(lambda: not _owned(hub.kube, "alice"), 60), managed(hub.kube.admin)
    (ended,) = _clusters(hub, "alice")
    assert (ended["id"], ended["state"], ended["ended"]) == (
        cluster["id"], "ended", "its owner's server stopped")
    # bob's server runs: his cluster too
    assert [c["state"] for c in _clusters(hub, "bob")] == ["running"]
    assert _owned(hub.kube, "bob")
    # alice comes back: her notebook's next cell says why her cluster ended, then runs
    hub.start_servers("alice")
    kernel = HubKernel(hub, "alice", "alice-work.ipynb")
    try:
        assert kernel.run("%load_ext jupyter_kremote") == ("ok", "")
        status, text = kernel.run(CELL)
        assert status == "ok", text
        assert text.startswith("[kremote] cluster 'default' ended: its owner's server stopped; "
                               "starting a new one\non jupyter-kremote-"), text
    finally:
        kernel.close()
