"""The contract between the session and a backend (local processes, Kubernetes pods)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..client import Endpoint
from ..spec import PodSpec


@dataclass
class StartRequest:
    """What a backend needs to start a cluster's agents."""

    name: str
    spec: PodSpec = field(default_factory=PodSpec)
    notebook: str = ""
    workdir: str | None = None  # local backend: parent of the agents' working folders
    progress: Callable[[str], None] | None = None  # start-up stages, for a live status line
    #: set by whoever asked (a server whose client pressed stop): the start gives up and
    #: deletes what it made; backends that start at once need not look
    cancelled: threading.Event | None = None
    #: set before ``cancelled`` by a server stop that keeps its clusters (keep_on_exit): a
    #: Job still waiting in Kueue stays queued, for the next server to adopt
    keep_queued: threading.Event | None = None


@dataclass
class ClusterHandle:
    """A started cluster as the session sees it."""

    name: str
    backend: str
    key: bytes
    endpoints: list[Endpoint]
    started: float
    deadline: float
    #: rank 0's services (ports named kremote-<name>): {name: port}, reached at endpoints[0]
    services: dict[str, int] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def start(self, request: StartRequest) -> ClusterHandle:
        """Start every agent and return once all are reachable (or raise, leaving none)."""

    def liveness(self, handle: ClusterHandle, rank: int) -> str | None:
        """None while rank is alive, else how it ended, to follow "rank N "."""

    def logs(self, handle: ClusterHandle, rank: int, tail: int = 200) -> str:
        """The agent's own output outside cells (start-up, warnings, crashes)."""

    def follow_logs(self, handle: ClusterHandle, rank: int, write: Callable[[str], None],
                    stop: threading.Event | None = None) -> None:
        """Stream the log to ``write`` as it grows, until the agent ends, Ctrl-C, or ``stop``
        is set (the client went away: the stream and its thread end with it)."""

    def events(self, handle: ClusterHandle, n: int = 50) -> list[str]:
        """Recent events about the cluster, oldest first (none for local agents)."""

    def describe(self, handle: ClusterHandle, rank: int) -> dict[str, object]:
        """Where the agent runs (pid or pod), for ``%remote status``."""

    def extend(self, handle: ClusterHandle, deadline: float) -> None:
        """Make the infrastructure's own deadline (if any) the new one."""

    def stop(self, handle: ClusterHandle, grace: float = 2.0) -> None:
        """Stop every agent and release what the cluster held; never raises for gone agents."""
