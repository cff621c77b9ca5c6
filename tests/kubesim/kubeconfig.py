"""kubeconfig files for the emulator: one cluster (plain http), one token user, one context."""

from __future__ import annotations

import base64
import os
from typing import Any

import yaml


def kubeconfig_dict(url: str, token: str, namespace: str = "default", name: str = "kubesim",
                    ca_pem: bytes | None = None) -> dict[str, Any]:
    """A kubeconfig that kubectl (1.20+) and kubernetes_asyncio accept.

    kubectl sends the token only to https servers, so give it the https URL and `ca_pem`.
    """
    cluster: dict[str, Any] = {"server": url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name,
                                                "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(path: str | os.PathLike[str], url: str, token: str,
                     namespace: str = "default", ca_pem: bytes | None = None) -> str:
    """Write the kubeconfig (mode 0600, like kubectl does) and return its path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(kubeconfig_dict(url, token, namespace, ca_pem=ca_pem), f, sort_keys=False)
    return path


def read_kubeconfig(path: str | os.PathLike[str]) -> tuple[str, str, bytes | None]:
    """(server URL, token, CA certificate PEM or None) of a kubeconfig's current context."""
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    context = next(c["context"] for c in config["contexts"]
                   if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    ca = cluster.get("certificate-authority-data")
    return cluster["server"], user.get("token", ""), base64.b64decode(ca) if ca else None
