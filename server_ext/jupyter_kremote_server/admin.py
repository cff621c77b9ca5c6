"""Admin routes: every user's clusters, and shutting any of them down.

Only the hub's kremote service holds several users' clusters, so only it can say yes: a caller
is an admin when JupyterHub says so (``admin: true``) or when the caller's token holds the
scope named by ``c.KRemoteService.admin_scope`` (default ``custom:kremote:admin``;
:func:`.policy.is_admin`). A single-user server holds one user's clusters and answers 403
with what to use instead. Everyone else gets 403, and nothing about other users.

Routes (docs/api.md, "Admin routes"), under ``<base_url>kremote/api/v1/``:

- ``GET admin/clusters``: ``{"clusters": [<cluster model>, ...]}``, every user's, each with
  its ``user``, sorted by user then id;
- ``DELETE admin/users/<user>/clusters/<id>``: shut that cluster down (204), 404 if unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from jupyter_server.auth.decorator import authorized
from tornado import web

from .handlers import KRemoteHandler, Routes, with_base
from .manager import ClusterManager
from .models import ClusterModel, NotFound

API = "kremote/api/v1"
_USER = r"(?P<user>[^/]+)"
_ID = r"(?P<cluster_id>[A-Za-z0-9][A-Za-z0-9._-]*)"


class AdminAccess(Protocol):
    """Who may use the admin routes, and every user's manager (``kremote_admin`` setting)."""

    async def refusal(self, handler: web.RequestHandler) -> str | None:
        """None for an admin, else the one-line reason for the 403."""

    def managers(self) -> Mapping[str, ClusterManager]:
        """Each user's ClusterManager, by user name."""


class SingleUser:
    """A single-user server's answer: no admins here; the hub's kremote service has them."""

    def __init__(self, user: str, manager: ClusterManager) -> None:
        self.user = user
        self.manager = manager

    async def refusal(self, handler: web.RequestHandler) -> str | None:
        return (f"admin routes need the hub's kremote service: this Jupyter server holds only "
                f"{self.user}'s clusters (GET clusters lists them)")

    def managers(self) -> Mapping[str, ClusterManager]:
        return {self.user: self.manager}


async def all_clusters(managers: Mapping[str, ClusterManager]) -> list[ClusterModel]:
    """Every user's clusters, sorted by user then id; each model names its user."""
    out = []
    for user in sorted(managers):  # one after another: a listing waits on nothing
        for model in await managers[user].list_clusters():
            model.user = model.user or user
            out.append(model)
    return out


async def shutdown_for(managers: Mapping[str, ClusterManager], user: str,
                       cluster_id: str) -> None:
    """Shut ``user``'s cluster down; NotFound (404) for an unknown user or id."""
    manager = managers.get(user)
    if manager is None:
        raise NotFound(f"no user {user!r} holds clusters here")
    await manager.shutdown(cluster_id)


class _AdminRoutes(Routes):
    settings: dict[str, Any]

    @property
    def access(self) -> AdminAccess:
        return self.settings["kremote_admin"]

    async def check_admin(self) -> Mapping[str, ClusterManager]:
        reason = await self.access.refusal(self)
        if reason is not None:
            raise web.HTTPError(403, reason)
        return self.access.managers()


class AdminClustersRoutes(_AdminRoutes):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        managers = await self.check_admin()
        clusters = await self.call(all_clusters(managers))
        self.send({"clusters": [c.to_dict() for c in clusters]})


class AdminClusterRoutes(_AdminRoutes):
    @web.authenticated
    @authorized
    async def delete(self, user: str, cluster_id: str) -> None:
        managers = await self.check_admin()
        await self.call(shutdown_for(managers, user, cluster_id))
        self.set_status(204)  # type: ignore[attr-defined]
        self.finish()  # type: ignore[attr-defined]


ADMIN_ROUTES: list[tuple[str, type]] = [
    (rf"/{API}/admin/clusters/?", AdminClustersRoutes),
    (rf"/{API}/admin/users/{_USER}/clusters/{_ID}/?", AdminClusterRoutes),
]
admin_handlers = with_base(KRemoteHandler, ADMIN_ROUTES)
