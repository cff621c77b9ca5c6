"""The authenticated proxy to clusters' services: ``<base_url>kremote/proxy/<id>/<name>/...``.

A template that declares a container port ``kremote-<name>`` (TensorBoard: ``kremote-tb``)
makes that port of rank 0 the cluster's service ``<name>``. This route forwards HTTP (the
response streamed) and WebSocket traffic to it, behind Jupyter's own authentication, so the
link works wherever the user's Jupyter server does. Only clusters this server holds (its
user's) can be reached; the service never sees Jupyter's token or cookies. The prefix is
stripped (``/kremote/proxy/c/tb/data/runs`` reaches ``/data/runs``), as jupyter-server-proxy
does: apps that use relative URLs, TensorBoard among them, work unchanged.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import httpclient, httputil, iostream, web, websocket

from .handlers import _ManagerMixin
from .models import ApiError
from .services import PROXY_PATH, ServiceTarget, target_from_service

_ID = r"(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9._-]*)"
_NAME = r"(?P<name>[a-z0-9][-a-z0-9]*)"
#: hop-by-hop headers (RFC 9110 7.6.1) and what must not reach the service or come back
_DROP_REQUEST = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                 "trailer", "transfer-encoding", "upgrade", "host", "authorization", "cookie",
                 "content-length", "x-xsrftoken", "x-csrftoken"}
_DROP_RESPONSE = {"connection", "keep-alive", "proxy-authenticate", "te", "trailer",
                  "transfer-encoding", "upgrade", "content-length"}
_client: httpclient.AsyncHTTPClient | None = None


def _http_client() -> httpclient.AsyncHTTPClient:
    """One client for every proxied request; no size limit, as the body is streamed."""
    global _client
    if _client is None:
        _client = httpclient.AsyncHTTPClient(force_instance=True, max_clients=64,
                                             max_body_size=2**62, max_buffer_size=2**26)
    return _client


class ServiceProxyHandler(_ManagerMixin, ExtensionHandlerMixin, JupyterHandler,
                          websocket.WebSocketHandler):
    """Proxy one request (or one WebSocket) to a service of a cluster of this user."""

    auth_resource = "kremote"
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    _upstream: websocket.WebSocketClientConnection | None = None
    _closed = False

    def check_xsrf_cookie(self) -> None:
        """Jupyter's check, else a same-origin ``Origin``: proxied apps (TensorBoard) POST
        without Jupyter's _xsrf token, and a cross-site request always names its origin."""
        try:
            super().check_xsrf_cookie()
        except web.HTTPError:
            if not (self.request.headers.get("Origin") and self.check_origin()):
                raise

    async def _target(self, cluster_id: str, name: str) -> ServiceTarget:
        hub = self.settings.get("kremote_hub_service")
        try:
            if hub is not None:  # hub mode: the service holds the cluster
                return await target_from_service(hub, cluster_id, name)
            return await self.manager.service(cluster_id, name)
        except ApiError as exc:  # 404 unknown cluster or service, 409 ended
            raise web.HTTPError(exc.status, str(exc)) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A one-line text message (the user reads it in a browser tab)."""
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}: {message}\n")

    # -- HTTP ----------------------------------------------------------------------------------
    async def get(self, cluster_id: str, name: str, path: str = "") -> None:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._websocket(cluster_id, name, path)
        else:  # ensure_async: tornado types its decorated methods "an awaitable or None"
            await ensure_async(self._proxy(cluster_id, name, path))

    async def head(self, cluster_id: str, name: str, path: str = "") -> None:
        await ensure_async(self._proxy(cluster_id, name, path))

    post = put = patch = delete = options = head

    @web.authenticated
    @authorized
    async def _proxy(self, cluster_id: str, name: str, path: str) -> None:
        target = await self._target(cluster_id, name)
        if path is None or (not path and not self.request.path.endswith("/")):
            # the app's relative URLs resolve against the trailing slash
            query = f"?{self.request.query}" if self.request.query else ""
            self.redirect(f"{self.request.path}/{query}")
            return
        url = target.url("http", path, _query_without_token(self.request.query))
        headers = httputil.HTTPHeaders()
        for key, value in self.request.headers.get_all():
            if key.lower() not in _DROP_REQUEST:
                headers.add(key, value)
        headers["X-Forwarded-Prefix"] = self.request.path[: len(self.request.path) - len(path)]
        headers["X-Forwarded-Proto"] = self.request.protocol
        headers["X-Forwarded-Host"] = self.request.host
        body = self.request.body if self.request.method not in ("GET", "HEAD") else None
        if body is None and self.request.method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            body = b""
        self._status_seen = False
        request = httpclient.HTTPRequest(
            url, method=self.request.method, headers=headers, body=body,
            follow_redirects=False, allow_nonstandard_methods=True,
            decompress_response=False, connect_timeout=10, request_timeout=0,
            header_callback=lambda line: self._on_header(line, target),
            streaming_callback=self._on_chunk)
        try:
            await _http_client().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:
            if not self._status_seen:
                raise web.HTTPError(502, f"service {name!r} of cluster {cluster_id!r} does not "
                                    f"answer at {target.where}: {exc} (has it started? "
                                    "%remote logs shows rank 0's log)") from None
        except iostream.StreamClosedError:
            return  # the browser went away
        if not self._finished:
            self.finish()

    def _on_header(self, line: str, target: ServiceTarget) -> None:
        if line.startswith("HTTP/"):
            start = httputil.parse_response_start_line(line.strip())
            self._status_seen = True
            self.clear()  # drop tornado's defaults (Content-Type text/html)
            self.set_status(start.code, start.reason or None)
            return
        if not line.strip() or ":" not in line:
            return
        key, value = (part.strip() for part in line.split(":", 1))
        lower = key.lower()
        if lower in _DROP_RESPONSE or self.get_status() in (101,):
            return
        if lower == "location":
            value = target.rewrite_location(value, self.request.path, self._path_arg())
        self.add_header(key, value)

    def _path_arg(self) -> str:
        return self.path_kwargs.get("path") or ""

    def _on_chunk(self, chunk: bytes) -> None:
        if self._finished or self.request.connection.stream.closed():  # type: ignore[union-attr]
            return
        self.write(chunk)
        self.flush()

    # -- WebSocket -----------------------------------------------------------------------------
    @ws_authenticated
    async def _websocket(self, cluster_id: str, name: str, path: str) -> None:
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "write", self.auth_resource))
        if not allowed:
            raise web.HTTPError(403)
        target = await self._target(cluster_id, name)
        url = target.url("ws", path or "", _query_without_token(self.request.query))
        protocols = [p.strip() for p in self.request.headers.get(
            "Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        try:
            self._upstream = await websocket.websocket_connect(
                httpclient.HTTPRequest(url, connect_timeout=10),
                on_message_callback=self._from_upstream, subprotocols=protocols or None)
        except (OSError, httpclient.HTTPClientError, websocket.WebSocketError) as exc:
            raise web.HTTPError(502, f"service {name!r} of cluster {cluster_id!r} refused the "
                                f"WebSocket at {target.where}: {exc}") from None
        await websocket.WebSocketHandler.get(self, cluster_id, name, path)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        upstream = self._upstream
        return upstream.selected_subprotocol if upstream is not None else None

    def _from_upstream(self, message: str | bytes | None) -> None:
        if message is None:  # the service closed it
            if not self._closed:
                self.close()
            return
        if self._closed:
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            pass

    async def on_message(self, message: str | bytes) -> None:  # type: ignore[override]
        if self._upstream is not None:
            try:
                await self._upstream.write_message(message, binary=isinstance(message, bytes))
            except websocket.WebSocketClosedError:
                self.close()

    def on_close(self) -> None:
        self._closed = True
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None


def _query_without_token(query: str) -> str:
    """The query minus Jupyter's ``token`` (the service must never see it)."""
    if "token" not in query:
        return query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return urllib.parse.urlencode([(k, v) for k, v in pairs if k != "token"])


default_handlers: list[tuple[str, type[JupyterHandler]]] = [
    (rf"/{PROXY_PATH}/{_ID}/{_NAME}(?:/(?P<path>.*))?", ServiceProxyHandler),
]
