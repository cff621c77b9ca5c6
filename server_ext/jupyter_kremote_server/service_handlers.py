"""The hub service's handlers: the server extension's routes on a JupyterHub-authenticated base.

A request carries a JupyterHub token (a user's, or a single-user server's own, which acts for
its user); ``HubAuth`` turns it into the hub's identity (name, admin, groups, scopes) and
checks the scope that grants access to this service (``access:services!service=kremote``).
Each user gets their own :class:`~.manager.ClusterManager`, so another user's cluster is a
404 and connection secrets reach only the owner. Only tokens are accepted (no cookies), so
there is no XSRF to check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jupyterhub.services.auth import (  # type: ignore[import-untyped]
    HubAuth,
    HubAuthenticated,
    UserNotAllowed,
)
from tornado import web, websocket

from .admin import ADMIN_ROUTES
from .handlers import API, AUTH_RESOURCE, ROUTES, Routes, StreamRoutes, with_base
from .manager import ClusterManager

if TYPE_CHECKING:
    from .service import KRemoteService


class _HubUsers:
    """The authorizer: HubAuth already checked the access scope; ownership is per manager."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return bool(user)


class _HubIdentity(HubAuthenticated):
    """Identifies the caller once per request, without blocking the event loop."""

    settings: dict[str, Any]
    request: Any
    current_user: Any
    auth_resource = AUTH_RESOURCE
    authorizer = _HubUsers()

    @property
    def service(self) -> KRemoteService:
        return self.settings["kremote_service"]

    async def prepare(self) -> None:
        self.hub_auth = self.settings["hub_auth"]
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            raise web.HTTPError(403, "a JupyterHub token is needed: Authorization: token ...")
        try:
            identity = self.check_hub_user(model)
        except UserNotAllowed:
            raise web.HTTPError(
                403, f"{model.get('kind', 'user')} {model.get('name')} may not use this "
                     "service: its token lacks access:services!service=kremote") from None
        if identity.get("kind", "user") != "user":
            raise web.HTTPError(403, "kremote clusters belong to users; use a user's token")
        self.current_user = identity
        await self.service.ready.wait()  # until the clusters of a previous run are adopted

    def get_current_user(self) -> Any:
        return None  # set by prepare (tornado's synchronous hook would block the loop)

    @property
    def manager(self) -> ClusterManager:
        return self.service.manager_for(self.current_user)

    def check_xsrf_cookie(self) -> None:
        pass  # tokens only


class ServiceHandler(_HubIdentity, web.RequestHandler):
    """Base of the service's REST routes: JSON bodies and JSON errors like APIHandler's."""

    def get_json_body(self) -> Any:
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "invalid JSON in the request body") from None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.finish(json.dumps({"message": message, "reason": None}))


class ServiceStreamHandler(StreamRoutes, _HubIdentity, websocket.WebSocketHandler):
    """The user's clusters' changes, as the server extension streams them."""

    def check_origin(self, origin: str) -> bool:
        return True  # token-authenticated: no cookie a foreign page could ride on


class HubAdmins:
    """The admin routes' access in the service: JupyterHub admins or the admin scope."""

    def __init__(self, service: KRemoteService) -> None:
        self.service = service

    async def refusal(self, handler: web.RequestHandler) -> str | None:
        identity = handler.current_user or {}
        if self.service.is_admin(identity):
            return None
        scope = self.service.admin_scope
        return (f"{identity.get('name')} is not a JupyterHub admin"
                + (f" and lacks the {scope} scope" if scope else "")
                + "; GET clusters lists your own clusters")

    def managers(self) -> Mapping[str, ClusterManager]:
        return dict(self.service.managers)


def service_handlers(prefix: str) -> list[tuple[str, type]]:
    """Every route under the service's prefix (``/services/kremote/``)."""
    base = prefix.rstrip("/")
    routes: list[tuple[str, type[Routes] | type]] = [*ROUTES, *ADMIN_ROUTES]
    return [(base + pattern, handler) for pattern, handler in with_base(ServiceHandler, routes)
            ] + [(rf"{base}/{API}/stream/?", ServiceStreamHandler)]


def hub_auth() -> HubAuth:
    """The service's HubAuth, configured from JupyterHub's environment variables."""
    return HubAuth(cache_max_age=60)
