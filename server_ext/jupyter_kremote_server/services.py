"""Where a cluster's service answers: rank 0's pod IP and the port its template names.

``services`` lists a running cluster's services for its model (the panel's links);
``service_target`` resolves one for the proxy route (proxy.py), with the manager's errors:
404 for an unknown cluster or service, 409 for an ended cluster.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from .models import NotFound

PROXY_PATH = "kremote/proxy"


@dataclass(frozen=True)
class ServiceTarget:
    """One service of one cluster, as the proxy reaches it."""

    cluster_id: str
    name: str
    host: str
    port: int

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, scheme: str, path: str, query: str = "") -> str:
        """The service's own URL for `path` (without the proxy's prefix)."""
        quoted = urllib.parse.quote(path, safe="/%:@!$&'()*+,;=-._~")
        return f"{scheme}://{self.where}/{quoted}" + (f"?{query}" if query else "")

    def rewrite_location(self, location: str, request_path: str, path: str) -> str:
        """A redirect of the service, moved under the proxy's prefix.

        ``/login`` (absolute on the service) and ``http://<pod>:<port>/login`` become
        ``<prefix>/login``; relative and foreign locations are left alone.
        """
        prefix = request_path[: len(request_path) - len(path)].rstrip("/")
        parts = urllib.parse.urlsplit(location)
        if parts.scheme in ("http", "https") and parts.netloc == self.where:
            location = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query,
                                                parts.fragment))
        elif parts.scheme or parts.netloc:
            return location
        if location.startswith("/"):
            return prefix + location
        return location


def services(cluster: Any) -> list[dict[str, Any]]:
    """A running cluster's services for its model: ``[{"name": "tb", "port": 6006}]``."""
    handle = getattr(cluster, "handle", None)
    found = getattr(handle, "services", None) or {}
    return [{"name": name, "port": port} for name, port in sorted(found.items())]


async def service_target(manager: Any, cluster_id: str, name: str) -> ServiceTarget:
    """The service `name` of this user's running cluster `cluster_id`, or an ApiError."""
    entry = manager._entry(cluster_id)  # NotFound: unknown, or another user's
    cluster = manager._running(entry)  # Conflict: ended
    handle = cluster.handle
    found = getattr(handle, "services", None) or {}
    if name not in found:
        have = ", ".join(sorted(found)) or "none (no port named kremote-<name>)"
        raise NotFound(f"cluster {cluster_id!r} has no service {name!r}; its services: {have}")
    if not handle.endpoints:
        raise NotFound(f"cluster {cluster_id!r} has no rank 0")
    return ServiceTarget(cluster_id, name, handle.endpoints[0].host, found[name])
