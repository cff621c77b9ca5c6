"""Links to a cluster's services for ``%remote open``: through the Jupyter server's proxy.

A cluster the kernel's Jupyter server holds lists its services in its model (ports named
``kremote-<name>``); each opens at ``<base_url>kremote/proxy/<id>/<name>/`` on that server,
behind its login. The HTML link is the URL's path, so it works however the browser reached the
server (a JupyterHub's public address included); the text form is the server's own URL. A
cluster started without a server has no proxy: the link goes to rank 0's pod IP (which only
answers inside the Kubernetes cluster), or, where this kernel reaches its agents through
port-forward, to a local port-forward listener of the service; a local cluster's service
answers on this machine's 127.0.0.1.
"""

from __future__ import annotations

import html
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .manifests import services_of
from .templates import TemplateError, TemplateResolver


@dataclass(frozen=True)
class ServiceLink:
    name: str
    href: str  # what a browser on the notebook's page opens
    url: str  # the full URL, for text
    direct: bool = False  # to the pod itself, not through the server's proxy
    #: where a direct link leads: "pod" (its IP), "port-forward" (a local listener), "local"
    via: str = ""


def links(cluster: Any) -> list[ServiceLink]:
    """The services of a session ``Cluster``, by name."""
    backend = cluster.backend
    model_of = getattr(backend, "model", None)
    if model_of is not None and getattr(backend, "link", None) is not None:
        model = model_of(cluster.handle, 0) or {}
        base = backend.link.info.url
        path = urllib.parse.urlsplit(base).path
        return [ServiceLink(s["name"], path + s["path"], base + s["path"])
                for s in model.get("services") or []]
    found = []
    address = getattr(backend, "service_address", None)
    local = getattr(backend, "name", "") == "local"
    for name, port in sorted(cluster.handle.services.items()):
        host = cluster.handle.endpoints[0].host
        if address is not None:  # a port-forward of this kernel where pod IPs are out of reach
            host, port = address(cluster.handle, name)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        via = "local" if local else "port-forward" if host == "127.0.0.1" else "pod"
        found.append(ServiceLink(name, f"http://{where}/", f"http://{where}/", direct=True,
                                 via=via))
    return found


def find(cluster: Any, name: str) -> list[ServiceLink]:
    """The link(s) `name` stands for: a service, or the services its template declares
    (``%remote open tensorboard`` opens the ``tb`` of ``-t tensorboard``)."""
    found = links(cluster)
    if not name:
        return found
    exact = [s for s in found if s.name == name]
    if exact or name not in (getattr(cluster.options, "templates", None) or []):
        return exact
    try:
        declared = services_of(TemplateResolver().load_fragment(name, {}))
    except (TemplateError, ValueError):
        return []
    return [s for s in found if s.name in declared]


def bundle(cluster_name: str, found: list[ServiceLink]) -> dict[str, str]:
    """An HTML list of links (opened in a new tab) and its plain-text form."""
    note = {"local": " (served on this machine, while the cluster runs)",
            "port-forward": " (through this kernel's port-forward, while the cluster runs)",
            "pod": " (straight to the pod: this answers only inside the Kubernetes cluster)",
            }.get(found[0].via, "") if found else ""  # direct: no Jupyter server, no proxy
    text = "\n".join(f"{s.name}: {s.url}" for s in found)
    items = "".join(f'<li><a href="{html.escape(s.href)}" target="_blank" '
                    f'rel="noopener">{html.escape(s.name)}</a> '
                    f"<code>{html.escape(s.url)}</code></li>" for s in found)
    title = f"cluster {cluster_name!r}: service{'s' if len(found) > 1 else ''}{note}"
    return {"text/plain": f"{title}\n{text}",
            "text/html": f"<div>{html.escape(title)}<ul>{items}</ul></div>"}
