"""Nodes and the scheduler: binds pending pods that fit, reports FailedScheduling otherwise."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .events import EventRecorder
from .resources import NODES, PODS
from .selectors import labels_match, parse_label_selector
from .store import Store
from .util import QuantityError, dig, parse_quantity, rfc3339

GPU = "nvidia.com/gpu"
COMPONENT = "default-scheduler"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class NodeSpec:
    """One emulated node and what it can hold."""

    name: str = "kubesim-node-0"
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    extended: dict[str, str] = field(default_factory=dict)

    def allocatable(self) -> dict[str, str]:
        alloc = {"cpu": str(self.cpu), "memory": str(self.memory), "pods": str(self.pods),
                 "ephemeral-storage": "100Gi", **{k: str(v) for k, v in self.extended.items()}}
        if self.gpus:
            alloc[GPU] = str(self.gpus)
        return alloc

    def to_object(self, version: str, ip: str = "127.0.0.1") -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": "amd64", **self.labels}
        alloc = self.allocatable()
        now = rfc3339()
        return {
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "capacity": dict(alloc), "allocatable": alloc,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": ip},
                              {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"kubeletVersion": version, "kubeProxyVersion": version,
                             "operatingSystem": "linux", "architecture": "amd64",
                             "containerRuntimeVersion": "kubesim://1.0",
                             "osImage": "kubesim", "kernelVersion": "", "machineID": "",
                             "systemUUID": "", "bootID": ""},
            },
        }


def pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    """Effective requests: sum over containers, at least the largest init container."""
    total: Counter[str] = Counter()
    for c in dig(pod, "spec", "containers", default=[]):
        for k, v in (dig(c, "resources", "requests", default={}) or {}).items():
            total[k] += _q(v)
    for c in dig(pod, "spec", "initContainers", default=[]):
        for k, v in (dig(c, "resources", "requests", default={}) or {}).items():
            total[k] = max(total[k], _q(v))
    return dict(total)


def _q(value: Any) -> Decimal:
    try:
        return parse_quantity(value)
    except QuantityError:
        return Decimal(0)


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations or []:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and \
                (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def untolerated(pod: dict[str, Any], taints: list[dict[str, Any]],
                effects: tuple[str, ...]) -> dict[str, Any] | None:
    """The first taint with one of `effects` that the pod does not tolerate."""
    tolerations = dig(pod, "spec", "tolerations", default=[]) or []
    return next((t for t in taints if t.get("effect") in effects
                 and not _tolerates(tolerations, t)), None)


def set_condition(status: dict[str, Any], ctype: str, value: str, reason: str | None = None,
                  message: str | None = None) -> None:
    """Set a pod/job condition; lastTransitionTime moves only when the status flips."""
    conditions = status.setdefault("conditions", [])
    current = next((c for c in conditions if c.get("type") == ctype), None)
    entry: dict[str, Any] = {"type": ctype, "status": value, "lastProbeTime": None,
                             "lastTransitionTime": rfc3339()}
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message
    if current is None:
        conditions.append(entry)
        return
    if current.get("status") == value:
        entry["lastTransitionTime"] = current.get("lastTransitionTime")
    current.clear()
    current.update(entry)


class Scheduler:
    """Binds pods with no nodeName to the first node with room, or reports why not."""

    def __init__(self, store: Store, recorder: EventRecorder, retry: float = 1.0,
                 max_retry: float = 5.0) -> None:
        self.store = store
        self.recorder = recorder
        self.retry = retry
        self.max_retry = max_retry
        self._next: dict[str, tuple[float, float]] = {}  # pod uid -> (when, backoff)

    def kick(self) -> None:
        """Something freed room (a pod ended, a node changed): retry unschedulable pods now."""
        self._next = {uid: (0.0, b) for uid, (_, b) in self._next.items()}

    def schedule(self) -> None:
        nodes = list(self.store.iter_objects(NODES))
        used: dict[str, Counter[str]] = {n["metadata"]["name"]: Counter() for n in nodes}
        pending = []
        for pod in self.store.iter_objects(PODS):
            node = dig(pod, "spec", "nodeName")
            phase = dig(pod, "status", "phase")
            if node:
                if node in used and phase not in TERMINAL:
                    used[node].update(pod_requests(pod))
                    used[node]["pods"] += 1
            elif (phase not in TERMINAL and not pod["metadata"].get("deletionTimestamp")
                  and dig(pod, "spec", "schedulerName") == COMPONENT):
                pending.append(pod)
        live = {p["metadata"]["uid"] for p in pending}
        self._next = {uid: v for uid, v in self._next.items() if uid in live}
        clock = time.monotonic()
        for pod in pending:
            uid = pod["metadata"]["uid"]
            when, backoff = self._next.get(uid, (0.0, self.retry / 2))
            if when > clock:
                continue
            requests = pod_requests(pod)
            chosen, message = self._fit(pod, requests, nodes, used)
            if chosen:
                self._next.pop(uid, None)
                used[chosen].update(requests)
                used[chosen]["pods"] += 1
                self._bind(pod, chosen)
            else:
                backoff = min(backoff * 2, self.max_retry)
                self._next[uid] = (clock + backoff, backoff)
                self._unschedulable(pod, message)

    def _fit(self, pod: dict[str, Any], requests: dict[str, Decimal],
             nodes: list[dict[str, Any]], used: dict[str, Counter[str]]
             ) -> tuple[str | None, str]:
        if not nodes:
            return None, "no nodes available to schedule pods"
        reasons: Counter[str] = Counter()
        preemption: Counter[str] = Counter()
        selector = dig(pod, "spec", "nodeSelector", default={}) or {}
        for node in nodes:
            name = node["metadata"]["name"]
            alloc = dig(node, "status", "allocatable", default={}) or {}
            failed: list[str] = []
            if selector and not labels_match(parse_label_selector(
                    ",".join(f"{k}={v}" for k, v in selector.items())), node):
                failed.append("node(s) didn't match Pod's node affinity/selector")
            elif dig(node, "spec", "unschedulable"):
                failed.append("node(s) were unschedulable")
            elif (taint := untolerated(pod, dig(node, "spec", "taints", default=[]) or [],
                                       ("NoSchedule", "NoExecute"))) is not None:
                failed.append(f"node(s) had untolerated taint {{{taint['key']}: "
                              f"{taint.get('value', '')}}}")
            else:
                for res, amount in sorted(requests.items()):
                    if amount > 0 and used[name][res] + amount > _q(alloc.get(res, 0)):
                        failed.append(f"Insufficient {res}")
                if used[name]["pods"] + 1 > _q(alloc.get("pods", 110)):
                    failed.append("Too many pods")
            if not failed:
                return name, ""
            reasons.update(failed)
            helpful = not any("selector" in f or "unschedulable" in f or "taint" in f
                              for f in failed)
            preemption["No preemption victims found for incoming pod" if helpful
                       else "Preemption is not helpful for scheduling"] += 1
        n = len(nodes)
        text = ", ".join(sorted(f"{c} {r}" for r, c in reasons.items()))
        pre = ", ".join(sorted(f"{c} {r}" for r, c in preemption.items()))
        return None, (f"0/{n} nodes are available: {text}. preemption: 0/{n} nodes are "
                      f"available: {pre}.")

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]

        def bind(p: dict[str, Any]) -> None:
            p["spec"]["nodeName"] = node
            set_condition(p.setdefault("status", {}), "PodScheduled", "True")
        bound = self.store.mutate(PODS, meta["namespace"], meta["name"], bind)
        if bound:
            self.recorder.record(PODS, bound, "Normal", "Scheduled",
                                 f"Successfully assigned {meta['namespace']}/{meta['name']} "
                                 f"to {node}", COMPONENT, action="Binding")

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]

        def mark(p: dict[str, Any]) -> None:
            set_condition(p.setdefault("status", {}), "PodScheduled", "False", "Unschedulable",
                          message)
        updated = self.store.mutate(PODS, meta["namespace"], meta["name"], mark)
        if updated:
            self.recorder.record(PODS, updated, "Warning", "FailedScheduling", message,
                                 COMPONENT, action="Scheduling")
