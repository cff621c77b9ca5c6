"""Where a cluster's service answers: rank 0's pod IP and the port its template names, or a
local port-forward listener where the server reaches its agents through port-forward.

``listing`` gives a running cluster's services for its model (the panel's links);
``target`` resolves one for the proxy route (proxy.py, through ``ClusterManager.service``):
404 for an unknown service.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .models import ApiError, NotFound

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


def missing(cluster_id: str, name: str, found: Any) -> NotFound:
    """The 404 for a service the cluster lacks, naming those it has."""
    have = ", ".join(sorted(found)) or "none (no port named kremote-<name>)"
    return NotFound(f"cluster {cluster_id!r} has no service {name!r}; its services: {have}")


async def target_from_service(hub: Any, cluster_id: str, name: str) -> ServiceTarget:
    """Hub mode: the hub's kremote service holds the cluster; this server asks it for the
    model and rank 0's address, then reaches the pod itself (the cluster's NetworkPolicy
    admits its owner's notebook pod). The service's refusals keep their status."""
    from tornado import httpclient

    async def get(path: str) -> dict[str, Any]:
        try:
            resp = await httpclient.AsyncHTTPClient().fetch(
                hub.api_url(path), headers=hub.headers, request_timeout=30)
        except httpclient.HTTPClientError as exc:
            try:
                message = json.loads(exc.response.body)["message"]  # type: ignore[union-attr]
            except (AttributeError, ValueError, KeyError, TypeError):
                message = str(exc)
            error = ApiError(message)
            error.status = exc.code
            raise error from None
        return json.loads(resp.body)  # type: ignore[no-any-return]

    model = await get(f"clusters/{cluster_id}")
    ports = {s["name"]: s["port"] for s in model.get("services") or []}
    if name not in ports:
        raise missing(cluster_id, name, ports)
    endpoints = (await get(f"clusters/{cluster_id}/connection")).get("endpoints") or []
    if not endpoints:
        raise NotFound(f"cluster {cluster_id!r} has no rank 0")
    return ServiceTarget(cluster_id, name, endpoints[0]["host"], ports[name])


def target(cluster_id: str, name: str, cluster: Any) -> ServiceTarget:
    """The service `name` of the running `cluster`; NotFound names the services it has.

    Blocking (a port-forward's first use opens its listener): call it in a worker thread.
    """
    handle = cluster.handle
    found = getattr(handle, "services", None) or {}
    if name not in found:
        raise missing(cluster_id, name, found)
    if not handle.endpoints:
        raise NotFound(f"cluster {cluster_id!r} has no rank 0")
    address = getattr(cluster.backend, "service_address", None)
    host, port = address(handle, name) if address else (handle.endpoints[0].host, found[name])
    return ServiceTarget(cluster_id, name, host, port)
