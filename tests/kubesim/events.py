"""Events as components record them: core/v1 style with count aggregation (kubelet, Job
controller), or events.k8s.io/v1 style with eventTime and series (the scheduler)."""

from __future__ import annotations

import itertools
import time
from typing import Any

from .resources import EVENTS, ResourceType
from .store import Store
from .util import rfc3339, rfc3339_micro

# Identical events within this window update one Event (count, lastTimestamp), as client-go's
# EventCorrelator does.
AGGREGATION_WINDOW = 600.0
_sequence = itertools.count()


class EventRecorder:
    """Write Events about objects; repeated identical events increment `count`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._recent: dict[tuple[Any, ...], tuple[str, str, float]] = {}

    def record(self, rt: ResourceType, obj: dict[str, Any], type_: str, reason: str,
               message: str, component: str, host: str | None = None,
               field_path: str | None = None, action: str | None = None
               ) -> dict[str, Any] | None:
        """Record one event about `obj` (of type `rt`); returns the Event written.

        With an `action`, the event is written through events.k8s.io/v1 as the scheduler
        (and Kueue) write theirs: eventTime set, no first/lastTimestamp or count, repeats
        counted in `series`."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        involved: dict[str, Any] = {
            "kind": rt.kind, "namespace": meta.get("namespace", ""), "name": meta["name"],
            "uid": meta.get("uid", ""), "apiVersion": rt.api_version,
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if not rt.namespaced:
            involved.pop("namespace")
        if field_path:
            involved["fieldPath"] = field_path
        key = (namespace, involved["uid"], field_path, type_, reason, message, component)
        now = time.time()
        recent = self._recent.get(key)
        if recent and now - recent[2] < AGGREGATION_WINDOW:
            updated = self.store.mutate(EVENTS, recent[0], recent[1],
                                        _bump_series if action else _bump)
            if updated is not None:
                self._recent[key] = (recent[0], recent[1], now)
                return updated
        name = f"{meta['name']}.{time.time_ns() + next(_sequence):x}"
        source: dict[str, Any] = {"component": component}
        if host:
            source["host"] = host
        event = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved, "reason": reason, "message": message,
            "source": source, "firstTimestamp": rfc3339(now), "lastTimestamp": rfc3339(now),
            "count": 1, "type": type_, "eventTime": None,
            "reportingComponent": component, "reportingInstance": host or "",
        }
        if action:
            event.update(firstTimestamp=None, lastTimestamp=None, eventTime=rfc3339_micro(now),
                         source={}, action=action,
                         reportingInstance=f"{component}-{host or 'kubesim'}")
            del event["count"]
        created = self.store.create(EVENTS, event)
        self._recent[key] = (namespace, name, now)
        return created


def _bump_series(event: dict[str, Any]) -> None:
    series = event.setdefault("series", {"count": 1})
    series["count"] = int(series.get("count") or 1) + 1
    series["lastObservedTime"] = rfc3339_micro()


def _bump(event: dict[str, Any]) -> None:
    event["count"] = int(event.get("count") or 1) + 1
    event["lastTimestamp"] = rfc3339()
    if event.get("series"):
        event["series"]["count"] = event["count"]
        event["series"]["lastObservedTime"] = rfc3339_micro()
