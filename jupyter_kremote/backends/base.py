"""The contract between the session and a backend (local processes, Kubernetes pods)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..client import Endpoint


@dataclass
class StartRequest:
    """What a backend needs to start a cluster's agents."""

    name: str
    count: int = 1
    ttl: float = 3600.0
    env: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 30.0
    workdir: str | None = None  # local backend: parent of the agents' working folders


@dataclass
class ClusterHandle:
    """A started cluster as the session sees it."""

    name: str
    backend: str
    key: bytes
    endpoints: list[Endpoint]
    started: float
    deadline: float


class Backend(Protocol):
    name: str

    def start(self, request: StartRequest) -> ClusterHandle:
        """Start every agent and return once all are reachable (or raise, leaving none)."""

    def liveness(self, handle: ClusterHandle, rank: int) -> str | None:
        """None while rank is alive, else how it ended ("exited with code 1")."""

    def logs(self, handle: ClusterHandle, rank: int, tail: int = 200) -> str:
        """The agent's own output outside cells (start-up, warnings, crashes)."""

    def describe(self, handle: ClusterHandle, rank: int) -> dict[str, object]:
        """Where the agent runs (pid or pod), for ``%remote status``."""

    def stop(self, handle: ClusterHandle, grace: float = 2.0) -> None:
        """Stop every agent and release what the cluster held; never raises for gone agents."""
