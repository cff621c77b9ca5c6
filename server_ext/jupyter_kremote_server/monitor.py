"""The live view: one periodic look at every running cluster, and what changed, published.

Each pass asks every cluster whether it still runs and its Kubernetes events (what the
watches already hold: no network), all in one worker thread: the hub's service holds hundreds
of clusters, and a thread hop per cluster twice a second cost a quarter of a core. Changes go
to every WebSocket through the :class:`~.hub.Hub` once, however many clients listen. The agents themselves are pinged (pod
rows, a telemetry sample now and then) on every pass only while a WebSocket listens, else once
per ``monitor_idle_interval``: the hub's service holds hundreds of clusters that nobody looks
at, and a ping of each twice a second costs CPU and worker threads for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

from jupyter_kremote.errors import ClusterEnded

from . import services
from .culling import note_activity, stop_entry
from .hub import Hub
from .limits import Limits
from .models import ENDED, RUNNING, STARTING
from .registry import Entry, Registry
from .requeue import rejoin, requeued

log = logging.getLogger("jupyter_kremote_server")


class Monitor:
    """Observes the registry's running clusters and publishes models and events."""

    def __init__(self, registry: Registry, limits: Limits, hub: Hub) -> None:
        self.registry = registry
        self.limits = limits
        self.hub = hub
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kremote: monitor pass failed")
            await asyncio.sleep(self.limits.monitor_interval)

    async def once(self) -> None:
        """Look at every running cluster once and publish what changed."""
        # a requeued entry's rejoin task watches it until Kueue admits it again
        pairs = [(e, e.cluster) for e in self.registry.running() if e.model.evicted is None]
        if not pairs:
            return
        looks = await asyncio.to_thread(_look_all, [c for _, c in pairs])
        now = time.time()
        watched = self.watched()
        slow = []
        for (entry, cluster), look in zip(pairs, looks):
            if entry.cluster is not cluster or entry.model.evicted is not None:
                continue  # stopped, restarted or requeued while we looked
            ended, kube_events = look
            new_events = kube_events and kube_events is not entry.kube_records
            if ended is None and not new_events and not watched and \
                    now - entry.last_ping < self.limits.monitor_idle_interval:
                self.refresh(entry)  # nothing to ask the agents, nothing to tell anyone
                continue
            slow.append(self.observe(entry, cluster, look))
        if slow:
            await asyncio.gather(*slow)

    def watched(self) -> bool:
        """Whether a WebSocket (a panel) listens: then every pass pings the agents."""
        return self.hub.subscribers > 0

    async def observe(self, entry: Entry, cluster: Any,
                      look: tuple[str | None, list[dict[str, Any]]]) -> None:
        """Handle one cluster's ``look`` (:func:`_look`): ping its agents if due, publish."""
        now = time.time()
        ping = self.watched() or now - entry.last_ping >= self.limits.monitor_idle_interval
        # telemetry feeds the panel's sparklines: sampled while a panel shows them
        want_sample = self.watched() and \
            now - entry.last_sample >= self.limits.telemetry_interval
        ended, kube_events = look
        async with entry.lock:
            if entry.cluster is not cluster or entry.model.evicted is not None:
                return  # stopped, restarted or requeued while it waited for the lock
            rows: list[dict[str, Any]] | None = None  # None: keep the last rows
            if ended is not None:
                rows = []
            elif ping:
                entry.last_ping = now
                rows = await asyncio.to_thread(cluster.status, 0.3)
            samples: dict[int, dict[str, Any]] = {}
            if want_sample and ended is None and hasattr(cluster, "telemetry"):
                entry.last_sample = now
                samples = await asyncio.to_thread(cluster.telemetry, 0.5)
        for rank, sample in sorted(samples.items()):
            history = entry.telemetry.setdefault(
                rank, deque(maxlen=self.limits.telemetry_history))
            history.append(sample)
            self.hub.publish({"type": "telemetry", "id": entry.model.id, "rank": rank,
                              "sample": sample})
        if kube_events is not entry.kube_records:  # the backend's same list: nothing new
            for ev in kube_events:
                self.add_event(entry, ev)
            entry.kube_records = kube_events
        note_activity(cluster, rows or [])
        if ended is not None and requeued(cluster):
            # --on-preempt requeue: it waits in the queue, then carries on with fresh agents
            entry.task = asyncio.get_running_loop().create_task(rejoin(self, entry))
            return
        if ended is not None:
            self.add_event(entry, {"type": "Warning", "reason": "Ended", "message": ended})
            await stop_entry(self, entry, ended)
            return
        if rows is not None:
            entry.model.pods = [self.row(entry, r) for r in rows]
        self.refresh(entry)
        self.publish(entry)

    def row(self, entry: Entry, row: dict[str, Any]) -> dict[str, Any]:
        """A pod row as the panel shows it: with its group and its latest telemetry."""
        history = entry.telemetry.get(row["rank"])
        return {**row, "group": entry.model.group,
                "telemetry": history[-1] if history else None}

    def add_event(self, entry: Entry, event: dict[str, Any]) -> None:
        ev = {"time": time.time(), "type": "Normal", "object": f"cluster/{entry.model.id}",
              **{k: v for k, v in event.items() if v is not None}}
        key = (ev.get("object"), ev.get("reason"), ev.get("message"), ev.get("count"))
        if key in entry.seen_events:
            return
        entry.seen_events.add(key)
        entry.events.appendleft(ev)
        entry.model.events = list(entry.events)
        self.hub.publish({"type": "event", "id": entry.model.id, "event": ev})

    async def running(self, entry: Entry, cluster: Any, ready: str) -> None:
        """``entry`` runs on ``cluster`` now (started, adopted from the queue, or admitted
        again after a requeue): its model with pods and services, and a ``Ready`` event."""
        m = entry.model
        entry.cluster = cluster
        m.state, m.deadline, m.stage, m.evicted = RUNNING, cluster.deadline, None, None
        m.last_activity, m.warnings = cluster.last_activity, list(cluster.warnings)
        rows = await asyncio.to_thread(cluster.status, 1.0)
        entry.last_ping = time.time()
        m.pods = [self.row(entry, r) for r in rows]
        m.services = services.listing(m.id, cluster)
        self.add_event(entry, {"reason": "Ready", "message": ready})
        self.publish(entry)

    async def start_failed(self, entry: Entry, exc: BaseException) -> None:
        """A start (or an adopted queued Job's wait) failed: forgotten, with the reason for
        whoever waits on it."""
        m = entry.model
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        m.state, m.ended = ENDED, f"could not start: {reason}"
        async with self.registry.lock:
            self.registry.remove(entry)
        self.hub.publish({"type": "removed", "id": m.id})
        log.warning("kremote cluster %s %s", m.id, m.ended)

    def stage(self, entry: Entry, line: str) -> None:
        """A start-up stage for the panel; Kueue's (queued, admitted, evicted) are events."""
        if entry.model.state != STARTING:
            return
        before, entry.model.stage = entry.model.stage or "", line
        for prefix, reason in (("queued in ", "Queued"), ("admitted after ", "Admitted"),
                               ("evicted by Kueue", "Evicted")):
            if line.startswith(prefix) and not before.startswith(prefix):  # not each move
                self.add_event(entry, {"reason": reason, "message": line})
        self.publish(entry)

    def publish(self, entry: Entry, force: bool = False) -> None:
        """Send the entry's model to the WebSocket clients if it changed (nothing to do
        while none listens: a client that connects gets a snapshot first)."""
        if not force and not self.watched():
            return
        data = entry.model.to_dict()
        text = json.dumps(data, sort_keys=True, default=str)
        if force or text != entry.published:
            entry.published = text
            self.hub.publish({"type": "cluster", "cluster": data})

    def refresh(self, entry: Entry) -> None:
        """Mirror the cluster's own view of whether it ended (agent died, TTL) in the model."""
        cluster = entry.cluster
        if cluster is None or entry.model.evicted is not None or requeued(cluster):
            return  # requeued by Kueue: not ended, whatever its old deadline says
        entry.model.deadline = cluster.deadline
        entry.model.last_activity = cluster.last_activity
        if cluster.ended is None and time.time() >= cluster.deadline:
            cluster.ended = "its TTL ran out"
        if cluster.ended is not None and entry.model.state == RUNNING:
            entry.model.state, entry.model.ended = ENDED, cluster.ended
            entry.model.ended_at, entry.model.pods = time.time(), []
            entry.model.services = []
            self.hub.publish({"type": "ended", "id": entry.model.id, "reason": cluster.ended})
            self.publish(entry)
            # the processes or pods are released by the culler's next pass


def _look_all(clusters: list[Any]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """:func:`_look` at each cluster, in the one worker thread of a pass (one that fails is
    logged and looked at again next pass; the others are not held up by it)."""
    looks: list[tuple[str | None, list[dict[str, Any]]]] = []
    for cluster in clusters:
        try:
            looks.append(_look(cluster))
        except Exception:  # a backend bug must not blind the monitor
            log.exception("kremote: monitor look at cluster %r failed",
                          getattr(cluster, "name", "?"))
            looks.append((None, []))
    return looks


def _look(cluster: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """(why the cluster ended or None, its Kubernetes events): what the backend already
    knows. A cluster that ended already is not checked again, and ``check_usable`` does not
    wait for a requeued one's admission (the monitor's rejoin task does that, not the pass)."""
    ended = cluster.ended
    if ended is None:
        try:
            cluster.check_usable(rejoin=False)
        except ClusterEnded:
            ended = cluster.ended
    records = getattr(cluster.backend, "event_records", None)
    return ended, (records(cluster.handle) if records else [])
