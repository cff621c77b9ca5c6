"""The object store: one global resourceVersion counter, change history, watches, lists.

Everything here runs on the emulator's event loop thread; no locking. Objects enter and leave
as deep copies, except through `iter_objects`, which hands out live objects for reading only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import errors, eventsv1
from .resources import ResourceType
from .selectors import FieldRequirement, Requirement, fields_match, labels_match
from .util import deep, new_uid, random_suffix, rfc3339

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED, ERROR, BOOKMARK = "ADDED", "MODIFIED", "DELETED", "ERROR", "BOOKMARK"


@dataclass(frozen=True)
class Change:
    """One write: the object after it (for DELETED, its last state) and before it."""

    rv: int
    type: str
    rt: ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Watcher:
    """One open watch: a queue of (type, object) pairs; None in the queue ends the stream."""

    def __init__(self, rt: ResourceType, namespace: str | None, labels: list[Requirement],
                 fields: list[FieldRequirement]) -> None:
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        # A stalled watch sends nothing (not even its end) until resumed or closed.
        self.stalled = False
        self.closed = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def offer(self, change: Change) -> None:
        """Translate a change into what this watch sees (selector transitions included)."""
        if change.rt.bucket != self.rt.bucket:
            return
        now_in = change.type != DELETED and self.matches(change.obj)
        was_in = self.matches(change.old) if change.type != ADDED else False
        if change.type == DELETED:
            kind = DELETED if self.matches(change.obj) else None
        elif now_in:
            kind = MODIFIED if was_in else ADDED
        else:
            kind = DELETED if was_in else None
        if kind:
            self.queue.put_nowait((kind, with_kind(self.rt, change.obj)))

    def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


def with_kind(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy with apiVersion and kind first, as single-object responses carry them (in the
    shape of `rt`'s API group: events.k8s.io/v1 Events are converted)."""
    if rt.group == "events.k8s.io":
        return deep(eventsv1.to_v1(obj))
    out = {"kind": rt.kind, "apiVersion": rt.api_version}
    out.update({k: v for k, v in deep(obj).items() if k not in ("kind", "apiVersion")})
    return out


