"""Voluntary and involuntary disruptions that delete a pod: the Eviction API (`kubectl drain`),
scheduler preemption and NoExecute taint eviction. As in Kubernetes >= 1.26, each first adds
the DisruptionTarget condition with its reason, then deletes the pod gracefully; the pod gets
no status.reason (only node-pressure eviction by the kubelet sets reason Evicted)."""

from __future__ import annotations

from typing import Any

from . import errors
from .events import EventRecorder
from .gc import Deleter
from .resources import NODES, PODS
from .scheduler import set_condition, untolerated
from .store import Store
from .util import dig

EVICTION_API = ("EvictionByEvictionAPI", "Eviction API: evicting")
TAINT_MANAGER = ("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint")
TERMINATION_BY_KUBELET = "TerminationByKubelet"


class Disruptions:
    """Marks pods as disruption targets and deletes them."""

    def __init__(self, store: Store, recorder: EventRecorder, deleter: Deleter) -> None:
        self.store = store
        self.recorder = recorder
        self.deleter = deleter

    def mark(self, namespace: str, name: str, reason: str, message: str) -> dict[str, Any]:
        """Add DisruptionTarget=True (a status write, as the real components do)."""
        def add(pod: dict[str, Any]) -> None:
            set_condition(pod.setdefault("status", {}), "DisruptionTarget", "True", reason,
                          message)
        updated = self.store.mutate(PODS, namespace, name, add)
        if updated is None:
            raise errors.not_found("pods", "", name)
        return updated

    def _disrupt(self, namespace: str, name: str, reason: tuple[str, str],
                 grace: int | None = None) -> None:
        pod = self.store.get(PODS, namespace, name)
        if dig(pod, "status", "phase") not in ("Succeeded", "Failed"):
            self.mark(namespace, name, *reason)
        self.deleter.delete(PODS, namespace, name, None, grace)

    def evict(self, namespace: str, name: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """POST pods/NAME/eviction (no PodDisruptionBudgets: every eviction is allowed)."""
        body = body or {}
        if body.get("kind") not in (None, "Eviction"):
            raise errors.bad_request(f"the kind in the data ({body.get('kind')}) does not "
                                     "match the expected kind (Eviction)")
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise errors.bad_request("name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        self._disrupt(namespace, name, EVICTION_API, options.get("gracePeriodSeconds"))
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201}

    def preempt(self, namespace: str, name: str, preemptor: str = "") -> None:
        """What the scheduler does to a victim to make room for a higher-priority pod."""
        pod = self.store.get(PODS, namespace, name)
        scheduler = dig(pod, "spec", "schedulerName") or "default-scheduler"
        node = dig(pod, "spec", "nodeName") or ""
        self.recorder.record(PODS, pod, "Normal", "Preempted",
                             f"Preempted by pod {preemptor or 'a higher priority pod'} on "
                             f"node {node}", scheduler, action="Preempting")
        message = f"{scheduler}: preempting to accommodate a higher priority pod"
        self._disrupt(namespace, name, ("PreemptionByScheduler", message))

    def taint(self, node: str, key: str, value: str = "", effect: str = "NoExecute") -> list[str]:
        """Taint a node (as `kubectl taint` does) and run the taint eviction controller."""
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value

        def add(n: dict[str, Any]) -> None:
            taints = n.setdefault("spec", {}).setdefault("taints", [])
            if taint not in taints:
                taints.append(taint)
        if self.store.mutate(NODES, "", node, add) is None:
            raise errors.not_found("nodes", "", node)
        return self.sweep_taints()

    def sweep_taints(self) -> list[str]:
        """The taint eviction controller: delete pods on nodes with a NoExecute taint they do
        not tolerate (tolerationSeconds is not modelled: a toleration tolerates forever)."""
        tainted = {n["metadata"]["name"]: taints for n in self.store.iter_objects(NODES)
                   if (taints := [t for t in dig(n, "spec", "taints", default=[]) or []
                                  if t.get("effect") == "NoExecute"])}
        evicted: list[str] = []
        if not tainted:
            return evicted
        for pod in list(self.store.iter_objects(PODS)):
            meta = pod["metadata"]
            taints = tainted.get(dig(pod, "spec", "nodeName") or "")
            if not taints or meta.get("deletionTimestamp") or \
                    dig(pod, "status", "phase") in ("Succeeded", "Failed") or \
                    untolerated(pod, taints, ("NoExecute",)) is None:
                continue
            self.recorder.record(PODS, pod, "Normal", "TaintManagerEviction",
                                 f"Marking for deletion Pod {meta['namespace']}/{meta['name']}",
                                 "taint-eviction-controller")
            self._disrupt(meta["namespace"], meta["name"], TAINT_MANAGER)
            evicted.append(f"{meta['namespace']}/{meta['name']}")
        return evicted

    def untaint(self, node: str, key: str) -> None:
        def drop(n: dict[str, Any]) -> None:
            spec = n.setdefault("spec", {})
            spec["taints"] = [t for t in spec.get("taints") or [] if t.get("key") != key]
            if not spec["taints"]:
                del spec["taints"]
        self.store.mutate(NODES, "", node, drop)
