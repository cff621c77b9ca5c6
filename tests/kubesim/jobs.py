"""The Job controller: pods for (Indexed) Jobs, suspend, deadlines, backoff limit, TTL."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .admission import Admission
from .events import EventRecorder
from .gc import BACKGROUND, Deleter
from .resources import JOBS, PODS
from .scheduler import set_condition
from .store import Store
from .util import deep, dig, parse_time, rfc3339
from .validation import prepare_create

COMPONENT = "job-controller"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
TERMINAL = ("Succeeded", "Failed")
CREATE_BACKOFF, CREATE_BACKOFF_MAX = 1.0, 10.0


@dataclass
class _JobState:
    """What the controller remembers about one Job (the real one uses pod finalizers)."""

    counted: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)  # deleted on suspension: not failures
    succeeded_indexes: set[int] = field(default_factory=set)
    succeeded: int = 0
    failed: int = 0
    seen: set[str] = field(default_factory=set)
    started: float | None = None
    # (reason, message) of a podFailurePolicy FailJob rule a failed pod matched
    policy_failure: tuple[str, str] | None = None
    # After a refused pod create, the controller waits before trying again (doubling).
    create_backoff: float = 0.0
    next_create: float = 0.0


def completion_index(pod: dict[str, Any]) -> int | None:
    value = dig(pod, "metadata", "annotations", INDEX_KEY) or dig(pod, "metadata", "labels",
                                                                  INDEX_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def compress_indexes(indexes: set[int]) -> str:
    """{0,1,2,4} -> '0-2,4' (Job.status.completedIndexes)."""
    out, items = [], sorted(indexes)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)


def _cond_true(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or []
                 if c.get("type") == ctype and c.get("status") == "True"), None)


def _exit_matches(req: dict[str, Any], pod: dict[str, Any]) -> tuple[str, int] | None:
    """(container, exit code) of one that matches an onExitCodes requirement, or None."""
    values = set(req.get("values") or [])
    for cs in dig(pod, "status", "containerStatuses", default=[]) or []:
        if req.get("containerName") and cs.get("name") != req["containerName"]:
            continue
        code = dig(cs, "state", "terminated", "exitCode")
        if code is None or code == 0:
            continue
        if (code in values) == (req.get("operator", "In") == "In"):
            return str(cs.get("name")), int(code)
    return None


def _policy_action(policy: dict[str, Any] | None, pod: dict[str, Any]
                   ) -> tuple[str, str] | None:
    """(action, message) of the first podFailurePolicy rule a failed pod matches."""
    meta = pod["metadata"]
    where = f"{meta.get('namespace')}/{meta['name']}"
    for i, rule in enumerate((policy or {}).get("rules") or []):
        action = rule.get("action", "")
        if rule.get("onExitCodes"):
            hit = _exit_matches(rule["onExitCodes"], pod)
            if hit is not None:
                name, code = hit
                return action, (f"Container {name} for pod {where} failed with exit code "
                                f"{code} matching {action} rule at index {i}")
        for want in rule.get("onPodConditions") or []:
            for c in dig(pod, "status", "conditions", default=[]) or []:
                if c.get("type") == want.get("type") and \
                        c.get("status") == want.get("status", "True"):
                    return action, (f"Pod {where} has condition {c['type']} matching "
                                    f"{action} rule at index {i}")
    return None


def _pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in dig(pod, "status", "conditions", default=[]))


class JobController:
    """Reconciles every Job against its pods on each pass of the controller loop."""

    def __init__(self, store: Store, recorder: EventRecorder, deleter: Deleter,
                 admission: Admission) -> None:
        self.store = store
        self.admission = admission
        self.recorder = recorder
        self.deleter = deleter
        self._state: dict[str, _JobState] = {}

    def reconcile_all(self) -> None:
        live = set()
        owned = self._pods_by_controller()  # once per pass, not once per Job (400 Jobs)
        for job in list(self.store.iter_objects(JOBS)):
            live.add(job["metadata"]["uid"])
            self._reconcile(job, owned.get(job["metadata"]["uid"], []))
        self._state = {uid: s for uid, s in self._state.items() if uid in live}

    def _pods_by_controller(self) -> dict[str, list[dict[str, Any]]]:
        """Every pod, by the uid of its controller (a Job's pods are found by it)."""
        owned: dict[str, list[dict[str, Any]]] = {}
        for pod in self.store.iter_objects(PODS):
            for ref in pod["metadata"].get("ownerReferences") or []:
                if ref.get("controller"):
                    owned.setdefault(ref.get("uid"), []).append(pod)
        return owned

    # ------------------------------------------------------------------ one job
    def _reconcile(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        """Bring one Job's status and pods in line; ``pods``: those it controls."""
        meta, spec = job["metadata"], job["spec"]
        if meta.get("deletionTimestamp"):
            return
        uid = meta["uid"]
        st = self._state.setdefault(uid, _JobState())
        status = deep(job.get("status") or {})
        indexed = spec.get("completionMode") == "Indexed"
        self._count(st, pods, indexed, spec.get("podFailurePolicy"))
        active = [p for p in pods if dig(p, "status", "phase") not in TERMINAL
                  and not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in pods if dig(p, "status", "phase") not in TERMINAL
                       and p["metadata"].get("deletionTimestamp")]
        now = time.time()
        finished = _cond_true(status, "Complete") or _cond_true(status, "Failed")
        target = _cond_true(status, "FailureTarget") or _cond_true(status, "SuccessCriteriaMet")
        if finished:
            if self._ttl_expired(job, status, now):
                return
        elif target:
            # Kubernetes >= 1.31: the terminal condition waits until no pod is left running.
            failing = target["type"] == "FailureTarget"
            self._kill(job, active, st, count=failing)
            if not active and not terminating:
                self._finish(job, status, failing, target, now)
            active = []
        elif spec.get("suspend"):
            self._kill(job, active, st, count=False)
            active = []
            if not _cond_true(status, "Suspended"):
                set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended")
                self.recorder.record(JOBS, job, "Normal", "Suspended", "Job suspended",
                                     COMPONENT)
            status.pop("startTime", None)
            st.started = None
        else:
            if _cond_true(status, "Suspended"):
                set_condition(status, "Suspended", "False", "JobResumed", "Job resumed")
                self.recorder.record(JOBS, job, "Normal", "Resumed", "Job resumed", COMPONENT)
                status.pop("startTime", None)
                st.started = None
            if not status.get("startTime"):
                st.started = now
                status["startTime"] = rfc3339(now)
            started = st.started if st.started is not None else parse_time(status["startTime"])
            failure = st.policy_failure
            deadline = spec.get("activeDeadlineSeconds")
            if failure is not None:
                pass
            elif st.failed > int(spec.get("backoffLimit", 6)):
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif deadline is not None and now - started >= deadline:
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            if failure:
                set_condition(status, "FailureTarget", "True", *failure)
                self._kill(job, active, st, count=True)
                active = []
            elif self._complete(spec, st, indexed, active):
                set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached",
                              "Reached expected number of succeeded pods")
                self._kill(job, active, st, count=False)
                active = []
            elif now >= st.next_create:
                active += self._create_pods(job, st, active, indexed)
        self._write_status(job, status, st, indexed, active, terminating)

    def _finish(self, job: dict[str, Any], status: dict[str, Any], failing: bool,
                target: dict[str, Any], now: float) -> None:
        """Add Failed (with FailureTarget's reason) or Complete, now that no pod runs."""
        if failing:
            set_condition(status, "Failed", "True", target["reason"], target["message"])
            self.recorder.record(JOBS, job, "Warning", target["reason"], target["message"],
                                 COMPONENT)
            return
        set_condition(status, "Complete", "True", "CompletionsReached",
                      "Reached expected number of succeeded pods")
        status["completionTime"] = rfc3339(now)
        self.recorder.record(JOBS, job, "Normal", "Completed", "Job completed", COMPONENT)

    def _count(self, st: _JobState, pods: list[dict[str, Any]], indexed: bool,
               policy: dict[str, Any] | None = None) -> None:
        """Count pods that ended, and pods that vanished before ending (failures)."""
        present = set()
        for p in pods:
            puid = p["metadata"]["uid"]
            present.add(puid)
            st.seen.add(puid)
            phase = dig(p, "status", "phase")
            if phase in TERMINAL and puid not in st.counted and puid not in st.ignored:
                st.counted.add(puid)
                action = _policy_action(policy, p) if phase == "Failed" else None
                if action and action[0] == "Ignore":
                    st.ignored.add(puid)
                elif phase == "Failed":
                    st.failed += 1
                    if action and action[0] == "FailJob" and st.policy_failure is None:
                        st.policy_failure = ("PodFailurePolicy", action[1])
                elif indexed and completion_index(p) is not None:
                    st.succeeded_indexes.add(completion_index(p))  # type: ignore[arg-type]
                else:
                    st.succeeded += 1
        for puid in st.seen - present:
            if puid not in st.counted and puid not in st.ignored:
                st.counted.add(puid)
                st.failed += 1
        st.seen &= present

    def _complete(self, spec: dict[str, Any], st: _JobState, indexed: bool,
                  active: list[dict[str, Any]]) -> bool:
        completions = spec.get("completions")
        if indexed:
            return len(st.succeeded_indexes) >= int(completions or 0)
        if completions is not None:
            return st.succeeded >= int(completions)
        return st.succeeded >= 1 and not active

    def _kill(self, job: dict[str, Any], pods: list[dict[str, Any]], st: _JobState,
              count: bool) -> None:
        for p in pods:
            puid = p["metadata"]["uid"]
            if count and puid not in st.counted:
                st.counted.add(puid)
                st.failed += 1
            elif not count:
                st.ignored.add(puid)
            try:
                self.deleter.delete(PODS, p["metadata"]["namespace"], p["metadata"]["name"])
            except errors.ApiError:
                continue
            self.recorder.record(JOBS, job, "Normal", "SuccessfulDelete",
                                 f"Deleted pod: {p['metadata']['name']}", COMPONENT)

    def _ttl_expired(self, job: dict[str, Any], status: dict[str, Any], now: float) -> bool:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return False
        done = status.get("completionTime") or (_cond_true(status, "Failed") or {}).get(
            "lastTransitionTime")
        if not done or now - parse_time(done) < ttl:
            return False
        meta = job["metadata"]
        try:
            self.deleter.delete(JOBS, meta["namespace"], meta["name"], BACKGROUND)
        except errors.ApiError:
            pass
        return True

    def _create_pods(self, job: dict[str, Any], st: _JobState, active: list[dict[str, Any]],
                     indexed: bool) -> list[dict[str, Any]]:
        spec = job["spec"]
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        slots = parallelism - len(active)
        if indexed:
            busy = {completion_index(p) for p in active}
            wanted: list[int | None] = [
                i for i in range(int(completions or 0))
                if i not in st.succeeded_indexes and i not in busy][:max(0, slots)]
        else:
            remaining = (int(completions) - st.succeeded if completions is not None
                         else (parallelism if st.succeeded == 0 else 0))
            wanted = [None] * max(0, min(parallelism, remaining) - len(active))
        created = []
        for index in wanted:
            pod = self._new_pod(job, index)
            try:
                pod = prepare_create(PODS, pod)
                self.admission.admit(PODS, pod)
                made = self.store.create(PODS, pod)
            except errors.ApiError as exc:
                self.recorder.record(JOBS, job, "Warning", "FailedCreate",
                                     f"Error creating: {exc.message}", COMPONENT)
                st.create_backoff = min(max(2 * st.create_backoff, CREATE_BACKOFF),
                                        CREATE_BACKOFF_MAX)
                st.next_create = time.time() + st.create_backoff
                break
            st.create_backoff = 0.0
            created.append(made)
            self.recorder.record(JOBS, job, "Normal", "SuccessfulCreate",
                                 f"Created pod: {made['metadata']['name']}", COMPONENT)
        return created

    def _new_pod(self, job: dict[str, Any], index: int | None) -> dict[str, Any]:
        meta = job["metadata"]
        template = deep(job["spec"]["template"])
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        annotations = dict(tmeta.get("annotations") or {})
        pod_spec = template.get("spec") or {}
        prefix = f"{meta['name']}-"
        if index is not None:
            prefix = f"{meta['name']}-{index}-"
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            pod_spec.setdefault("hostname", f"{meta['name']}-{index}")
            for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
                env = c.setdefault("env", [])
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                    env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                        "apiVersion": "v1",
                        "fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}})
        pod_meta: dict[str, Any] = {
            "generateName": prefix, "namespace": meta["namespace"], "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True,
                                 "blockOwnerDeletion": True}],
        }
        if annotations:
            pod_meta["annotations"] = annotations
        return {"metadata": pod_meta, "spec": pod_spec}

    def _write_status(self, job: dict[str, Any], status: dict[str, Any], st: _JobState,
                      indexed: bool, active: list[dict[str, Any]],
                      terminating: list[dict[str, Any]]) -> None:
        succeeded = len(st.succeeded_indexes) if indexed else st.succeeded
        for key, value in (("active", len(active)), ("succeeded", succeeded),
                           ("failed", st.failed)):
            if value:
                status[key] = value
            else:
                status.pop(key, None)  # omitempty, as the real API serializes int32 zeroes
        status["ready"] = sum(1 for p in active if _pod_ready(p))
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}
        if indexed and st.succeeded_indexes:
            status["completedIndexes"] = compress_indexes(st.succeeded_indexes)
        if status == job.get("status"):
            return  # as the store's update would find, without its three deep copies
        meta = job["metadata"]
        self.store.mutate(JOBS, meta["namespace"], meta["name"],
                          lambda j: j.__setitem__("status", status))
