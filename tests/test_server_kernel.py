"""A kernel started by a real Jupyter server uses the server's clusters (the control plane).

The server runs as its own process with the extension, exactly as ``jupyter lab`` would; the
kernel finds it through the runtime file the server writes, and a kernel restart reattaches
to the same agents, whose variables are still there.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import Kernel, agent_pids_of, alive, all_agent_pids, wait_for

TOKEN = "kremote-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``jupyter server`` subprocess with the kremote extension, and a tiny REST client."""

    def __init__(self, root: Path, runtime: Path, extension: bool = True,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 sock: Path | None = None) -> None:
        self.root, self.runtime, self.sock = root, runtime, sock
        self.port = _free_port()
        self.url = "http://localhost/" if sock else f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
               "JUPYTER_CONFIG_DIR": str(runtime.parent / "config"), "KREMOTE_SERVER": "",
               **(env or {})}
        env.pop("KREMOTE_SERVER_URL", None)
        where = [f"--ServerApp.sock={sock}"] if sock else [f"--port={self.port}",
                                                           "--ip=127.0.0.1"]
        self.log = open(runtime.parent / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
             *where, f"--IdentityProvider.token={TOKEN}",
             f"--ServerApp.root_dir={root}",
             f"--ServerApp.jpserver_extensions={{'jupyter_kremote_server': {extension}}}",
             *args],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        ok = wait_for(self._up, 120, 0.2)
        if not ok:  # not up in time (a busy machine): never leave it running behind the test
            self.stop()
        assert ok, (runtime.parent / "server.log").read_text()[-3000:]

    def _up(self) -> bool:
        try:
            self.call("GET", "api/status")
            return True
        except OSError:
            return False

    def call(self, method: str, path: str, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", f"token {TOKEN}")
        if self.sock:  # the test's own unix-socket client, independent of the product's
            conn = _UnixHTTP(str(self.sock))
            conn.request(method, "/" + path, body=req.data, headers=dict(req.header_items()))
            resp = conn.getresponse()
            if resp.status >= 400:
                raise OSError(f"{resp.status} {resp.read()[:200]!r}")
            raw = resp.read()
            conn.close()
            return json.loads(raw) if raw else None
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def open_notebook(self, path: str, cwd: Path) -> tuple[dict, Kernel]:
        """Start a notebook session as JupyterLab does; its session and a client of its kernel."""
        session = self.call("POST", "api/sessions", {
            "path": path, "name": Path(path).name, "type": "notebook",
            "kernel": {"name": "python3"}})
        return session, self.kernel(session["kernel"]["id"], cwd)

    def kernel(self, kernel_id: str, cwd: Path) -> Kernel:
        from jupyter_client import BlockingKernelClient

        end = time.monotonic() + 60
        while True:  # a kernel still importing on a busy machine misses its first heartbeat,
            kc = BlockingKernelClient(  # which reads as "Kernel died": ask again until it answers
                connection_file=str(self.runtime / f"kernel-{kernel_id}.json"))
            kc.load_connection_file()
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=60)
                break
            except RuntimeError:
                kc.stop_channels()
                if time.monotonic() > end:
                    raise
        return Kernel(None, kc, cwd)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "root"
    (root / "work").mkdir(parents=True)
    runtime = tmp_path / "runtime"
    before = all_agent_pids()
    srv = Server(root, runtime)
    try:
        yield srv
    finally:
        srv.stop()
        assert wait_for(lambda: not (all_agent_pids() - before), 60), "agents left behind"


