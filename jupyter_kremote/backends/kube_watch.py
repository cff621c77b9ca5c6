"""One set of watches per namespace, shared by every cluster of the process.

A Jupyter server may hold many clusters in one namespace; each would otherwise list and watch
the namespace's pods, Jobs and events on its own. :class:`NamespaceWatch` runs one reflector
per kind (pods and Jobs by the ``managed-by`` label, events of jupyter-kremote's objects) and
hands every change to the clusters registered with it, replaying what it already knows to a
cluster that registers late (an adopted one). The last cluster to leave stops the watches.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from ..manifests import LABEL_CLUSTER, MANAGED_BY
from .kube_api import KubeLoop, Reflector
from .kube_state import ClusterState, name_of

SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


class NamespaceWatch:
    _all: ClassVar[dict[tuple[int, str], NamespaceWatch]] = {}
    _lock = threading.Lock()

    def __init__(self, kl: KubeLoop, namespace: str) -> None:
        self.namespace = namespace
        self.states: dict[int, tuple[str, ClusterState]] = {}  # id -> (cluster label, state)
        self.pods: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self._mutex = threading.Lock()
        timeout = kl.settings.watch_timeout
        self.tasks = [
            kl.spawn(Reflector(kl.core.list_namespaced_pod, namespace, self._on_pod,
                               label_selector=SELECTOR, timeout_seconds=timeout).run()),
            kl.spawn(Reflector(kl.batch.list_namespaced_job, namespace, self._on_job,
                               label_selector=SELECTOR, timeout_seconds=timeout).run()),
        ] + [  # events of the Jobs and of the pods only, by field selector
            kl.spawn(Reflector(kl.core.list_namespaced_event, namespace, self._on_event,
                               field_selector=f"involvedObject.kind={kind}",
                               timeout_seconds=timeout).run())
            for kind in ("Job", "Pod")]

    @classmethod
    def register(cls, kl: KubeLoop, namespace: str, label: str, state: ClusterState) -> None:
        """Feed ``state`` with the changes of cluster ``label`` (and what is known already)."""
        with cls._lock:
            watch = cls._all.get((id(kl), namespace))
            if watch is None:
                watch = cls._all[(id(kl), namespace)] = cls(kl, namespace)
            with watch._mutex:
                watch.states[id(state)] = (label, state)
                for pod in watch.pods.values():
                    if _label(pod) == label:
                        state.on_pod("SYNC", pod)
                for job in watch.jobs.values():
                    state.on_job("SYNC", job)
                for ev in watch.events.values():
                    state.on_event("SYNC", ev)

    @classmethod
    def unregister(cls, kl: KubeLoop, namespace: str, state: ClusterState) -> None:
        with cls._lock:
            watch = cls._all.get((id(kl), namespace))
            if watch is None:
                return
            with watch._mutex:
                watch.states.pop(id(state), None)
                empty = not watch.states
            if empty:
                del cls._all[(id(kl), namespace)]
                for task in watch.tasks:
                    task.cancel()

    @classmethod
    def count(cls) -> int:
        """Watched namespaces (for tests: one per namespace, whatever the clusters)."""
        return len(cls._all)

    # -- dispatch (on the loop thread) ------------------------------------------------------
    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        with self._mutex:
            _keep(self.pods, kind, pod)
            targets = [s for label, s in self.states.values() if label == _label(pod)]
        for state in targets:
            state.on_pod(kind, pod)

    def _on_job(self, kind: str, job: dict[str, Any]) -> None:
        with self._mutex:
            _keep(self.jobs, kind, job)
            targets = [s for _, s in self.states.values()]
        for state in targets:
            state.on_job(kind, job)  # each state keeps its own Job only

    def _on_event(self, kind: str, ev: dict[str, Any]) -> None:
        obj = ev.get("involvedObject") or {}
        if not str(obj.get("name", "")).startswith(MANAGED_BY):
            return  # other workloads' events: not ours to keep
        with self._mutex:
            key = ev.get("metadata", {}).get("uid") or name_of(ev)
            if kind == "DELETED":
                self.events.pop(key, None)
            else:
                self.events[key] = ev
            targets = [s for _, s in self.states.values()]
        for state in targets:
            state.on_event(kind, ev)  # each state keeps its own objects' events only


def _label(obj: dict[str, Any]) -> str | None:
    return (obj.get("metadata", {}).get("labels") or {}).get(LABEL_CLUSTER)


def _keep(cache: dict[str, dict[str, Any]], kind: str, obj: dict[str, Any]) -> None:
    if kind == "DELETED":
        cache.pop(name_of(obj), None)
    else:
        cache[name_of(obj)] = obj
