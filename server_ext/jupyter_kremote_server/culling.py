"""Ending clusters: the culler's reasons (TTL, dead agents, idle) and the one way to stop.

Culled clusters stay listed as "ended" with the reason for ``KEEP_ENDED_SECONDS``, so the
panel and the kernel can say why, then are forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from jupyter_kremote.spec import format_duration

from .limits import Limits
from .models import ENDED
from .registry import Entry, Registry

if TYPE_CHECKING:
    from .monitor import Monitor

log = logging.getLogger("jupyter_kremote_server")

#: ended clusters stay visible (state "ended", with the reason) this long, then are forgotten
KEEP_ENDED_SECONDS = 3600.0


async def stop_entry(monitor: Monitor, entry: Entry, reason: str,
                     now: float | None = None) -> None:
    """Stop the entry's agents (if any) and mark it ended with ``reason`` (kept if set)."""
    async with entry.lock:
        cluster, entry.cluster = entry.cluster, None
        if cluster is not None:
            try:
                await asyncio.to_thread(cluster.shutdown)
            except Exception as exc:  # noqa: BLE001 - the agents are gone or going
                log.warning("kremote cluster %s: shutdown: %s", entry.model.id, exc)
        m = entry.model
        if m.state != ENDED or m.ended_at is None:
            m.state, m.ended, m.ended_at = ENDED, m.ended or reason, now or time.time()
            m.pods, m.services = [], []
            monitor.hub.publish({"type": "ended", "id": m.id, "reason": m.ended})
            monitor.publish(entry)


class Culler:
    """Shuts down clusters whose TTL passed, whose agents died, or that sat idle too long."""

    def __init__(self, registry: Registry, limits: Limits, monitor: Monitor) -> None:
        self.registry = registry
        self.limits = limits
        self.monitor = monitor

    async def cull_once(self, now: float | None = None) -> dict[str, str]:
        """One pass over every cluster; returns {id: reason} of those it ended."""
        now = time.time() if now is None else now
        culled: dict[str, str] = {}
        for cluster_id, entry in list(self.registry.entries.items()):
            m = entry.model
            if entry.cluster is None:  # starting, or ended and released
                if m.ended_at is not None and now - m.ended_at > KEEP_ENDED_SECONDS:
                    self.registry.remove(entry)
                    self.monitor.hub.publish({"type": "removed", "id": cluster_id})
                continue
            reason = await self.reason(entry, now)
            if reason:
                self.monitor.add_event(entry, {"type": "Warning", "reason": "Culled",
                                               "message": reason})
                await stop_entry(self.monitor, entry, reason, now)
                culled[cluster_id] = reason
                log.info("kremote cluster %s culled: %s", cluster_id, reason)
        return culled

    async def reason(self, entry: Entry, now: float) -> str | None:
        """Why the entry's cluster should end now, or None."""
        cluster = entry.cluster
        assert cluster is not None
        if entry.model.evicted is not None:
            return None  # requeued by Kueue: its Job waits in the queue (its TTL ends it)
        if cluster.ended:
            return cluster.ended
        if now >= cluster.deadline:
            return "its TTL ran out"
        idle = self.limits.idle_cull_seconds
        if idle > 0 and now - cluster.last_activity > idle:
            # the kernel talks to the agents directly, so ask them whether they are busy
            async with entry.lock:
                rows = await asyncio.to_thread(cluster.status)
            if any(r.get("state") == "busy" for r in rows):
                cluster.last_activity = now
                return None
            note_activity(cluster, rows)  # the monitor pings idle clusters seldom
            if now - cluster.last_activity > idle:
                return f"it was idle for more than {format_duration(idle)}"
        return None

def note_activity(cluster: Any, rows: list[dict[str, Any]]) -> None:
    """Move the cluster's last activity to its agents' last request (the kernel talks to
    the agents directly, so only their pings tell)."""
    last = [float(r["last_request"]) for r in rows if r.get("last_request")]
    if last and cluster.last_activity < max(last):
        cluster.last_activity = max(last)
