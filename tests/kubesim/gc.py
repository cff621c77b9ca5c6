"""Deletion (graceful pods, finalizers, propagation policies) and the garbage collector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import errors
from .resources import EVENTS, NAMESPACES, PODS, STORED, ResourceType, by_kind
from .store import Store
from .util import dig, now, rfc3339

FOREGROUND = "foregroundDeletion"
ORPHAN, BACKGROUND, FOREGROUND_POLICY = "Orphan", "Background", "Foreground"


def success_status(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"name": obj["metadata"]["name"], "kind": rt.plural,
                               "uid": obj["metadata"]["uid"]}
    if rt.group:
        details["group"] = rt.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


class Deleter:
    """DELETE semantics, shared by the REST API and the controllers."""

    def __init__(self, store: Store, pod_has_containers: Callable[[str], bool]) -> None:
        self.store = store
        self._pod_has_containers = pod_has_containers

    def delete(self, rt: ResourceType, namespace: str, name: str,
               propagation: str | None = None, grace: int | None = None,
               preconditions: dict[str, Any] | None = None) -> dict[str, Any]:
        """Delete one object; returns what the API answers (the object or a Status)."""
        obj = self.store.peek(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        meta = obj["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise errors.conflict(rt.plural, rt.group, name,
                                  f"Precondition failed: UID in precondition: {pre['uid']}, "
                                  f"UID in object meta: {meta['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        policy = propagation or rt.default_propagation
        if policy not in (ORPHAN, BACKGROUND, FOREGROUND_POLICY):
            raise errors.invalid("DeleteOptions", "", "", [(
                "propagationPolicy", (f'Unsupported value: "{policy}": supported values: '
                                     f'"Foreground", "Background", "Orphan", "nil"'))])
        if rt is NAMESPACES:
            return self._delete_namespace(obj)
        if rt is PODS:
            return self._delete_pod(obj, grace)
        if meta.get("deletionTimestamp"):
            return self.store.get(rt, namespace, name)
        if policy == ORPHAN:
            self._orphan_dependents(meta["uid"])
        if policy == FOREGROUND_POLICY and self.dependents(meta["uid"]):
            return self.store.mutate(rt, namespace, name, _mark_foreground) or {}
        if meta.get("finalizers"):
            return self.store.mutate(rt, namespace, name, _mark_deleting) or {}
        self.store.remove(rt, namespace, name)
        return success_status(rt, obj)

    def _delete_pod(self, pod: dict[str, Any], grace: int | None) -> dict[str, Any]:
        meta = pod["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if grace is None:
            grace = int(dig(pod, "spec", "terminationGracePeriodSeconds", default=30))
        if meta.get("deletionTimestamp") and grace != 0:
            return self.store.get(PODS, ns, name)
        if grace > 0 and self._pod_has_containers(meta["uid"]):
            def mark(p: dict[str, Any]) -> None:
                p["metadata"]["deletionTimestamp"] = rfc3339(now() + grace)
                p["metadata"]["deletionGracePeriodSeconds"] = grace
            return self.store.mutate(PODS, ns, name, mark) or {}
        if meta.get("finalizers"):
            return self.store.mutate(PODS, ns, name, _mark_deleting) or {}
        return self.store.remove(PODS, ns, name) or {}

    def _delete_namespace(self, ns_obj: dict[str, Any]) -> dict[str, Any]:
        """Mark the namespace Terminating; the namespace controller (`collect`) empties it
        and removes it once nothing is left, as the real one does."""
        name = ns_obj["metadata"]["name"]
        if ns_obj["metadata"].get("deletionTimestamp"):
            return self.store.get(NAMESPACES, "", name)

        def terminate(ns: dict[str, Any]) -> None:
            ns["metadata"]["deletionTimestamp"] = rfc3339()
            ns["metadata"]["deletionGracePeriodSeconds"] = 0
            ns.setdefault("status", {})["phase"] = "Terminating"
        updated = self.store.mutate(NAMESPACES, "", name, terminate)
        self._empty_namespace(name)
        return updated or {}

    def _empty_namespace(self, name: str) -> None:
        left = 0
        for rt in STORED:
            if not rt.namespaced or rt is EVENTS:
                continue
            for obj in list(self.store.iter_objects(rt, name)):
                left += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    try:
                        self.delete(rt, name, obj["metadata"]["name"], BACKGROUND)
                    except errors.ApiError:
                        pass
        if left == 0:
            for event in list(self.store.iter_objects(EVENTS, name)):
                self.store.remove(EVENTS, name, event["metadata"]["name"])
            self.store.remove(NAMESPACES, "", name)

    def dependents(self, owner_uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        found = []
        for rt in STORED:
            if rt is EVENTS:
                continue
            for obj in self.store.iter_objects(rt):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    found.append((rt, obj))
        return found

    def _orphan_dependents(self, owner_uid: str) -> None:
        for rt, obj in self.dependents(owner_uid):
            def strip(o: dict[str, Any]) -> None:
                refs = [r for r in o["metadata"].get("ownerReferences") or []
                        if r.get("uid") != owner_uid]
                if refs:
                    o["metadata"]["ownerReferences"] = refs
                else:
                    o["metadata"].pop("ownerReferences", None)
            self.store.mutate(rt, obj["metadata"].get("namespace", ""),
                              obj["metadata"]["name"], strip)

    def collect(self) -> None:
        """One garbage-collector pass: cascade foreground deletions, remove orphans, empty
        and remove Terminating namespaces."""
        for ns in list(self.store.iter_objects(NAMESPACES)):
            if ns["metadata"].get("deletionTimestamp"):
                self._empty_namespace(ns["metadata"]["name"])
        for rt in STORED:
            if rt is EVENTS:
                continue
            for obj in list(self.store.iter_objects(rt)):
                meta = obj["metadata"]
                ns, name = meta.get("namespace", ""), meta["name"]
                if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
                    self._advance_foreground(rt, obj)
                    continue
                refs = meta.get("ownerReferences") or []
                if not refs or meta.get("deletionTimestamp"):
                    continue
                known = [r for r in refs if by_kind(r.get("apiVersion", ""), r.get("kind", ""))]
                if known and len(known) == len(refs) and all(
                        self._dangling(r, ns) for r in refs):
                    try:
                        self.delete(rt, ns, name, BACKGROUND)
                    except errors.ApiError:
                        pass

    def _dangling(self, ref: dict[str, Any], namespace: str) -> bool:
        """Whether an owner is absent, as the garbage collector's ``isDangling`` decides: a
        namespaced owner is looked up by name in the dependent's own namespace (an owner in
        another namespace counts as gone), and must still have the referenced uid."""
        rt = by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if rt is None:
            return False
        owner = self.store.peek(rt, namespace if rt.namespaced else "", ref.get("name", ""))
        return owner is None or owner["metadata"].get("uid") != ref.get("uid")

    def _advance_foreground(self, rt: ResourceType, owner: dict[str, Any]) -> None:
        uid = owner["metadata"]["uid"]
        blocking = 0
        for drt, dep in self.dependents(uid):
            dmeta = dep["metadata"]
            if not dmeta.get("deletionTimestamp"):
                try:
                    self.delete(drt, dmeta.get("namespace", ""), dmeta["name"],
                                FOREGROUND_POLICY)
                except errors.ApiError:
                    pass
            if self.store.peek(drt, dmeta.get("namespace", ""), dmeta["name"]) is not None:
                blocking += 1
        if blocking == 0:
            def release(o: dict[str, Any]) -> None:
                o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or []
                                               if f != FOREGROUND]
            self.store.mutate(rt, owner["metadata"].get("namespace", ""),
                              owner["metadata"]["name"], release)


def _mark_deleting(obj: dict[str, Any]) -> None:
    obj["metadata"]["deletionTimestamp"] = rfc3339()
    obj["metadata"]["deletionGracePeriodSeconds"] = 0


def _mark_foreground(obj: dict[str, Any]) -> None:
    _mark_deleting(obj)
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if FOREGROUND not in finalizers:
        finalizers.append(FOREGROUND)
