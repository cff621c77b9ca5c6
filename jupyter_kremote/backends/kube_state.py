"""Reading pod, job and event objects as a user needs them: what stage, what went wrong.

Pure functions over the API's JSON dicts, so each failure a real cluster shows
(ErrImagePull, CreateContainerConfigError, OOMKilled, Evicted, Unschedulable,
DeadlineExceeded, a crash before registering) maps to one clear sentence.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
#: container waiting reasons after which the pod will not run an agent without a fix
FATAL_WAITING = {
    "InvalidImageName": "the image name is not valid",
    "CreateContainerConfigError": "a Secret or ConfigMap it needs is missing",
    "CreateContainerError": "the container could not be created",
    "CrashLoopBackOff": "the container keeps crashing",
    "RunContainerError": "the container could not start",
}
#: waiting reasons that may clear by themselves (a registry hiccup): fatal after a grace
PULL_WAITING = {
    "ErrImagePull": "the image could not be pulled",
    "ImagePullBackOff": "the image could not be pulled",
}
#: DisruptionTarget reasons (Kubernetes >= 1.26) as a user reads them
DISRUPTIONS = {
    "PreemptionByScheduler": "was preempted by the scheduler for a higher-priority pod",
    "DeletionByTaintManager": "was evicted from its node by a NoExecute taint",
    "EvictionByEvictionAPI": "was evicted through the Eviction API (kubectl drain, autoscaler)",
    "TerminationByKubelet": "was evicted by its node's kubelet",
    "DeletionByPodGC": "was deleted by the pod garbage collector (its node is gone)",
}


def name_of(obj: dict[str, Any]) -> str:
    return obj.get("metadata", {}).get("name", "?")


def rank_of(pod: dict[str, Any]) -> int | None:
    meta = pod.get("metadata", {})
    value = (meta.get("labels") or {}).get(INDEX_LABEL) or \
        (meta.get("annotations") or {}).get(INDEX_LABEL)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == "agent":
            return cs
    return statuses[0] if statuses else {}


def disruption(pod: dict[str, Any]) -> str | None:
    """The DisruptionTarget condition as a sentence, or None."""
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            reason = cond.get("reason") or ""
            what = DISRUPTIONS.get(reason, f"was disrupted ({reason})")
            msg = cond.get("message")
            return f"pod {name_of(pod)} {what}" + (f": {msg}" if msg else "")
    return None


def pull_failure(pod: dict[str, Any]) -> str | None:
    """ErrImagePull / ImagePullBackOff as a sentence (fatal only after a grace)."""
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason not in PULL_WAITING:
        return None
    msg = waiting.get("message", "")
    return f"pod {name_of(pod)}: {reason}: {PULL_WAITING[reason]}" + (f" ({msg})" if msg else "")


def pod_failure(pod: dict[str, Any]) -> str | None:
    """Why this pod cannot run (or stopped running) its agent; None while it may."""
    status = pod.get("status", {})
    name = name_of(pod)
    if status.get("reason") == "Evicted":
        return f"pod {name} was evicted: {status.get('message', '')}".rstrip(": ")
    disrupted = disruption(pod)
    if disrupted:  # before the exit code: a disrupted agent exits 0 on SIGTERM
        return disrupted
    if status.get("reason") == "DeadlineExceeded":
        return f"pod {name} reached its deadline (the cluster's TTL ran out)"
    state = _container(pod).get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING:
        reason = waiting["reason"]
        msg = waiting.get("message", "")
        return f"pod {name}: {reason}: {FATAL_WAITING[reason]}" + (f" ({msg})" if msg else "")
    term = state.get("terminated")
    if term:
        code = term.get("exitCode")
        if term.get("reason") == "OOMKilled":
            return f"pod {name} was OOMKilled (exit code {code}): give it more memory with --mem"
        return f"pod {name}: the agent container exited with code {code} ({term.get('reason')})"
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"pod {name} ended ({status['phase']}: {status.get('reason', 'no reason given')})"
    return None


def unschedulable(pod: dict[str, Any]) -> str | None:
    """The scheduler's message while the pod cannot be placed on any node."""
    for cond in pod.get("status", {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable":
            return cond.get("message") or "no node can run it"
    return None


def pod_stage(pod: dict[str, Any]) -> str:
    """Pending -> Scheduled -> Pulling/ContainerCreating -> Running, for progress lines."""
    status = pod.get("status", {})
    phase = status.get("phase", "Pending")
    if phase != "Pending":
        return phase
    if unschedulable(pod):
        return "Unschedulable"
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        return waiting["reason"]
    if pod.get("spec", {}).get("nodeName"):
        return "Scheduled"
    return "Pending"


def pod_ip(pod: dict[str, Any]) -> str | None:
    return pod.get("status", {}).get("podIP") or None


def job_failure(job: dict[str, Any]) -> str | None:
    """Failed, or FailureTarget (since Kubernetes 1.31 Failed comes only once the pods are
    gone; in between, the pods end and their exit codes must not be read as the cause)."""
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("type") in ("Failed", "FailureTarget") and cond.get("status") == "True":
            if cond.get("reason") == "DeadlineExceeded":
                return "its TTL ran out (Job DeadlineExceeded)"
            return f"the Job failed: {cond.get('reason')}: {cond.get('message', '')}".rstrip(": ")
    return None


def format_event(ev: dict[str, Any]) -> str:
    obj = ev.get("involvedObject") or {}
    count = ev.get("count") or 1
    times = f" (x{count})" if count > 1 else ""
    return (f"{ev.get('type', 'Normal')} {ev.get('reason', '')} "
            f"{obj.get('kind', '')}/{obj.get('name', '')}: {ev.get('message', '')}{times}")


@dataclass
class ClusterState:
    """What the watches know of one cluster; written by the loop thread, read by others."""

    job_name: str
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # by event uid/name
    job: dict[str, Any] = field(default_factory=dict)
    changed: threading.Event = field(default_factory=threading.Event)
    #: guards ``pods`` and ``events``: the loop thread writes while kernel threads read
    lock: threading.Lock = field(default_factory=threading.Lock)

    #: the last known state of pods that were deleted (to say why they went)
    gone: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: counts the events' changes; (version, n, records) as :meth:`event_records` made them
    _version: int = 0
    _records: tuple[int, int, list[dict[str, Any]]] | None = None

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                last = self.pods.pop(name_of(pod), None)
                self.gone[name_of(pod)] = pod if disruption(pod) or last is None else \
                    (last if disruption(last) else pod)
            else:
                self.pods[name_of(pod)] = pod
                self.gone.pop(name_of(pod), None)
        self.changed.set()

    def pod_named(self, name: str) -> tuple[dict[str, Any] | None, bool]:
        """(the pod's last known state, whether it still exists)."""
        with self.lock:
            if name in self.pods:
                return self.pods[name], True
            return self.gone.get(name), False

    def pod_list(self) -> list[dict[str, Any]]:
        """A snapshot of the pods (never iterate ``pods`` itself from another thread)."""
        with self.lock:
            return list(self.pods.values())

    def on_event(self, kind: str, ev: dict[str, Any]) -> None:
        obj = ev.get("involvedObject") or {}
        if not str(obj.get("name", "")).startswith(self.job_name):
            return
        if kind != "DELETED":
            with self.lock:
                self.events[ev.get("metadata", {}).get("uid") or name_of(ev)] = ev
                self._version += 1
        self.changed.set()

    def on_job(self, kind: str, job: dict[str, Any]) -> None:
        if name_of(job) == self.job_name and kind != "DELETED":
            self.job = job
            self.changed.set()

    def refused(self) -> str | None:
        """The message of a FailedCreate event on the Job: Kubernetes will not make its pods
        (PodSecurity, a ResourceQuota, a missing service account...)."""
        with self.lock:
            events = list(self.events.values())
        for ev in sorted(events, key=_event_time, reverse=True):
            obj = ev.get("involvedObject") or ev.get("regarding") or {}
            if ev.get("reason") == "FailedCreate" and obj.get("name") == self.job_name:
                return ev.get("message") or ev.get("note") or "FailedCreate"
        return None

    def by_rank(self) -> dict[int, dict[str, Any]]:
        """The newest pod of each rank."""
        out: dict[int, dict[str, Any]] = {}
        for pod in self.pod_list():
            rank = rank_of(pod)
            if rank is None:
                continue
            prev = out.get(rank)
            if prev is None or _created(pod) >= _created(prev):
                out[rank] = pod
        return out

    def _sorted_events(self) -> list[dict[str, Any]]:
        with self.lock:
            events = list(self.events.values())
        return sorted(events, key=_event_time)

    def event_list(self) -> list[dict[str, Any]]:
        """The events as the API gave them, oldest first."""
        return self._sorted_events()

    def recent_events(self, n: int = 5) -> list[str]:
        return [format_event(e) for e in self._sorted_events()[-n:]]

    def event_records(self, n: int = 100) -> list[dict[str, Any]]:
        """The newest ``n`` events as plain records, oldest first: the same list (not to be
        changed) until an event arrives, so that the hub's monitor, which asks every
        cluster twice a second, sorts and parses nothing while nothing happens."""
        with self.lock:
            cached, version = self._records, self._version
            if cached is not None and cached[:2] == (version, n):
                return cached[2]
            events = list(self.events.values())
        out = []
        for ev in sorted(events, key=_event_time)[-n:]:
            obj = ev.get("involvedObject") or {}
            when = _event_time(ev)
            out.append({
                "time": datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
                if when else None,
                "type": ev.get("type") or "Normal", "reason": ev.get("reason") or "",
                "object": f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}",
                "message": ev.get("message") or "", "count": ev.get("count") or 1})
        with self.lock:
            self._records = (version, n, out)  # an event since makes the version stale
        return out


def _event_time(ev: dict[str, Any]) -> str:
    return (ev.get("lastTimestamp") or ev.get("eventTime")
            or ev.get("metadata", {}).get("creationTimestamp") or "")


def _created(obj: dict[str, Any]) -> str:
    return obj.get("metadata", {}).get("creationTimestamp") or ""
