"""jupyter-kremote: run notebook cells on remote agents with ``%%remote``.

``%load_ext jupyter_kremote`` registers the magics; ``LocalCluster`` gives the same
without them. Heavy modules (the Kubernetes client) load only when used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Inbox", "KubeCluster", "LocalCluster", "Outbox", "PodSpec", "group", "groups",
           "load_ipython_extension", "peers", "rank", "remote", "unload_ipython_extension"]
_PEERS = ("Inbox", "Outbox", "group", "groups", "peers", "rank")


def load_ipython_extension(ipython: Any) -> None:
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    pass


def __getattr__(name: str) -> Any:
    if name in ("LocalCluster", "KubeCluster"):
        from . import api

        return getattr(api, name)
    if name == "remote":
        from .remote_fn import remote

        return remote
    if name in _PEERS:  # on the agents: where the other groups are, channels to them
        from . import channels

        return getattr(channels, name)
    if name == "PodSpec":
        from .spec import PodSpec

        return PodSpec
    raise AttributeError(name)
