"""The cluster records a manager holds, by id: one entry per cluster (or pod group).

Only the registry adds, finds and forgets entries; its ``lock`` guards additions and the
limit checks that precede them, so two requests cannot both pass a limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from jupyter_kremote.session import Cluster, ClusterOptions
from jupyter_kremote.spec import dns_safe_name

from .models import ENDED, ClusterModel, NotFound

#: events kept per cluster (the newest)
MAX_EVENTS = 100


@dataclass
class Entry:
    """One cluster: its model (what clients see), its options and the running Cluster."""

    model: ClusterModel
    options: ClusterOptions
    cluster: Cluster | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one call on its agents at once
    started: asyncio.Event = field(default_factory=asyncio.Event)
    #: set to give up a start still in progress (shut down while queued in Kueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: set with ``cancelled`` by a server stop that keeps the backend's clusters: a first
    #: start still queued in Kueue leaves its Job queued, as a requeued cluster does
    keep_queued: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task | None = None  # the start, kept so that it is not garbage-collected
    runtime: dict[str, Any] | None = None  # the asking kernel's Python, for the drift check
    events: deque = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))  # newest first
    seen_events: set = field(default_factory=set)
    telemetry: dict[int, deque] = field(default_factory=dict)
    last_sample: float = 0.0
    last_ping: float = 0.0  # when the monitor last asked the agents for their rows
    kube_records: list | None = None  # the backend's event records the monitor last added
    published: str = ""  # the model as last sent to the WebSocket clients


class Registry:
    """Entries by cluster id."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.lock = asyncio.Lock()

    def get(self, cluster_id: str) -> Entry:
        entry = self.entries.get(cluster_id)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise NotFound(f"no cluster {cluster_id!r} (clusters: {known})")
        return entry

    def find(self, name: str, notebook: str) -> Entry | None:
        for entry in self.entries.values():
            if entry.model.name == name and entry.model.notebook == notebook:
                return entry
        return None

    def new_id(self, name: str, notebook: str) -> str:
        """A DNS-safe id from the notebook's stem and the name, unique in the registry."""
        stem = PurePath(notebook).stem if notebook else ""
        base = dns_safe_name(stem, name, max_len=50) if stem else dns_safe_name(name, max_len=50)
        cluster_id, n = base, 1
        while cluster_id in self.entries:
            n += 1
            cluster_id = f"{base}-{n}"
        return cluster_id

    def add(self, entry: Entry) -> None:
        self.entries[entry.model.id] = entry

    def remove(self, entry: Entry) -> bool:
        """Forget ``entry`` unless its id names another entry by now; True if forgotten."""
        if self.entries.get(entry.model.id) is entry:
            del self.entries[entry.model.id]
            return True
        return False

    def live(self) -> list[Entry]:
        """Entries not ended (starting or running): what counts against the limits."""
        return [e for e in self.entries.values() if e.model.state != ENDED]

    def running(self) -> list[Entry]:
        """Entries holding a Cluster (a copy: callers await while entries change)."""
        return [e for e in list(self.entries.values()) if e.cluster is not None]

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.entries[i].model.to_dict() for i in sorted(self.entries)]
