"""Hub mode of the server extension: every kremote call goes on to the hub's kremote service.

Under JupyterHub with ``c.KRemoteApp.service_url`` set (default ``$KREMOTE_SERVICE_URL``),
the single-user server holds no clusters and no Kubernetes rights: its routes under
``kremote/api/v1/`` forward each request, the log stream and the panel's WebSocket to the
service with the server's own JupyterHub token (``$JUPYTERHUB_API_TOKEN``), which acts for
the server's user. The kernel still finds its server as before, and the panel still talks
to ``/user/<name>/kremote/...``; cells still go from the kernel to the agents over ZeroMQ.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import httpclient, iostream, web, websocket

from .handlers import API, AUTH_RESOURCE, KRemoteHandler

#: headers of the service's answer that reach the client
_PASS_HEADERS = ("Content-Type", "Cache-Control", "X-Accel-Buffering")


@dataclass
class HubService:
    """Where the service is (its URL with its prefix, ending in /) and the token to send."""

    url: str
    token: str

    def api_url(self, path: str, query: str = "") -> str:
        return f"{self.url}{API}/{path}" + (f"?{query}" if query else "")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


class ForwardHandler(KRemoteHandler):
    """Any REST call under kremote/api/v1/, answered by the service."""

    @property
    def service(self) -> HubService:
        return self.settings["kremote_hub_service"]

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def put(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    @authorized
    async def delete(self, path: str) -> None:
        await self.forward(path)

    async def forward(self, path: str) -> None:
        """Send the request on; copy the answer back, chunk by chunk while it streams."""
        method = self.request.method or "GET"
        status: list[int] = []
        error = bytearray()

        def on_header(line: str) -> None:
            if line.startswith("HTTP/") and not status:
                status.append(int(line.split()[1]))
            elif ":" in line and status and status[0] < 400:
                name, _, value = line.partition(":")
                if name.strip().title() in _PASS_HEADERS:
                    self.set_header(name.strip(), value.strip())

        def on_chunk(chunk: bytes) -> None:
            if status and status[0] >= 400:
                error.extend(chunk)
                return
            self.set_status(status[0] if status else 200)
            self.write(chunk)
            asyncio.ensure_future(self._flush())

        request = httpclient.HTTPRequest(
            self.service.api_url(path, self.request.query), method=method,
            headers={**self.service.headers, "Content-Type": "application/json"},
            body=self.request.body if method in ("POST", "PUT") else None,
            connect_timeout=10, request_timeout=3600,
            header_callback=on_header, streaming_callback=on_chunk)
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:
            raise web.HTTPError(502, f"the hub's kremote service at {self.service.url} did "
                                f"not answer: {exc}") from None
        if response.code == 599:
            raise web.HTTPError(502, f"the hub's kremote service at {self.service.url} did "
                                f"not answer: {response.error}")
        if response.code >= 400:
            try:
                message = json.loads(bytes(error) or b"{}").get("message")
            except ValueError:
                message = None
            raise web.HTTPError(response.code, message or f"the hub's kremote service "
                                f"answered {response.code}")
        self.set_status(response.code)
        if not self._finished:
            self.finish()

    async def _flush(self) -> None:
        try:
            await self.flush()
        except iostream.StreamClosedError:
            pass


class ForwardStreamHandler(ExtensionHandlerMixin, JupyterHandler, websocket.WebSocketHandler):
    """The panel's WebSocket, relayed from the service's stream of the user's clusters."""

    auth_resource = AUTH_RESOURCE
    _upstream: websocket.WebSocketClientConnection | None = None

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not allowed:
            raise web.HTTPError(403)
        service: HubService = self.settings["kremote_hub_service"]
        url = service.api_url("stream").replace("http", "ws", 1)
        try:
            self._upstream = await websocket.websocket_connect(
                httpclient.HTTPRequest(url, headers=service.headers, connect_timeout=10))
        except (OSError, httpclient.HTTPClientError) as exc:
            raise web.HTTPError(502, f"the hub's kremote service stream at {url}: {exc}"
                                ) from None
        res = super().get(*args, **kwargs)
        if res is not None:
            await res

    def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self._pump = asyncio.get_running_loop().create_task(self._relay())

    async def _relay(self) -> None:
        upstream = self._upstream
        assert upstream is not None
        while (message := await upstream.read_message()) is not None:
            try:
                await self.write_message(message)
            except websocket.WebSocketClosedError:
                break
        self.close()

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way

    def on_close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        pump = getattr(self, "_pump", None)
        if pump is not None and not pump.done():
            pump.cancel()


forward_handlers: list[tuple[str, type]] = [
    (rf"/{API}/stream/?", ForwardStreamHandler),
    (rf"/{API}/(?P<path>.+)", ForwardHandler),
]