def test_kernel_uses_the_server_and_reattaches_after_a_restart(server):
    session, k = server.open_notebook("work/train.ipynb", server.root / "work")
    kernel_id = session["kernel"]["id"]
    try:
        assert k.run("%load_ext jupyter_kremote").status == "ok"
        (server.root / "work" / "helpers.py").write_text("def answer():\n    return 41\n")
        res = k.run("%%remote\nimport helpers, os\nx = helpers.answer()\nprint('x is', x)")
        assert res.status == "ok", res.traceback_text
        assert "x is 41" in res.stdout

        # the server holds the cluster, named after the notebook the kernel belongs to
        listing = server.call("GET", "kremote/api/v1/clusters")["clusters"]
        assert [(c["id"], c["notebook"], c["state"]) for c in listing] == [
            ("train-default", "work/train.ipynb", "running")]
        created = listing[0]["created"]
        status = k.run("%remote status")
        assert "server" in status.text and "idle" in status.text

        # a kernel restart: the new kernel reattaches, and x is still on the agent
        server.call("POST", f"api/kernels/{kernel_id}/restart")
        k.kc.stop_channels()
        k = server.kernel(kernel_id, server.root / "work")
        assert k.run("%load_ext jupyter_kremote").status == "ok"
        res = k.run("%%remote\nprint('x + 1 =', x + 1)")
        assert res.status == "ok", res.traceback_text
        assert "x + 1 = 42" in res.stdout
        listing = server.call("GET", "kremote/api/v1/clusters")["clusters"]
        assert [c["created"] for c in listing] == [created]  # the same cluster

        # the TTL moved from the notebook shows in the server's view
        deadline = listing[0]["deadline"]
        assert k.run("%remote extend 30m").status == "ok"
        got = server.call("GET", "kremote/api/v1/clusters/train-default")
        assert got["deadline"] == pytest.approx(deadline + 1800, abs=5)

        # shut down from the server (the panel's button): the next cell says so
        pids = [p["pid"] for p in got["pods"]]
        server.call("DELETE", "kremote/api/v1/clusters/train-default")
        assert wait_for(lambda: not any(alive(p) for p in pids), 60)
        time.sleep(1.1)  # the kernel's cached view of the cluster expires
        res = k.run("%%remote\nprint(x)")
        assert res.status == "error"
        assert "shut down from the Jupyter server" in res.error["evalue"]
        assert "%remote restart" in res.error["evalue"]

        # restart from the notebook gives a fresh cluster through the server
        res = k.run("%remote restart")
        assert res.status == "ok", res.traceback_text
        res = k.run("%%remote\nprint('fresh', 'x' in globals())")
        assert "fresh False" in res.stdout
        assert k.run("%remote shutdown").status == "ok"
        assert server.call("GET", "kremote/api/v1/clusters")["clusters"] == []
    finally:
        k.kc.stop_channels()
        server.call("DELETE", f"api/sessions/{session['id']}")


def test_kernels_without_the_extension_run_agents_themselves(tmp_path):
    """A server that does not run the extension: the magics start agents in-process."""
    root = tmp_path / "root"
    root.mkdir()
    srv = Server(root, tmp_path / "runtime", extension=False)
    try:
        _, k = srv.open_notebook("plain.ipynb", root)
        try:
            assert k.run("%load_ext jupyter_kremote").status == "ok"
            res = k.run("%%remote\nprint('local', 1 + 1)")
            assert res.status == "ok" and "local 2" in res.stdout
            assert "local" in k.run("%remote status").text
        finally:
            k.run("%remote shutdown")
            k.kc.stop_channels()
    finally:
        srv.stop()


