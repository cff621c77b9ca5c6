"""REST handlers under ``<base_url>kremote/api/v1/``: thin wrappers over ClusterManager.

docs/api.md describes every endpoint. Errors are JSON ``{"message": ...}`` with the status
of the manager's error: 400 bad input, 403 over a limit, 404 unknown id, 409 ended cluster.

Each route's verbs live in a ``*Routes`` mixin that needs only ``manager``, ``call``,
``body``, ``send`` and an authenticated ``current_user``; the Jupyter server's handlers mix
them with jupyter_server's ``APIHandler`` (this module), the hub's kremote service with its
JupyterHub-authenticated base (``service_handlers.py``), so both answer the same API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import iostream, web, websocket

from .manager import ClusterManager
from .models import ApiError

AUTH_RESOURCE = "kremote"
API = "kremote/api/v1"
_ID = r"(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9._-]*)"

T = TypeVar("T")


class _ManagerMixin:
    settings: dict[str, Any]

    @property
    def manager(self) -> ClusterManager:
        return self.settings["kremote_manager"]


if TYPE_CHECKING:  # what the routes use of the handler they are mixed into
    _Handler = web.RequestHandler
else:
    _Handler = object


class Routes(_Handler):
    """Helpers the routes use; the base class brings ``manager`` and ``get_json_body``."""

    manager: ClusterManager

    async def call(self, work: Awaitable[T]) -> T:
        """Await a manager call, turning its refusals into JSON HTTP errors."""
        try:
            return await work
        except ApiError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None

    def body(self) -> dict[str, Any]:
        data = self.get_json_body() or {}  # type: ignore[attr-defined]
        if not isinstance(data, dict):
            raise web.HTTPError(400, "expected a JSON object in the request body")
        return data

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)  # type: ignore[attr-defined]
        self.finish(json.dumps(data))  # type: ignore[attr-defined]


class KRemoteHandler(Routes, _ManagerMixin, ExtensionHandlerMixin, APIHandler):
    """The Jupyter server's base: its authentication, its authorizer, JSON errors."""

    auth_resource = AUTH_RESOURCE


