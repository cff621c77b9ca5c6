"""REST handlers under ``<base_url>kremote/api/v1/``: thin wrappers over ClusterManager.

docs/api.md describes every endpoint. Errors are JSON ``{"message": ...}`` with the status
of the manager's error: 400 bad input, 403 over a limit, 404 unknown id, 409 ended cluster.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .manager import ClusterManager
from .models import ApiError

AUTH_RESOURCE = "kremote"
API = "kremote/api/v1"
_ID = r"(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9._-]*)"

T = TypeVar("T")


class KRemoteHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def manager(self) -> ClusterManager:
        return self.settings["kremote_manager"]

    async def call(self, work: Awaitable[T]) -> T:
        """Await a manager call, turning its refusals into JSON HTTP errors."""
        try:
            return await work
        except ApiError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None

    def body(self) -> dict[str, Any]:
        data = self.get_json_body() or {}
        if not isinstance(data, dict):
            raise web.HTTPError(400, "expected a JSON object in the request body")
        return data

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))


class ClustersHandler(KRemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        clusters = await self.call(self.manager.list_clusters())
        self.send({"clusters": [c.to_dict() for c in clusters]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        options = self.body()
        name = options.pop("name", "default")
        notebook = options.pop("notebook", "")
        model = await self.call(self.manager.ensure(name, notebook, options))
        self.send(model.to_dict(), 201)


class ClusterHandler(KRemoteHandler):
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


class ExtendHandler(KRemoteHandler):
    @web.authenticated
    @authorized
    async def post(self, cluster_id: str) -> None:
        seconds = self.body().get("seconds")
        model = await self.call(self.manager.extend(cluster_id, seconds))
        self.send(model.to_dict())


class LogsHandler(KRemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, cluster_id: str) -> None:
        rank = self.get_query_argument("rank", "0")
        tail = self.get_query_argument("tail", "200")
        model = await self.call(self.manager.logs(cluster_id, rank, tail))
        self.send(model.to_dict())


default_handlers: list[tuple[str, type[KRemoteHandler]]] = [
    (rf"/{API}/clusters/?", ClustersHandler),
    (rf"/{API}/clusters/{_ID}/?", ClusterHandler),
    (rf"/{API}/clusters/{_ID}/extend/?", ExtendHandler),
    (rf"/{API}/clusters/{_ID}/logs/?", LogsHandler),
]
