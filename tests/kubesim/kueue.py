"""Kueue, the part a Job's owner sees: Workloads, quota admission, preemption, PodsReady.

Read against kubernetes-sigs/kueue (pkg/controller/jobframework/reconciler.go,
pkg/scheduler/scheduler.go, flavorassigner, preemption, pkg/workload, pkg/controller/core):

- a Job labelled ``kueue.x-k8s.io/queue-name`` is suspended on create (Kueue's webhook) and
  gets a Workload owned by it (``job-<name>-<hash>``, podSet ``main`` with the Job's
  parallelism), priority from the WorkloadPriorityClass its ``kueue.x-k8s.io/priority-class``
  label names;
- each ClusterQueue admits its pending Workloads by priority, then by queue time
  (BestEffortFIFO; StrictFIFO stops at the first that does not fit) against the nominal
  quota of the first flavor of each resource group; admission sets QuotaReserved and
  Admitted and unsuspends the Job, a Workload that does not fit gets QuotaReserved=False
  (reason Pending) with the flavor assigner's message;
- ``preemption.withinClusterQueue: LowerPriority`` evicts admitted lower-priority Workloads
  (Evicted, reason Preempted; Preempted, reason InClusterQueue), the Job is suspended again
  and, once its pods are gone, the Workload is requeued;
- waitForPodsReady (``KubeSimConfig.kueue_pods_ready_timeout``): an admitted Workload whose
  pods are not all ready in time is evicted (PodsReadyTimeout) and requeued after a backoff;
- the visibility API lists pending Workloads with their positions;
- events as Kueue writes them (events.k8s.io, with an action).
"""

from __future__ import annotations

import hashlib
import time
from decimal import Decimal
from typing import Any

from . import errors
from .events import EventRecorder
from .resources import (
    CLUSTERQUEUES,
    JOBS,
    LOCALQUEUES,
    PODS,
    WORKLOADPRIORITYCLASSES,
    WORKLOADS,
    ResourceType,
)
from .store import Store
from .util import QuantityError, deep, dig, format_quantity, parse_quantity, parse_time, rfc3339
from .validation import prepare_create

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
PRIORITY_SOURCE = "kueue.x-k8s.io/workloadpriorityclass"
COMPONENT = "kueue-admission"
PODSET = "main"
PREEMPTION_REASON = "prioritization in the ClusterQueue"


def _cond(wl: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in dig(wl, "status", "conditions", default=[]) or []
                 if c.get("type") == ctype), None)


def is_true(wl: dict[str, Any], ctype: str) -> bool:
    c = _cond(wl, ctype)
    return c is not None and c.get("status") == "True"


def set_cond(wl: dict[str, Any], ctype: str, status: str, reason: str, message: str) -> None:
    """metav1.Condition semantics (apimeta.SetStatusCondition): the time moves on a flip."""
    conds = wl.setdefault("status", {}).setdefault("conditions", [])
    entry = {"type": ctype, "status": status, "reason": reason, "message": message,
             "lastTransitionTime": rfc3339(),
             "observedGeneration": wl["metadata"].get("generation", 1)}
    current = next((c for c in conds if c.get("type") == ctype), None)
    if current is None:
        conds.append(entry)
        return
    if current.get("status") == status:
        entry["lastTransitionTime"] = current.get("lastTransitionTime")
    current.clear()
    current.update(entry)


def _reset(wl: dict[str, Any], ctype: str, reason: str) -> None:
    """resetActiveCondition: a True condition becomes False, "Previously: <message>"."""
    c = _cond(wl, ctype)
    if c is not None and c.get("status") == "True":
        set_cond(wl, ctype, "False", reason, "Previously: " + str(c.get("message", "")))


def pod_requests(template: dict[str, Any]) -> dict[str, Decimal]:
    """Per-pod requests (limits stand in for missing requests, as the API server defaults)."""
    spec = template.get("spec") or {}
    out: dict[str, Decimal] = {}

    def add(c: dict[str, Any], into: dict[str, Decimal]) -> None:
        res = c.get("resources") or {}
        for name in set(res.get("requests") or {}) | set(res.get("limits") or {}):
            value = (res.get("requests") or {}).get(name, (res.get("limits") or {}).get(name))
            try:
                into[name] = into.get(name, Decimal(0)) + parse_quantity(value)
            except QuantityError:
                continue

    for c in spec.get("containers") or []:
        add(c, out)
    for c in spec.get("initContainers") or []:
        one: dict[str, Decimal] = {}
        add(c, one)
        for name, value in one.items():
            out[name] = max(out.get(name, Decimal(0)), value)
    return out


