"""The kernel's link to its Jupyter server's kremote extension (the control plane).

A kernel started by a jupyter-server that runs the ``jupyter_kremote_server`` extension asks
that server for its clusters, so that they outlive a kernel restart and the panel shows
them; the kernel still talks to the agents itself over ZeroMQ (the data plane), with the
key and endpoints the server hands out. Without such a server the magics start their
agents in-process, as before.

Finding the server: ``KREMOTE_SERVER_URL`` (and ``KREMOTE_SERVER_TOKEN``) name one
explicitly; otherwise the ``jpserver-<pid>.json`` runtime files jupyter-server writes are
matched to this kernel by pid: the server is one of the kernel's ancestor processes.
``KREMOTE_SERVER=off`` keeps the kernel on its own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import KRemoteError

API = "kremote/api/v1"


class ServerError(KRemoteError):
    """The Jupyter server refused or failed a request; the message is the server's."""


@dataclass
class ServerInfo:
    url: str  # with the base URL, ending in "/" (http://localhost/... for a unix socket)
    token: str
    root_dir: str = ""
    pid: int | None = None
    sock: str = ""  # the server's unix socket, when it listens on one


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, sock_path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__("localhost", *args[1:], **kwargs)
        self.sock_path = sock_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.sock_path)


class _UnixHandler(urllib.request.HTTPHandler):
    """Send http:// requests to a unix socket (jupyter-server's ``--sock``)."""

    def __init__(self, sock_path: str) -> None:
        super().__init__()
        self.sock_path = sock_path

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(lambda host, **kw: _UnixConnection(self.sock_path, host, **kw), req)


def _opener(info: ServerInfo) -> urllib.request.OpenerDirector:
    """Never through a proxy: the server's token must not go to one (HTTP(S)_PROXY)."""
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if info.sock:
        handlers.append(_UnixHandler(info.sock))
    return urllib.request.build_opener(*handlers)


def _from_url(url: str, token: str, **extra: Any) -> ServerInfo:
    """A ServerInfo from http(s)://host/base/ or http+unix://%2Fpath%2Fto.sock/base/."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http+unix":
        path = parts.path.rstrip("/") + "/"
        return ServerInfo(f"http://localhost{path}", token,
                          sock=urllib.parse.unquote(parts.netloc), **extra)
    return ServerInfo(url.rstrip("/") + "/", token, **extra)


def _runtime_dir() -> Path:
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return Path(jupyter_runtime_dir())
    except ImportError:  # no Jupyter here at all
        return Path(os.environ.get("JUPYTER_RUNTIME_DIR", "~/.local/share/jupyter/runtime")
                    ).expanduser()


def _ancestors() -> set[int]:
    import psutil

    try:
        return {p.pid for p in psutil.Process().parents()}
    except psutil.Error:
        return set()


def find_server(env: dict[str, str] | None = None) -> ServerInfo | None:
    """The Jupyter server this kernel belongs to, or None."""
    env = dict(os.environ if env is None else env)
    if env.get("KREMOTE_SERVER", "").lower() in ("off", "0", "no", "false"):
        return None
    if env.get("KREMOTE_SERVER_URL"):
        return _from_url(env["KREMOTE_SERVER_URL"], env.get("KREMOTE_SERVER_TOKEN", ""))
    ancestors = _ancestors()
    for path in sorted(_runtime_dir().glob("jpserver-*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("pid") in ancestors and info.get("url"):
            if info.get("sock"):
                base = "/" + (info.get("base_url") or "/").strip("/")
                return ServerInfo(f"http://localhost{base.rstrip('/')}/", info.get("token", ""),
                                  info.get("root_dir", ""), info.get("pid"), sock=info["sock"])
            return _from_url(info["url"], info.get("token", ""),
                             root_dir=info.get("root_dir", ""), pid=info.get("pid"))
    return None


def notebook_path(server: ServerLink | None, root: str | Path = "") -> str:
    """This kernel's notebook as the server and the panel name it: its path under the
    server's root (JupyterLab gives kernels ``JPY_SESSION_NAME``)."""
    notebook = os.environ.get("JPY_SESSION_NAME", "") or ("" if server else str(root))
    if server is not None and server.info.root_dir and os.path.isabs(notebook):
        with contextlib.suppress(ValueError):
            notebook = Path(notebook).relative_to(server.info.root_dir).as_posix()
    return notebook


class ServerLink:
    """A small synchronous JSON client of the extension's REST API (token auth)."""

    def __init__(self, info: ServerInfo, timeout: float = 30.0) -> None:
        self.info = info
        self.timeout = timeout
        self._opener = _opener(info)

    @classmethod
    def discover(cls) -> ServerLink | None:
        """A link to this kernel's server if it runs the kremote extension, else None."""
        info = find_server()
        if info is None:
            return None
        link = cls(info, timeout=5.0)
        try:
            link.request("GET", "clusters")
        except (ServerError, OSError):
            return None  # a server without the extension (or gone): stay in-process
        link.timeout = 30.0
        return link

    def _url(self, path: str, query: dict[str, Any] | None = None) -> str:
        url = f"{self.info.url}{API}/{path}"
        return url + ("?" + urllib.parse.urlencode(query) if query else "")

    def _open(self, method: str, path: str, body: Any = None,
              query: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self._url(path, query), data=data, method=method)
        if self.info.token:
            req.add_header("Authorization", f"token {self.info.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            return self._opener.open(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read() or b"{}").get("message")
            except ValueError:
                message = None
            raise ServerError(message or f"the Jupyter server answered {exc.code} to "
                              f"{method} {path}") from None

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        with self._open(method, path, body, query, timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def stream(self, path: str, query: dict[str, Any], write: Callable[[str], None]) -> None:
        """Copy a streamed text answer to ``write`` until it ends (Ctrl-C stops)."""
        with self._open("GET", path, query=query, timeout=3600) as resp:
            while True:
                chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(4096)
                if not chunk:
                    return
                write(chunk.decode(errors="replace"))


__all__ = ["ServerError", "ServerInfo", "ServerLink", "find_server",
           "notebook_path"]