class Store:
    """Objects by resource, namespace and name, with history for watch resumption."""

    def __init__(self, history_limit: int = 10000) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._by_uid: dict[str, tuple[ResourceType, str, str]] = {}
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        self._compacted = 0
        self._rv = 1000
        self._watchers: set[Watcher] = set()
        self._listeners: list[Callable[[Change], None]] = []
        # Resources ("" for all) whose new watches start stalled.
        self._stall_new: set[str] = set()

    # ------------------------------------------------------------------ reading
    @property
    def resource_version(self) -> int:
        return self._rv

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], dict[str, Any]]:
        return self._objects.setdefault(rt.bucket, {})

    def peek(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object or None; do not mutate it."""
        return self._bucket(rt).get((namespace if rt.namespaced else "", name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.peek(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return with_kind(rt, obj)

    def by_uid(self, uid: str) -> tuple[ResourceType, dict[str, Any]] | None:
        where = self._by_uid.get(uid)
        if where is None:
            return None
        obj = self.peek(*where)
        return (where[0], obj) if obj is not None else None

    def iter_objects(self, rt: ResourceType, namespace: str | None = None
                     ) -> Iterator[dict[str, Any]]:
        """Live objects sorted by namespace and name (a snapshot of the key list)."""
        bucket = self._bucket(rt)
        for key in sorted(bucket):
            if namespace and key[0] != namespace:
                continue
            obj = bucket.get(key)
            if obj is not None:
                yield obj

    def list(self, rt: ResourceType, namespace: str | None, labels: list[Requirement],
             fields: list[FieldRequirement], limit: int = 0, cont: str | None = None
             ) -> dict[str, Any]:
        """A `<Kind>List` body; `limit`/`cont` paginate, a stale continue token is 410."""
        list_rv, start = self._rv, None
        if cont:
            list_rv, start = _decode_continue(cont)
            if list_rv < self._compacted:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use "
                    "the continue token in this response to retrieve the remainder of the "
                    "results. Continuing with the provided token results in an inconsistent "
                    "list - objects that were created, modified, or deleted between the time "
                    "the first chunk was returned and now may show up in the list.")
        items = []
        for obj in self.iter_objects(rt, namespace):
            key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
            if start is not None and key <= start:
                continue
            if labels_match(labels, obj) and fields_match(fields, obj):
                items.append((key, obj))
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if limit and len(items) > limit:
            meta["continue"] = _encode_continue(list_rv, items[limit - 1][0])
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        def present(obj: dict[str, Any]) -> dict[str, Any]:
            if rt.group != "events.k8s.io":
                return obj
            return {k: v for k, v in eventsv1.to_v1(obj).items()
                    if k not in ("kind", "apiVersion")}
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta,
                "items": [deep(present(obj)) for _, obj in items]}

    # ------------------------------------------------------------------ writing
    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, rt: ResourceType, kind: str, obj: dict[str, Any],
                old: dict[str, Any] | None) -> None:
        change = Change(int(obj["metadata"]["resourceVersion"]), kind, rt, deep(obj), old)
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self._compacted = self._history.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(change)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken controller must not break the API
                log.exception("kubesim listener failed on %s %s", kind, rt.plural)

    def create(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object (already defaulted and validated); fills name, uid, rv, time."""
        obj = deep(obj)
        meta = obj.setdefault("metadata", {})
        ns = meta.get("namespace", "") if rt.namespaced else ""
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(100):
                meta["name"] = meta["generateName"] + random_suffix()
                if self.peek(rt, ns, meta["name"]) is None:
                    break
        name = meta["name"]
        if self.peek(rt, ns, name) is not None:
            raise errors.already_exists(rt.plural, rt.group, name)
        meta["uid"] = meta.get("uid") or new_uid()
        meta["resourceVersion"] = str(self._next_rv())
        meta["creationTimestamp"] = rfc3339()
        for dropped in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(dropped, None)
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        self._bucket(rt)[(ns, name)] = obj
        self._by_uid[meta["uid"]] = (rt, ns, name)
        self._record(rt, ADDED, obj, None)
        return with_kind(rt, obj)

    def update(self, rt: ResourceType, obj: dict[str, Any], check_rv: bool = False
               ) -> dict[str, Any]:
        """Replace an object; keeps identity fields; no-op (same rv) when nothing changed.

        With `check_rv`, a stale metadata.resourceVersion is a 409 Conflict. An object being
        deleted whose last finalizer goes away (and has no grace period left) is removed.
        """
        obj = deep(obj)
        meta = obj.setdefault("metadata", {})
        ns = meta.get("namespace", "") if rt.namespaced else ""
        name = meta.get("name", "")
        current = self.peek(rt, ns, name)
        if current is None:
            raise errors.not_found(rt.plural, rt.group, name)
        cmeta = current["metadata"]
        if check_rv and meta.get("resourceVersion") not in (None, "", cmeta["resourceVersion"]):
            raise errors.conflict(rt.plural, rt.group, name)
        if meta.get("uid") not in (None, "", cmeta["uid"]):
            raise errors.conflict(rt.plural, rt.group, name,
                                  f"Precondition failed: UID in precondition: {meta['uid']}, "
                                  f"UID in object meta: {cmeta['uid']}")
        for fixed in ("uid", "creationTimestamp", "namespace", "name", "generateName"):
            if fixed in cmeta:
                meta[fixed] = cmeta[fixed]
        if "deletionTimestamp" in cmeta:  # cannot be unset by clients
            meta["deletionTimestamp"] = cmeta["deletionTimestamp"]
            meta["deletionGracePeriodSeconds"] = cmeta.get("deletionGracePeriodSeconds", 0)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        meta["resourceVersion"] = cmeta["resourceVersion"]
        if obj == current:
            return with_kind(rt, current)
        if (meta.get("deletionTimestamp") and not meta.get("finalizers")
                and not meta.get("deletionGracePeriodSeconds") and rt.plural != "namespaces"):
            self._bucket(rt)[(ns, name)] = obj
            return self.remove(rt, ns, name) or with_kind(rt, obj)
        meta["resourceVersion"] = str(self._next_rv())
        self._bucket(rt)[(ns, name)] = obj
        self._record(rt, MODIFIED, obj, current)
        return with_kind(rt, obj)

    def mutate(self, rt: ResourceType, namespace: str, name: str,
               fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any] | None:
        """Read-modify-write with `fn(copy)`; None when the object is gone."""
        current = self.peek(rt, namespace, name)
        if current is None:
            return None
        obj = deep(current)
        fn(obj)
        return self.update(rt, obj)

    def remove(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete an object now (a DELETED event with a new resourceVersion)."""
        ns = namespace if rt.namespaced else ""
        current = self._bucket(rt).pop((ns, name), None)
        if current is None:
            return None
        self._by_uid.pop(current["metadata"]["uid"], None)
        final = deep(current)
        final["metadata"]["resourceVersion"] = str(self._next_rv())
        self._record(rt, DELETED, final, current)
        return with_kind(rt, final)

    # ------------------------------------------------------------------ watching
    def watch(self, rt: ResourceType, namespace: str | None, resource_version: str | None,
              labels: list[Requirement], fields: list[FieldRequirement]) -> Watcher:
        """Open a watch. No/"0" resourceVersion: synthetic ADDED for what exists, then changes;
        a number: every change after it, or a 410 Gone ApiError if it was compacted away."""
        watcher = Watcher(rt, namespace, labels, fields)
        if resource_version in (None, "", "0"):
            for obj in self.iter_objects(rt, namespace):
                if watcher.matches(obj):
                    watcher.queue.put_nowait((ADDED, with_kind(rt, obj)))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(
                    f'invalid resource version "{resource_version}"') from None
            if since < self._compacted:
                raise errors.gone(
                    f"too old resource version: {since} ({self._compacted + 1})")
            for change in self._history:
                if change.rv > since:
                    watcher.offer(change)
        watcher.stalled = bool(self._stall_new & {"", rt.plural})
        self._watchers.add(watcher)
        return watcher

    def stall_watches(self, resource: str = "", future: bool = False) -> int:
        """Stall open watches of `resource` ("" for all): the connection stays open but no
        event, bookmark or end arrives. `future` stalls watches opened later too."""
        stalled = [w for w in self._watchers if resource in ("", w.rt.plural)]
        for w in stalled:
            w.stalled = True
        if future:
            self._stall_new.add(resource)
        return len(stalled)

    def resume_watches(self) -> int:
        """Un-stall every watch; what they missed is delivered."""
        self._stall_new.clear()
        stalled = [w for w in self._watchers if w.stalled]
        for w in stalled:
            w.stalled = False
        return len(stalled)

    @property
    def watch_count(self) -> int:
        return len(self._watchers)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def drop_watches(self) -> int:
        """End every open watch stream (clients see the connection finish)."""
        dropped = list(self._watchers)
        self._watchers.clear()
        for watcher in dropped:
            watcher.close()
        return len(dropped)

    def compact(self) -> int:
        """Forget all history: watching from any older resourceVersion now gives 410."""
        self._history.clear()
        self._compacted = self._rv
        return self._compacted

    def add_listener(self, fn: Callable[[Change], None]) -> None:
        self._listeners.append(fn)


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return int(data["rv"]), str(data["start"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise errors.bad_request(f"continue key is not valid: {token}") from None
