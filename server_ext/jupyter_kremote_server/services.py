"""Where a cluster's service answers: rank 0's pod IP and the port its template names, or a
local port-forward listener where the server reaches its agents through port-forward.

``listing`` gives a running cluster's services for its model (the panel's links);
``target`` resolves one for the proxy route (proxy.py, through ``ClusterManager.service``):
404 for an unknown service.
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


def listing(cluster_id: str, cluster: Any) -> list[dict[str, Any]]:
    """A running cluster's services for its model:
    ``[{"name": "tb", "port": 6006, "path": "kremote/proxy/train-default/tb/"}]``."""
    found = getattr(getattr(cluster, "handle", None), "services", None) or {}
    return [{"name": name, "port": port, "path": f"{PROXY_PATH}/{cluster_id}/{name}/"}
            for name, port in sorted(found.items())]


def target(cluster_id: str, name: str, cluster: Any) -> ServiceTarget:
    """The service `name` of the running `cluster`; NotFound names the services it has.

    Blocking (a port-forward's first use opens its listener): call it in a worker thread.
    """
    handle = cluster.handle
    found = getattr(handle, "services", None) or {}
    if name not in found:
        have = ", ".join(sorted(found)) or "none (no port named kremote-<name>)"
        raise NotFound(f"cluster {cluster_id!r} has no service {name!r}; its services: {have}")
    if not handle.endpoints:
        raise NotFound(f"cluster {cluster_id!r} has no rank 0")
    address = getattr(cluster.backend, "service_address", None)
    host, port = address(handle, name) if address else (handle.endpoints[0].host, found[name])
    return ServiceTarget(cluster_id, name, host, port)