def test_an_idle_cluster_is_culled_and_the_next_cell_says_so(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    srv = Server(root, tmp_path / "runtime", args=("--KRemoteApp.idle_cull_seconds=3",
                                                   "--KRemoteApp.cull_interval=0.5"))
    try:
        _, k = srv.open_notebook("idle.ipynb", root)
        try:
            assert k.run("%load_ext jupyter_kremote").status == "ok"
            # a cell longer than the idle time is work, not idleness
            res = k.run("%%remote\nimport time; time.sleep(4); print('slept')")
            assert "slept" in res.stdout
            model = srv.call("GET", "kremote/api/v1/clusters")["clusters"][0]
            assert model["state"] == "running"
            pids = [p["pid"] for p in model["pods"]]
            assert wait_for(lambda: srv.call("GET", "kremote/api/v1/clusters/idle-default")
                            ["state"] == "ended", 60)
            res = k.run("%%remote\nprint('again')")
            assert res.error["ename"] == "ClusterEnded"
            assert "it was idle for more than 3s" in res.error["evalue"]
            got = srv.call("GET", "kremote/api/v1/clusters/idle-default")
            assert got["events"][0]["reason"] == "Culled"
            assert wait_for(lambda: not any(alive(p) for p in pids), 60)
        finally:
            k.kc.stop_channels()
    finally:
        srv.stop()


def test_a_limit_refusal_reaches_the_cell_and_starts_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()

    def agents() -> list[int]:  # this test's own (other runs may share the machine)
        return agent_pids_of(os.getpid())

    srv = Server(root, tmp_path / "runtime", args=("--KRemoteApp.user=alice",
                                                   "--KRemoteApp.max_pods=2"))
    try:
        _, k = srv.open_notebook("big.ipynb", root)
        try:
            assert k.run("%load_ext jupyter_kremote").status == "ok"
            res = k.run("%%remote -n 3\nprint('never')")
            assert res.status == "error" and "never" not in res.stdout
            # one line, as the user sees it: no traceback of the product's code
            assert res.error["traceback"] == [(
                "ServerError: alice: pod limit 2 reached (0 in use); this cluster asks for 3: "
                "ask for fewer")]
            assert srv.call("GET", "kremote/api/v1/clusters")["clusters"] == []
            assert not agents()
            # the kernel is fine: a cluster within the limit runs
            assert "fits" in k.run("%%remote -n 2\nprint('fits')").stdout
        finally:
            k.kc.stop_channels()
    finally:
        srv.stop()
    assert wait_for(lambda: not agents(), 60)


def test_sigint_without_a_tty_stops_the_server_through_its_cleanup(tmp_path):
    """JupyterHub stops single-user servers with SIGINT, and they have no tty: the extension's
    cleanup must still run, ending the agents and removing their work folders."""
    root, tmp = tmp_path / "root", tmp_path / "tmp"
    root.mkdir()
    tmp.mkdir()
    srv = Server(root, tmp_path / "runtime", env={"TMPDIR": str(tmp)})
    try:
        _, k = srv.open_notebook("hub.ipynb", root)
        try:
            assert k.run("%load_ext jupyter_kremote").status == "ok"
            assert "up" in k.run("%%remote -n 2\nprint('up')").stdout
            pids = [p["pid"] for p in srv.call("GET", "kremote/api/v1/clusters")
                    ["clusters"][0]["pods"]]
            assert list(tmp.glob("kremote-*")), "the agents' work folders are under $TMPDIR"
        finally:
            k.kc.stop_channels()
        srv.proc.send_signal(signal.SIGINT)
        srv.proc.wait(30)
    finally:
        srv.stop()
    log = (tmp_path / "server.log").read_text()
    assert re.search(r"Shutting down \d+ extensions?", log), log[-2000:]
    assert "kremote: stopped" in log, log[-2000:]
    assert not any(alive(p) for p in pids)
    assert not list(tmp.glob("kremote-*"))


@pytest.mark.parametrize("where", ["tcp behind a proxy setting", "unix socket"])
def test_kernel_reaches_its_server_without_proxy_and_on_a_unix_socket(tmp_path, where):
    """HTTP(S)_PROXY point at nothing: the kernel's requests to its own server (with the
    server's token) must not go there; a server on --sock is found as well."""
    root = tmp_path / "root"
    root.mkdir()
    dead = f"http://127.0.0.1:{_free_port()}"
    env = {"HTTP_PROXY": dead, "http_proxy": dead, "HTTPS_PROXY": dead, "https_proxy": dead,
           "NO_PROXY": "", "no_proxy": ""}
    sock = tmp_path / "s.sock" if where == "unix socket" else None
    srv = Server(root, tmp_path / "runtime", env=env, sock=sock)
    try:
        _, k = srv.open_notebook("p.ipynb", root)
        try:
            assert k.run("%load_ext jupyter_kremote").status == "ok"
            assert k.run("%%remote\nx = 1").status == "ok"
            listing = srv.call("GET", "kremote/api/v1/clusters")["clusters"]
            assert [c["id"] for c in listing] == ["p-default"]  # the server holds it
            assert "server" in k.run("%remote status").text
            assert k.run("%remote shutdown").status == "ok"
        finally:
            k.kc.stop_channels()
    finally:
        srv.stop()
