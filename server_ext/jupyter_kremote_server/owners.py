"""A user's clusters end when their server stops: the service watches the hub's servers.

JupyterHub stops a single-user server for the user, an admin or the idle culler, and a
server killed outright runs no cleanup at all; so the service, not the server, decides. It
asks the hub which users have a server running or starting (``GET /hub/api/users?state=
active``, one paginated call for every user; the service's token needs ``list:users`` and
``read:servers``), and ends the clusters of a user who has none for longer than
``owner_stopped_grace``. The clusters stay listed as ended with the reason, so the panel and
the kernel's next cell say why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

if TYPE_CHECKING:
    from .service import KRemoteService

log = logging.getLogger("jupyter_kremote_server")

#: why a user's clusters ended, as the panel and the kernel show it
OWNER_STOPPED = "its owner's server stopped"


class OwnerWatch:
    """Ends the clusters of users whose servers have all stopped, after a grace."""

    def __init__(self, service: KRemoteService) -> None:
        self.service = service
        self.gone_since: dict[str, float] = {}  # user -> when first seen without a server

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the hub may be restarting: look again
                log.warning("kremote: could not check users' servers: %s", exc)
            await asyncio.sleep(self.service.owner_poll_interval)

    async def once(self, now: float | None = None) -> dict[str, list[str]]:
        """One look; returns {user: [ended cluster ids]}."""
        grace = self.service.owner_stopped_grace
        holders = {u for u, m in self.service.managers.items() if m.registry.running()}
        if grace < 0 or not holders:
            self.gone_since.clear()
            return {}
        active = await self.active_users()
        now = time.time() if now is None else now
        ended: dict[str, list[str]] = {}
        for user in sorted(holders):
            if user in active:
                self.gone_since.pop(user, None)
                continue
            since = self.gone_since.setdefault(user, now)
            if now - since >= grace:
                self.gone_since.pop(user)
                ended[user] = await self.service.managers[user].end_all(OWNER_STOPPED)
                log.info("kremote: %s's server stopped; ended %s", user,
                         ", ".join(ended[user]) or "nothing")
        return ended

    async def active_users(self) -> set[str]:
        """Names of the users with a server running, starting or stopping."""
        auth = self.service.hub_auth
        client = AsyncHTTPClient()
        names: set[str] = set()
        offset = 0
        while True:
            query = urllib.parse.urlencode({"state": "active", "offset": offset, "limit": 200})
            resp = await client.fetch(HTTPRequest(
                f"{auth.api_url.rstrip('/')}/users?{query}", request_timeout=20,
                headers={"Authorization": f"token {auth.api_token}",
                         "Accept": "application/jupyterhub-pagination+json"}))
            page = json.loads(resp.body)
            names |= {u["name"] for u in page.get("items", [])}
            following = (page.get("_pagination") or {}).get("next")
            if not following:
                return names
            offset = following["offset"]