def workload_requests(wl: dict[str, Any]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for ps in dig(wl, "spec", "podSets", default=[]) or []:
        for name, value in pod_requests(ps.get("template") or {}).items():
            total[name] = total.get(name, Decimal(0)) + value * int(ps.get("count", 1))
    return total


def workload_name(job: dict[str, Any]) -> str:
    """GetWorkloadNameForOwnerWithGVK: job-<name>-<sha1(kind, group, name, uid)[:5]>."""
    meta = job["metadata"]
    digest = hashlib.sha1("\n".join(("Job", "batch", meta["name"], meta["uid"])).encode())
    return f"job-{meta['name'][:253 - 10]}-{digest.hexdigest()[:5]}"


def _seconds(text: str | None) -> float:
    return parse_time(text) if text else time.time()


class Kueue:
    """The Job integration, the scheduler and the workload controller of Kueue, one pass."""

    def __init__(self, store: Store, recorder: EventRecorder, config: Any) -> None:
        self.store = store
        self.recorder = recorder
        self.config = config

    # ------------------------------------------------------------------ webhook
    def webhook(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Kueue's mutating webhook: a queued Job is created suspended."""
        if rt is JOBS and self.config.kueue and \
                (dig(obj, "metadata", "labels", default={}) or {}).get(QUEUE_LABEL):
            obj.setdefault("spec", {})["suspend"] = True

    # ------------------------------------------------------------------ helpers
    def _event(self, rt: ResourceType, obj: dict[str, Any], type_: str, reason: str,
               message: str) -> None:
        self.recorder.record(rt, obj, type_, reason, message[:1024], COMPONENT, action=reason)

    def _update(self, rt: ResourceType, obj: dict[str, Any], new: dict[str, Any]) -> bool:
        """Write `new` if it differs from `obj` (no write, no wake-up, when nothing changed)."""
        if new == obj:
            return False
        meta = obj["metadata"]
        self.store.mutate(rt, meta.get("namespace", ""), meta["name"],
                          lambda o: (o.__setitem__("spec", new.get("spec", {})),
                                     o.__setitem__("status", new.get("status", {}))))
        return True

    def _workloads(self) -> list[dict[str, Any]]:
        return list(self.store.iter_objects(WORKLOADS))

    @staticmethod
    def _owner_uid(wl: dict[str, Any]) -> str | None:
        for ref in wl["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                return str(ref.get("uid"))
        return None

    # ------------------------------------------------------------------ one pass
    def reconcile(self) -> None:
        if not self.config.kueue:
            return
        by_owner = {self._owner_uid(w): w for w in self._workloads()}
        for job in list(self.store.iter_objects(JOBS)):
            labels = job["metadata"].get("labels") or {}
            if not labels.get(QUEUE_LABEL) or job["metadata"].get("deletionTimestamp"):
                continue
            wl = by_owner.get(job["metadata"]["uid"])
            if wl is None:
                self._create_workload(job)
            else:
                self._sync_job(job, wl)
        self._pods_ready()
        self._backoff()
        self._schedule()

    def _create_workload(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        labels = meta.get("labels") or {}
        wl_spec: dict[str, Any] = {
            "active": True, "queueName": labels[QUEUE_LABEL],
            "podSets": [{"name": PODSET, "count": int(spec.get("parallelism", 1)),
                         "template": deep(spec.get("template") or {})}],
            "priority": 0}
        pc = labels.get(PRIORITY_LABEL)
        if pc:
            wpc = self.store.peek(WORKLOADPRIORITYCLASSES, "", pc)
            if wpc is None:
                self._event(JOBS, job, "Warning", "WorkloadPriorityClassNotFound",
                            f'workloadPriorityClass "{pc}" not found')
                return
            wl_spec.update(priority=int(wpc.get("value", 0)), priorityClassName=pc,
                           priorityClassSource=PRIORITY_SOURCE)
        wl = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload",
              "metadata": {"name": workload_name(job), "namespace": meta["namespace"],
                           "labels": {JOB_UID_LABEL: meta["uid"]},
                           "ownerReferences": [{
                               "apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                               "uid": meta["uid"], "controller": True,
                               "blockOwnerDeletion": True}]},
              "spec": wl_spec, "status": {}}
        try:
            made = self.store.create(WORKLOADS, prepare_create(WORKLOADS, wl))
        except errors.ApiError:
            return
        self._event(JOBS, job, "Normal", "CreatedWorkload",
                    f"Created Workload: {meta['namespace']}/{made['metadata']['name']}")

    def _sync_job(self, job: dict[str, Any], wl: dict[str, Any]) -> None:
        """The Job reconciler: finish, stop on eviction, requeue once stopped, start."""
        status = job.get("status") or {}
        new = deep(wl)
        done = next((c for c in status.get("conditions") or [] if c.get("status") == "True"
                     and c.get("type") in ("Complete", "Failed")), None)
        if done is not None:
            if not is_true(wl, "Finished"):
                ok = done["type"] == "Complete"
                set_cond(new, "Finished", "True", "Succeeded" if ok else "Failed",
                         "Job finished successfully" if ok else done.get("message", ""))
                self._update(WORKLOADS, wl, new)
            return
        suspended = bool(job["spec"].get("suspend"))
        evicted = _cond(wl, "Evicted")
        if evicted is not None and evicted.get("status") == "True":
            if not suspended:
                self._set_suspend(job, True)
                self._event(JOBS, job, "Normal", "Stopped", str(evicted.get("message", "")))
                return
            gone = not status.get("active") and not any(
                p for p in self.store.iter_objects(PODS, job["metadata"]["namespace"])
                if any(r.get("uid") == job["metadata"]["uid"]
                       for r in p["metadata"].get("ownerReferences") or []))
            if gone and is_true(wl, "QuotaReserved"):
                reason = str(evicted.get("reason"))
                requeued = reason == "Preempted"
                set_cond(new, "Requeued", "True" if requeued else "False", reason,
                         str(evicted.get("message", "")))
                set_cond(new, "QuotaReserved", "False", "Pending",
                         str(evicted.get("message", "")))
                set_cond(new, "Admitted", "False", "NoReservation",
                         "The workload has no reservation")
                new["status"].pop("admission", None)
                pr = _cond(new, "PodsReady")
                if pr is not None:
                    set_cond(new, "PodsReady", "False", "WaitForStart",
                             "Not all pods are ready or succeeded")
                self._update(WORKLOADS, wl, new)
            return
        if is_true(wl, "Admitted") and suspended:
            self._set_suspend(job, False)
            cq = dig(wl, "status", "admission", "clusterQueue")
            self._event(JOBS, job, "Normal", "Started", f"Admitted by clusterQueue {cq}")

    def _set_suspend(self, job: dict[str, Any], value: bool) -> None:
        meta = job["metadata"]
        self.store.mutate(JOBS, meta["namespace"], meta["name"],
                          lambda j: j["spec"].__setitem__("suspend", value))

    # ------------------------------------------------------------------ waitForPodsReady
    def _pods_ready(self) -> None:
        timeout = float(getattr(self.config, "kueue_pods_ready_timeout", 0) or 0)
        for wl in self._workloads():
            if not is_true(wl, "Admitted") or is_true(wl, "Finished") or \
                    is_true(wl, "Evicted"):
                continue
            job = self._job_of(wl)
            if job is None:
                continue
            count = sum(int(ps.get("count", 1)) for ps in wl["spec"].get("podSets") or [])
            status = job.get("status") or {}
            ready = int(status.get("ready") or 0) + int(status.get("succeeded") or 0)
            new = deep(wl)
            if ready >= count:
                if not is_true(wl, "PodsReady"):
                    set_cond(new, "PodsReady", "True", "Started",
                             "All pods reached readiness and the workload is running")
                    self._update(WORKLOADS, wl, new)
                continue
            if is_true(wl, "PodsReady") or not timeout:
                continue  # Kueue's recovery timeout is not modelled
            if _cond(wl, "PodsReady") is None:
                set_cond(new, "PodsReady", "False", "WaitForStart",
                         "Not all pods are ready or succeeded")
                self._update(WORKLOADS, wl, new)
                continue
            admitted = _seconds((_cond(wl, "Admitted") or {}).get("lastTransitionTime"))
            if time.time() - admitted < timeout:
                continue
            meta = wl["metadata"]
            message = f"Exceeded the PodsReady timeout {meta['namespace']}/{meta['name']}"
            state = new["status"].setdefault("requeueState", {})
            state["count"] = int(state.get("count") or 0) + 1
            backoff = float(getattr(self.config, "kueue_backoff_base", 1.0)) * \
                2 ** (state["count"] - 1)
            state["requeueAt"] = rfc3339(time.time() + backoff)
            self._evict(wl, new, "PodsReadyTimeout", message)

    def _backoff(self) -> None:
        """The workload controller ends a requeue backoff: Requeued=True, BackoffFinished."""
        for wl in self._workloads():
            req = _cond(wl, "Requeued")
            at = dig(wl, "status", "requeueState", "requeueAt")
            if req is None or req.get("status") == "True" or not at or \
                    is_true(wl, "QuotaReserved") or time.time() < parse_time(at):
                continue
            new = deep(wl)
            set_cond(new, "Requeued", "True", "BackoffFinished",
                     "The workload backoff was finished")
            self._update(WORKLOADS, wl, new)

    def _job_of(self, wl: dict[str, Any]) -> dict[str, Any] | None:
        uid = self._owner_uid(wl)
        found = self.store.by_uid(uid) if uid else None
        return found[1] if found is not None and found[0] is JOBS else None

    def _evict(self, wl: dict[str, Any], new: dict[str, Any], reason: str, message: str,
               preempted: str | None = None) -> None:
        set_cond(new, "Evicted", "True", reason, message)
        if preempted:
            set_cond(new, "Preempted", "True", preempted, message)
        self._update(WORKLOADS, wl, new)
        self._event(WORKLOADS, wl, "Normal", f"EvictedDueTo{reason}", message)

    # ------------------------------------------------------------------ the scheduler
    def queues(self) -> dict[str, list[dict[str, Any]]]:
        """Pending Workloads per ClusterQueue, in the order Kueue would admit them."""
        out: dict[str, list[dict[str, Any]]] = {}
        for wl in self._workloads():
            if is_true(wl, "QuotaReserved") or is_true(wl, "Finished") or \
                    not wl["spec"].get("active", True):
                continue
            req = _cond(wl, "Requeued")
            if req is not None and req.get("status") == "False":
                continue  # backing off after a PodsReady timeout
            lq = self.store.peek(LOCALQUEUES, wl["metadata"]["namespace"],
                                 wl["spec"].get("queueName", ""))
            cq = (lq or {}).get("spec", {}).get("clusterQueue")
            if cq:
                out.setdefault(cq, []).append(wl)
        for items in out.values():
            items.sort(key=lambda w: (-int(w["spec"].get("priority") or 0), _queued_at(w),
                                      w["metadata"]["name"]))
        return out

    def _schedule(self) -> None:
        pending = self.queues()
        for wl in self._workloads():  # a Workload whose LocalQueue is missing says so
            if is_true(wl, "QuotaReserved") or is_true(wl, "Finished"):
                continue
            ns, queue = wl["metadata"]["namespace"], wl["spec"].get("queueName", "")
            lq = self.store.peek(LOCALQUEUES, ns, queue)
            if lq is None:
                self._pending(wl, "Inadmissible", f"LocalQueue {queue} doesn't exist")
            elif self.store.peek(CLUSTERQUEUES, "", lq["spec"].get("clusterQueue", "")) is None:
                self._pending(wl, "Inadmissible",
                              f"ClusterQueue {lq['spec'].get('clusterQueue')} doesn't exist")
        for name, items in sorted(pending.items()):
            cq = self.store.peek(CLUSTERQUEUES, "", name)
            if cq is not None:
                self._admit_queue(cq, items)

    def _quota(self, cq: dict[str, Any]) -> dict[str, tuple[str, Decimal]]:
        """resource -> (flavor, nominal quota) from the first flavor of each group."""
        out: dict[str, tuple[str, Decimal]] = {}
        for group in cq["spec"].get("resourceGroups") or []:
            flavors = group.get("flavors") or []
            if not flavors:
                continue
            for res in flavors[0].get("resources") or []:
                try:
                    out[res["name"]] = (flavors[0]["name"], parse_quantity(res["nominalQuota"]))
                except (KeyError, QuantityError):
                    continue
        return out

    def _admitted(self, cq_name: str) -> list[dict[str, Any]]:
        return [w for w in self._workloads() if is_true(w, "QuotaReserved")
                and not is_true(w, "Finished")
                and dig(w, "status", "admission", "clusterQueue") == cq_name]

    def _admit_queue(self, cq: dict[str, Any], items: list[dict[str, Any]]) -> None:
        name = cq["metadata"]["name"]
        quota = self._quota(cq)
        used: dict[str, Decimal] = {}
        admitted = self._admitted(name)
        for w in admitted:
            for res, value in workload_requests(w).items():
                used[res] = used.get(res, Decimal(0)) + value
        strict = cq["spec"].get("queueingStrategy") == "StrictFIFO"
        policy = dig(cq, "spec", "preemption", "withinClusterQueue", default="Never")
        for wl in items:
            need = workload_requests(wl)
            missing = [r for r in sorted(need) if need[r] > 0 and r not in quota]
            if missing:
                self._pending(wl, "Pending", f"couldn't assign flavors to pod set {PODSET}: "
                              f"resource {missing[0]} unavailable in ClusterQueue")
                if strict:
                    break
                continue
            short = {r: used.get(r, Decimal(0)) + need[r] - quota[r][1]
                     for r in sorted(need) if r in quota}
            over_max = next((r for r in short if need[r] > quota[r][1]), None)
            lacking = next((r for r, v in short.items() if v > 0), None)
            if lacking is None:
                self._reserve(wl, name, need, quota)
                for r, v in need.items():
                    used[r] = used.get(r, Decimal(0)) + v
                continue
            if over_max is not None:
                r = over_max
                msg = (f"couldn't assign flavors to pod set {PODSET}: insufficient quota for "
                       f"{r} in flavor {quota[r][0]}, previously considered podsets requests "
                       f"(0) + current podset request ({_fmt(r, need[r])}) > maximum "
                       f"capacity ({_fmt(r, quota[r][1])})")
            else:
                r = lacking
                msg = (f"couldn't assign flavors to pod set {PODSET}: insufficient unused "
                       f"quota for {r} in flavor {quota[r][0]}, "
                       f"{_fmt(r, short[r])} more needed")
                if policy in ("LowerPriority", "LowerOrNewerEqualPriority"):
                    victims = self._victims(wl, admitted, short)
                    if victims:
                        self._preempt(wl, victims, name)
                        msg += f". Pending the preemption of {len(victims)} workload(s)"
            self._pending(wl, "Pending", msg)
            if strict:
                break

    def _victims(self, wl: dict[str, Any], admitted: list[dict[str, Any]],
                 short: dict[str, Decimal]) -> list[dict[str, Any]]:
        """Lowest priority first, newest admission first, until the shortfall is covered."""
        prio = int(wl["spec"].get("priority") or 0)
        candidates = sorted(
            (w for w in admitted if int(w["spec"].get("priority") or 0) < prio),
            key=lambda w: (int(w["spec"].get("priority") or 0),
                           -_seconds((_cond(w, "QuotaReserved") or {}).get(
                               "lastTransitionTime"))))
        left = {r: v for r, v in short.items() if v > 0}
        chosen = []
        for w in candidates:
            if not left:
                break
            freed = workload_requests(w)
            if not any(freed.get(r, 0) > 0 for r in left):
                continue
            chosen.append(w)
            left = {r: v - freed.get(r, Decimal(0)) for r, v in left.items()
                    if v - freed.get(r, Decimal(0)) > 0}
        return chosen if not left else []

    def _preempt(self, preemptor: dict[str, Any], victims: list[dict[str, Any]],
                 cq: str) -> None:
        for w in victims:
            if is_true(w, "Evicted"):
                continue  # preemption ongoing
            job_uid = (preemptor["metadata"].get("labels") or {}).get(JOB_UID_LABEL, "UNKNOWN")
            message = (f"Preempted to accommodate a workload (UID: "
                       f"{preemptor['metadata']['uid']}, JobUID: {job_uid}) due to "
                       f"{PREEMPTION_REASON}; preemptor path: /{cq}; preemptee path: /{cq}")
            self._evict(w, deep(w), "Preempted", message, preempted="InClusterQueue")
            pp, vp = int(preemptor["spec"].get("priority") or 0), int(w["spec"].get(
                "priority") or 0)
            self._event(WORKLOADS, w, "Normal", "Preempted",
                        f"{message}; preemptor effective priority: {pp} (base: {pp}, boost: "
                        f"0); preemptee effective priority: {vp} (base: {vp}, boost: 0)")
            meta = w["metadata"]
            self._event(WORKLOADS, preemptor, "Normal", "PreemptedWorkload",
                        f"Preempted workload {meta['namespace']}/{meta['name']} (UID: "
                        f"{meta['uid']}) in ClusterQueue {cq}; preemptor effective priority: "
                        f"{pp} (base: {pp}, boost: 0); preemptee effective priority: {vp} "
                        f"(base: {vp}, boost: 0)")

    def _pending(self, wl: dict[str, Any], reason: str, message: str) -> None:
        current = _cond(wl, "QuotaReserved")
        if current is not None and current.get("reason") == reason and \
                current.get("message") == message:
            return
        new = deep(wl)
        set_cond(new, "QuotaReserved", "False", reason, message)
        self._update(WORKLOADS, wl, new)
        self._event(WORKLOADS, wl, "Warning", reason, message)

    def _reserve(self, wl: dict[str, Any], cq: str, need: dict[str, Decimal],
                 quota: dict[str, tuple[str, Decimal]]) -> None:
        new = deep(wl)
        waited = time.time() - _queued_at(wl)
        count = sum(int(ps.get("count", 1)) for ps in wl["spec"].get("podSets") or [])
        new.setdefault("status", {})["admission"] = {"clusterQueue": cq, "podSetAssignments": [{
            "name": PODSET, "count": count,
            "flavors": {r: quota[r][0] for r in sorted(need) if r in quota},
            "resourceUsage": {r: _fmt(r, v) for r, v in sorted(need.items()) if r in quota}}]}
        set_cond(new, "QuotaReserved", "True", "QuotaReserved",
                 f"Quota reserved in ClusterQueue {cq}")
        set_cond(new, "Admitted", "True", "Admitted", "The workload is admitted")
        for ctype in ("Evicted", "Preempted"):
            _reset(new, ctype, "QuotaReserved")
        self._update(WORKLOADS, wl, new)
        self._event(WORKLOADS, wl, "Normal", "QuotaReserved",
                    f"Quota reserved in ClusterQueue {cq}, wait time since queued was "
                    f"{waited:.0f}s")
        self._event(WORKLOADS, wl, "Normal", "Admitted",
                    f"Admitted by ClusterQueue {cq}, wait time since reservation was 0s")

    # ------------------------------------------------------------------ visibility API
    def pending_workloads(self, cq: str | None = None, namespace: str | None = None,
                          local_queue: str | None = None, offset: int = 0,
                          limit: int = 1000) -> dict[str, Any]:
        """A PendingWorkloadsSummary (visibility.kueue.x-k8s.io/v1beta1)."""
        if local_queue is not None:
            lq = self.store.peek(LOCALQUEUES, namespace or "", local_queue)
            if lq is None:
                raise errors.not_found("localqueues", "kueue.x-k8s.io", local_queue)
            cq = lq["spec"].get("clusterQueue")
        elif cq is not None and self.store.peek(CLUSTERQUEUES, "", cq) is None:
            raise errors.not_found("clusterqueues", "kueue.x-k8s.io", cq)
        items = []
        per_lq: dict[tuple[str, str], int] = {}
        for pos, wl in enumerate(self.queues().get(cq or "", [])):
            key = (wl["metadata"]["namespace"], wl["spec"].get("queueName", ""))
            lq_pos = per_lq.get(key, 0)
            per_lq[key] = lq_pos + 1
            if local_queue is not None and key != (namespace, local_queue):
                continue
            meta = wl["metadata"]
            items.append({"metadata": {
                "name": meta["name"], "namespace": meta["namespace"],
                "creationTimestamp": meta.get("creationTimestamp"),
                "ownerReferences": deep(meta.get("ownerReferences") or [])},
                "priority": int(wl["spec"].get("priority") or 0),
                "localQueueName": key[1], "positionInClusterQueue": pos,
                "positionInLocalQueue": lq_pos})
        return {"kind": "PendingWorkloadsSummary",
                "apiVersion": "visibility.kueue.x-k8s.io/v1beta1",
                "metadata": {"creationTimestamp": None},
                "items": items[offset:offset + limit]}


def _queued_at(wl: dict[str, Any]) -> float:
    """QueuedWaitTime: since the last Requeued transition, else since creation."""
    req = _cond(wl, "Requeued")
    if req is not None and req.get("status") == "True":
        return _seconds(req.get("lastTransitionTime"))
    return _seconds(wl["metadata"].get("creationTimestamp"))


def _fmt(resource: str, value: Decimal) -> str:
    return format_quantity(value, resource if resource in ("cpu", "memory") else "")