class ClustersRoutes(Routes):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        clusters = await self.call(self.manager.list_clusters(
            self.get_query_argument("name", None), self.get_query_argument("notebook", None)))
        self.send({"clusters": [c.to_dict() for c in clusters]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        options = self.body()
        name = options.pop("name", "default")
        notebook = options.pop("notebook", "")
        model = await self.call(self.manager.ensure(name, notebook, options))
        self.send(model.to_dict(), 201)


class ClusterRoutes(Routes):
    @web.authenticated
    @authorized
    async def get(self, cluster_id: str) -> None:
        model = await self.call(self.manager.get(cluster_id))
        self.send(model.to_dict())

    @web.authenticated
    @authorized
    async def delete(self, cluster_id: str) -> None:
        await self.call(self.manager.shutdown(cluster_id))
        self.set_status(204)
        self.finish()


class ExtendRoutes(Routes):
    @web.authenticated
    @authorized
    async def post(self, cluster_id: str) -> None:
        body = self.body()
        model = await self.call(self.manager.extend(cluster_id, body.get("seconds"),
                                                    body.get("deadline")))
        self.send(model.to_dict())


class LogsRoutes(Routes):
    @web.authenticated
    @authorized
    async def get(self, cluster_id: str) -> None:
        rank = self.get_query_argument("rank", "0")
        if self.get_query_argument("follow", "0") not in ("0", "", "false"):
            await self._follow(cluster_id, rank)
            return
        tail = self.get_query_argument("tail", "200")
        model = await self.call(self.manager.logs(cluster_id, rank, tail))
        self.send(model.to_dict())

    async def _follow(self, cluster_id: str, rank: str) -> None:
        """Stream the log as text/plain, chunk by chunk, until the agent or the client ends."""
        chunks = self.manager.follow_logs(cluster_id, rank)
        try:
            first = await self.call(anext(chunks))
        except StopAsyncIteration:
            first = ""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # proxies must not hold it back
        try:
            self.write(first)
            await self.flush()
            async for chunk in chunks:
                self.write(chunk)
                await self.flush()
        except iostream.StreamClosedError:
            pass
        finally:
            await chunks.aclose()
        if not self.request.connection.stream.closed():  # type: ignore[union-attr]
            self.finish()


class ConnectionRoutes(Routes):
    """Key and endpoints for the kernel's own ZeroMQ connection (never logged)."""

    @web.authenticated
    @authorized
    async def get(self, cluster_id: str) -> None:
        self.set_header("Cache-Control", "no-store")
        self.send(await self.call(self.manager.connection(cluster_id)))


class EventsRoutes(Routes):
    @web.authenticated
    @authorized
    async def get(self, cluster_id: str) -> None:
        self.send(await self.call(self.manager.events(cluster_id)))


class TelemetryRoutes(Routes):
    @web.authenticated
    @authorized
    async def get(self, cluster_id: str) -> None:
        self.send(await self.call(self.manager.telemetry(cluster_id)))


class TasksRoutes(Routes):
    """Parallel maps' counts: kernels PUT their notebook's latest, the panel reads them."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send({"tasks": self.manager.tasks.snapshot()})

    @web.authenticated
    @authorized
    async def put(self) -> None:
        body = self.body()
        self.send(await self.call(_now(self.manager.put_tasks, body.get("notebook"),
                                       body.get("maps"))))


async def _now(fn: Any, *args: Any) -> Any:
    return fn(*args)


class StreamRoutes(_Handler):
    """Every change of every cluster, as JSON messages (docs/api.md, "WebSocket")."""

    manager: ClusterManager

    def open(self, *args: Any, **kwargs: Any) -> None:
        self._queue = self.manager.hub.subscribe()
        self.manager.start_monitor()
        self.write_message(json.dumps(  # type: ignore[attr-defined]
            {"type": "snapshot", "clusters": self.manager.snapshot(),
             "tasks": self.manager.tasks.snapshot()}, default=str))
        self._pump = asyncio.get_running_loop().create_task(self._forward())

    async def _forward(self) -> None:
        while (message := await self._queue.get()) is not None:
            try:
                await self.write_message(  # type: ignore[attr-defined]
                    json.dumps(message, default=str))
            except websocket.WebSocketClosedError:
                break
        self.close()  # type: ignore[attr-defined]

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way

    def on_close(self) -> None:
        self.manager.hub.unsubscribe(self._queue)
        if not self._pump.done():
            self._pump.cancel()


class StreamHandler(StreamRoutes, _ManagerMixin, ExtensionHandlerMixin, JupyterHandler,
                    websocket.WebSocketHandler):
    auth_resource = AUTH_RESOURCE

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not allowed:
            raise web.HTTPError(403)
        res = super().get(*args, **kwargs)
        if res is not None:
            await res


#: each route's pattern (under the base URL) and its verbs
ROUTES: list[tuple[str, type]] = [
    (rf"/{API}/clusters/?", ClustersRoutes),
    (rf"/{API}/clusters/{_ID}/?", ClusterRoutes),
    (rf"/{API}/clusters/{_ID}/extend/?", ExtendRoutes),
    (rf"/{API}/clusters/{_ID}/logs/?", LogsRoutes),
    (rf"/{API}/clusters/{_ID}/connection/?", ConnectionRoutes),
    (rf"/{API}/clusters/{_ID}/events/?", EventsRoutes),
    (rf"/{API}/clusters/{_ID}/telemetry/?", TelemetryRoutes),
    (rf"/{API}/tasks/?", TasksRoutes),
]


def with_base(base: type, routes: list[tuple[str, type]] = ROUTES) -> list[tuple[str, type]]:
    """The routes as handler classes on ``base`` (which brings authentication)."""
    return [(pattern, type(verbs.__name__.replace("Routes", "Handler"), (verbs, base),
                           {v: vars(verbs)[v] for v in _VERBS if v in vars(verbs)}))
            for pattern, verbs in routes]


#: a handler's verbs, copied into its class so that it lists them itself (the token test)
_VERBS = ("get", "post", "put", "delete", "patch")


default_handlers: list[tuple[str, type]] = [
    *with_base(KRemoteHandler), (rf"/{API}/stream/?", StreamHandler)]
