"""Kueue as the owner of a queued cluster sees it: its Workload, its place in line, evictions.

Read-only calls with the shipped Role: the Workload by its ``kueue.x-k8s.io/job-uid`` label
(list, then get by name), the LocalQueue (get: which ClusterQueue feeds it), and the position
from Kueue's visibility API (``pendingworkloads`` of the LocalQueue). Only the start-up wait
calls these, about once a second; a running cell reads the Job and its events from the
namespace's watch instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .kube_api import KubeLoop, get_json

KUEUE = "/apis/kueue.x-k8s.io/v1beta1"
VISIBILITY = "/apis/visibility.kueue.x-k8s.io/v1beta1"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


@dataclass
class QueueState:
    """Where a queued cluster's Workload stands."""

    local_queue: str
    cluster_queue: str | None = None
    workload: str | None = None
    position: int | None = None  # 1: the next to be admitted in its ClusterQueue
    message: str = ""  # the QuotaReserved condition's message (why it waits)
    admitted: bool = False  # the start saw its Job resumed (not merely the Workload admitted)

    def line(self) -> str:
        """"queued in team (ClusterQueue gpus), position 2: couldn't assign flavors ..."."""
        where = f"queued in {self.local_queue}"
        if self.cluster_queue:
            where += f" (ClusterQueue {self.cluster_queue})"
        if self.position is not None:
            where += f", position {self.position}"
        return f"{where}: {self.message or 'waiting for Kueue to admit the Workload'}"


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == ctype), {})


async def poll(kl: KubeLoop, namespace: str, job_uid: str, state: QueueState) -> QueueState:
    """Refresh ``state`` from the API (missing pieces stay as they were)."""
    ns = namespace
    if state.cluster_queue is None:
        status, lq = await get_json(kl, f"{KUEUE}/namespaces/{ns}/localqueues/"
                                        f"{state.local_queue}")
        if status == 200:
            state.cluster_queue = (lq.get("spec") or {}).get("clusterQueue")
        elif status == 404:
            state.message = (f"LocalQueue {state.local_queue} does not exist in {ns}: "
                             "ask an admin for a queue, or name another with --queue")
    wl: dict[str, Any] | None = None
    if state.workload is None:
        status, body = await get_json(kl, f"{KUEUE}/namespaces/{ns}/workloads",
                                      labelSelector=f"{JOB_UID_LABEL}={job_uid}")
        items = body.get("items") if status == 200 else None
        if items:
            wl = items[0]
            state.workload = wl["metadata"]["name"]
    else:
        status, body = await get_json(kl, f"{KUEUE}/namespaces/{ns}/workloads/{state.workload}")
        wl = body if status == 200 else None
    # ``state.admitted`` is the start's own (set when it sees the Job resumed on its watch):
    # a Workload read as Admitted before that must not skip the "admitted after" line
    admitted = state.admitted
    if wl is not None:
        reserved = condition(wl, "QuotaReserved")
        admitted = condition(wl, "Admitted").get("status") == "True"
        if reserved.get("message"):
            state.message = reserved["message"]
    if state.workload and not admitted:
        status, body = await get_json(kl, f"{VISIBILITY}/namespaces/{ns}/localqueues/"
                                          f"{state.local_queue}/pendingworkloads")
        if status == 200:
            mine = next((i for i in body.get("items") or []
                         if i.get("metadata", {}).get("name") == state.workload), None)
            state.position = None if mine is None else int(mine["positionInClusterQueue"]) + 1
    return state


def stops(events: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    """Kueue's ``Stopped`` events of the Job, oldest first: one per eviction."""
    return [e for e in events if e.get("reason") == "Stopped"
            and (e.get("involvedObject") or {}).get("name") == job]


def stop_message(events: list[dict[str, Any]], job: str) -> str | None:
    """Kueue's message on its newest ``Stopped`` event of the Job (the eviction's)."""
    stopped = stops(events, job)
    if not stopped:
        return None
    return str(stopped[-1].get("message") or stopped[-1].get("note") or "")


def eviction(events: list[dict[str, Any]], job: str, cluster_queue: str | None) -> str | None:
    """Why Kueue stopped the Job, as the running cell says it."""
    message = stop_message(events, job)
    if message is None:
        return None
    cq = f" in ClusterQueue {cluster_queue}" if cluster_queue else ""
    if message.startswith("Preempted"):
        return f"preempted by a higher-priority workload{cq}; variables on the agents are lost"
    return f"evicted by Kueue{cq} ({message}); variables on the agents are lost"
