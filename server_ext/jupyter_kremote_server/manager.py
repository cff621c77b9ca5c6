"""The clusters of the server's user: plain async code over the synchronous ``session.Cluster``.

No Tornado here: the REST handlers are a thin layer over :class:`ClusterManager`, and tests can
drive it directly. Each ``Cluster`` call blocks (it starts processes or pods and talks to agents),
so it runs in a worker thread; one ``asyncio.Lock`` per cluster keeps two requests from using a
cluster's connections at once.

The manager composes one module per job: ``registry`` (entries by id), ``limits`` (what a
user may hold), ``monitor`` (the live view and its events), ``culling`` (TTL, idle, dead
agents; the one way to stop) and ``adoption`` (clusters left by a previous server).

Example:
    >>> manager = ClusterManager(Limits(max_clusters=2), root="/home/me")
    >>> model = await manager.ensure("default", "train.ipynb", {"count": 2})   # doctest: +SKIP
    >>> model.id, model.state                                                  # doctest: +SKIP
    ('train-default', 'running')
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

from jupyter_kremote.backends import Backend, get_backend
from jupyter_kremote.backends.portforward import PortForwardError
from jupyter_kremote.errors import ClusterEnded
from jupyter_kremote.session import Cluster
from jupyter_kremote.spec import format_duration

from . import adoption, services
from .culling import KEEP_ENDED_SECONDS, Culler, stop_entry
from .hub import Hub
from .limits import OPTION_FIELDS, Limits, check_limits, parse_options
from .models import (
    ENDED,
    RUNNING,
    STARTING,
    BadRequest,
    ClusterModel,
    Conflict,
    LogsModel,
    StartFailed,
    Unreachable,
)
from .monitor import Monitor
from .policy import UserLimits, check_lifetime
from .registry import Entry, Registry
from .tasks import TaskBoard

log = logging.getLogger("jupyter_kremote_server")

__all__ = ["KEEP_ENDED_SECONDS", "OPTION_FIELDS", "ClusterManager", "Limits"]


class ClusterManager:
    """Clusters by id; every public method returns JSON-able models or raises ApiError."""

    def __init__(self, limits: Limits | None = None, root: str = ".") -> None:
        self.limits = limits or Limits()
        self.root = root
        self.registry = Registry()
        self._backends: dict[str, Backend] = {}
        self.hub = Hub()
        self.tasks = TaskBoard()  # parallel maps' counts, as kernels report them
        self.monitor = Monitor(self.registry, self.limits, self.hub)
        self.culler = Culler(self.registry, self.limits, self.monitor)
        self.sweep: Any = None  # sweep.Sweep, on Kubernetes

    @property
    def _entries(self) -> dict[str, Entry]:
        return self.registry.entries

    def backend(self, name: str) -> Backend:
        """One backend object per kind for all clusters (the Kubernetes one keeps the user)."""
        if name not in self._backends:
            backend = get_backend(name)
            settings = getattr(backend, "settings", None)
            if settings is not None:
                settings.user = self.limits.user
                if self.limits.shared:  # the hub's service: its own pod owns no one's Jobs
                    settings.owner_pod = None
                if self.limits.namespace and not settings.namespace:
                    settings.namespace = self.limits.namespace
            self._backends[name] = backend
        return self._backends[name]

    # -- orphans: what a dead process left on Kubernetes --------------------------------------
    def start_sweep(self, interval: float) -> None:
        """Sweep this user's orphaned Kubernetes objects every ``interval`` s (`sweep.py`)."""
        from .sweep import Sweep

        if self.sweep is None:
            self.sweep = Sweep(self.backend("kubernetes"), self.limits.namespace,
                               user=self.limits.user)
        self.sweep.start(interval)

    def held_jobs(self) -> set[str]:
        """The Kubernetes Jobs of the clusters this manager holds or is starting."""
        backend = self._backends.get("kubernetes")
        held = getattr(backend, "held_jobs", None)
        return held() if held is not None else set()

    # -- the live view: one monitor for every client ------------------------------------------
    def start_monitor(self) -> None:
        self.monitor.start()

    async def monitor_once(self) -> None:
        """Look at every running cluster once and publish what changed."""
        await self.monitor.once()

    def put_tasks(self, notebook: Any, maps: Any) -> dict[str, Any]:
        """A kernel's latest map counts (``PUT tasks``), passed on to the panel."""
        message = {"type": "tasks", "notebook": notebook,
                   "maps": self.tasks.put(notebook, maps)}
        self.hub.publish(message)
        return {"notebook": notebook, "maps": message["maps"]}

    def snapshot(self) -> list[dict[str, Any]]:
        return self.registry.snapshot()

    async def close(self, keep: tuple[str, ...] = ()) -> None:
        """Stop the monitor; shut clusters down, except those of the ``keep`` backends.

        Kubernetes clusters are kept by default: their Job's deadline still ends them, and the
        next server adopts them.
        """
        await self.monitor.close()
        if self.sweep is not None:
            await self.sweep.close()
        starting = [e for e in self.registry.entries.values()
                    if e.cluster is None and e.model.state == STARTING and e.model.backend in keep]
        for entry in starting:  # a first start still queued in Kueue: its Job stays queued
            entry.keep_queued.set()
            entry.cancelled.set()
        for entry in starting:
            await entry.started.wait()
            if entry.cluster is None:
                self.registry.remove(entry)
        for entry in list(self.registry.entries.values()):
            if entry.cluster is not None and entry.model.backend in keep:
                entry.cancelled.set()  # a requeued one stops waiting; its Job stays queued
                entry.cluster.detach()
                release = getattr(entry.cluster.backend, "release", None)
                if release:
                    release(entry.cluster.handle)
                entry.cluster = None
                self.registry.remove(entry)
        await self.shutdown_all()
        self.hub.close()

    async def adopt(self, jobs: list[dict[str, Any]] | None = None) -> list[str]:
        """Take back this user's running Kubernetes clusters (after a server restart);
        ``jobs``: this user's running Jobs, if the caller listed them already."""
        return await adoption.adopt(self.registry, self.monitor, self.backend("kubernetes"),
                                    self.limits, self.root, jobs)

    async def end_all(self, reason: str) -> list[str]:
        """End every cluster now with ``reason`` (kept listed as ended, so kernels say why)."""
        ended = []
        for entry in list(self.registry.entries.values()):
            if entry.model.state == STARTING:
                await entry.started.wait()
            if entry.cluster is None:
                continue
            self.monitor.add_event(entry, {"type": "Warning", "reason": "Ended",
                                           "message": reason})
            await stop_entry(self.monitor, entry, reason)
            ended.append(entry.model.id)
        return ended

    async def cull_once(self, now: float | None = None) -> dict[str, str]:
        """Shut down clusters whose TTL passed, whose agents died, or that sat idle too long.

        Culled clusters stay listed as "ended" with the reason; returns {id: reason}.
        """
        return await self.culler.cull_once(now)

    # -- queries -------------------------------------------------------------------------------
    async def list_clusters(self, name: str | None = None,
                            notebook: str | None = None) -> list[ClusterModel]:
        """Every cluster, or only those of ``name`` and/or ``notebook`` (a starting kernel
        follows its one cluster so, without the cost of every other model)."""
        entries = self.registry.entries
        ids = sorted(i for i, e in entries.items()
                     if name in (None, e.model.name) and notebook in (None, e.model.notebook))
        # no task per cluster: the admin's list of hundreds waits on nothing
        return [self._model(entries[i]) for i in ids]

    async def get(self, cluster_id: str) -> ClusterModel:
        """The cluster as the monitor last saw it (at most ``monitor_interval`` s old)."""
        return self._model(self.registry.get(cluster_id))

    def _model(self, entry: Entry) -> ClusterModel:
        self.monitor.refresh(entry)
        return dataclasses.replace(entry.model, pods=list(entry.model.pods),
                                   events=list(entry.events))

    async def connection(self, cluster_id: str) -> dict[str, Any]:
        """What a kernel needs to reach the agents itself: key and endpoints (secret!)."""
        entry = self.registry.get(cluster_id)
        cluster = self._running(entry)
        handle = cluster.handle
        return {"id": cluster_id, "key": base64.b64encode(handle.key).decode(),
                "deadline": handle.deadline,
                "endpoints": [e.to_json() for e in handle.endpoints]}

    async def events(self, cluster_id: str) -> dict[str, Any]:
        entry = self.registry.get(cluster_id)
        return {"id": cluster_id, "events": list(entry.events)}

    async def telemetry(self, cluster_id: str) -> dict[str, Any]:
        entry = self.registry.get(cluster_id)
        return {"id": cluster_id, "interval": self.limits.telemetry_interval,
                "pods": {str(r): list(h) for r, h in sorted(entry.telemetry.items())}}

    async def follow_logs(self, cluster_id: str, rank: Any = 0) -> AsyncGenerator[str, None]:
        """The agent's log so far, then each new chunk until the agent ends."""
        entry = self.registry.get(cluster_id)
        rank_i = _whole(rank, "rank", 0)
        cluster = self._running(entry)
        try:
            cluster._targets([rank_i])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[str | None] = asyncio.Queue()
        closed = threading.Event()

        def write(text: str) -> None:
            if closed.is_set():
                raise EOFError("the client went away")
            loop.call_soon_threadsafe(chunks.put_nowait, text)

        def follow() -> None:
            try:
                cluster.follow_logs(rank_i, write, closed)
            except Exception:  # noqa: BLE001, S110 - EOFError, or the agent is gone
                pass
            finally:
                if not closed.is_set():
                    loop.call_soon_threadsafe(chunks.put_nowait, None)

        threading.Thread(target=follow, name=f"kremote-logs-{cluster_id}", daemon=True).start()
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
        finally:
            closed.set()

    async def logs(self, cluster_id: str, rank: Any = 0, tail: Any = 200) -> LogsModel:
        entry = self.registry.get(cluster_id)
        rank_i = _whole(rank, "rank", 0)
        tail_i = _whole(tail, "tail", 1)
        if entry.cluster is None:
            raise Conflict(f"cluster {cluster_id!r} is {entry.model.state}"
                           f"{': ' + entry.model.ended if entry.model.ended else ''}; "
                           "its logs are gone")
        try:
            text = await asyncio.to_thread(entry.cluster.logs, rank_i, tail_i)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return LogsModel(id=cluster_id, rank=rank_i, tail=tail_i, text=text)

    # -- changes -------------------------------------------------------------------------------
    async def ensure(self, name: Any = "default", notebook: Any = "",
                     options: dict[str, Any] | None = None, *,
                     limits: UserLimits | None = None) -> ClusterModel:
        """The running cluster ``name`` of ``notebook``, started if there is none.

        Refuses (OverLimit, nothing started) when it would pass a limit: ``limits`` (the
        caller's, from the hub's policy), else this server's own.
        """
        if not isinstance(name, str) or not name.strip():
            raise BadRequest(f"name {name!r}: expected a non-empty cluster name")
        if not isinstance(notebook, str):
            raise BadRequest(f"notebook {notebook!r}: expected a notebook path")
        options = dict(options or {})
        runtime = options.pop("runtime", None)
        if runtime is not None and not isinstance(runtime, dict):
            raise BadRequest(f"runtime {runtime!r}: expected the kernel's runtime_info()")
        allowed = limits or self.limits.user_limits()
        opts = parse_options(options, self.limits, allowed)
        async with self.registry.lock:
            existing = self.registry.find(name, notebook)
            if existing is not None and existing.model.state != ENDED:
                entry = existing
            else:
                check_limits(self.limits.user, allowed,
                             [e.model for e in self.registry.live()], opts, name, notebook)
                cluster_id = (existing.model.id if existing
                              else self.registry.new_id(name, notebook))
                entry = Entry(ClusterModel(
                    id=cluster_id, name=name, notebook=notebook, backend=opts.backend,
                    count=opts.count, gpu=opts.gpu, created=time.time(), ttl=opts.ttl,
                    user=self.limits.user, templates=list(opts.templates),
                    namespace=opts.namespace, group=opts.group, image=opts.image,
                    cpu=opts.cpu, mem=opts.mem), opts, runtime=runtime)
                self.registry.add(entry)
                self.monitor.publish(entry)
                entry.task = asyncio.get_running_loop().create_task(self._start(entry))
                self.monitor.start()
        await entry.started.wait()
        if entry.model.state == ENDED and entry.cluster is None and entry.model.ended_at is None:
            raise StartFailed(entry.model.ended or "the cluster did not start")
        return await self.get(entry.model.id)

    async def _start(self, entry: Entry) -> None:
        m = entry.model
        backend = self.backend(entry.options.backend)
        loop = asyncio.get_running_loop()

        def progress(line: str) -> None:  # on the starting thread: hand over to the loop
            loop.call_soon_threadsafe(self._stage, entry, line)

        try:
            # compared with the asking kernel's Python (not this server's); without it, the
            # kernel compares when it connects
            cluster = await asyncio.to_thread(functools.partial(
                Cluster, m.name, entry.options, self.root, progress=progress,
                notebook=m.notebook, backend=backend, runtime=entry.runtime,
                check_drift=entry.runtime is not None, cancelled=entry.cancelled,
                keep_queued=entry.keep_queued))
        except BaseException as exc:  # noqa: BLE001 - reported to whoever waits
            await self.monitor.start_failed(entry, exc)
        else:
            await self.monitor.running(entry, cluster, f"{m.count} {m.backend} agent"
                                       f"{'s' if m.count > 1 else ''} ready")
            log.info("kremote cluster %s started (%d %s agents)", m.id, m.count, m.backend)
        finally:
            entry.started.set()

    def _stage(self, entry: Entry, line: str) -> None:
        self.monitor.stage(entry, line)

    async def extend(self, cluster_id: str, seconds: Any = None, deadline: Any = None, *,
                     limits: UserLimits | None = None) -> ClusterModel:
        """Move the deadline ``seconds`` later, or to ``deadline`` (a Unix time, kernels);
        refused past ``max_ttl`` of ``limits`` (the caller's), else of this server's."""
        entry = self.registry.get(cluster_id)
        if deadline is not None and seconds is None:
            if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
                raise BadRequest(f"deadline {deadline!r}: expected a Unix time in seconds")
            cluster = self._running(entry)
            seconds = deadline - max(cluster.deadline, time.time())
            if seconds <= 0:
                return await self.get(cluster_id)  # already at least that late
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise BadRequest(f"seconds {seconds!r}: expected a positive number of seconds")
        async with entry.lock:
            cluster = self._running(entry)
            new_deadline = max(cluster.deadline, time.time()) + seconds
            # from when it began to run: a Job's TTL counts from its startTime, after Kueue
            # admitted it, not from the time it spent queued
            lifetime = new_deadline - max(entry.model.created, cluster.handle.started)
            check_lifetime(self.limits.user, limits or self.limits.user_limits(), cluster_id,
                           seconds, lifetime)
            try:
                entry.model.deadline = await asyncio.to_thread(cluster.extend, seconds)
            except ClusterEnded as exc:
                self.monitor.refresh(entry)
                raise Conflict(str(exc)) from None
        self.monitor.add_event(entry, {"reason": "Extended", "message": f"TTL extended by "
                                       f"{format_duration(seconds)}", "time": time.time()})
        self.monitor.publish(entry)
        return await self.get(cluster_id)

    async def shutdown(self, cluster_id: str) -> None:
        """Stop the cluster's agents (if still running) and forget it."""
        entry = self.registry.get(cluster_id)
        if entry.model.state == STARTING:
            entry.cancelled.set()  # a start waiting in Kueue gives up and deletes its Job
            await entry.started.wait()
            if entry.cluster is None:  # it gave up: nothing runs, and it is forgotten
                return
        await stop_entry(self.monitor, entry, "it was shut down")
        async with self.registry.lock:
            self.registry.remove(entry)
        self.hub.publish({"type": "removed", "id": cluster_id})

    async def shutdown_all(self) -> None:
        await asyncio.gather(*(self.shutdown(i) for i in list(self.registry.entries)),
                             return_exceptions=True)

    async def service(self, cluster_id: str, name: str) -> services.ServiceTarget:
        """Where the proxy reaches service `name` of a running cluster (404, 409 otherwise)."""
        entry = self.registry.get(cluster_id)
        cluster = self._running(entry)
        try:
            return await asyncio.to_thread(services.target, cluster_id, name, cluster)
        except PortForwardError as exc:
            raise Unreachable(f"service {name!r} of cluster {cluster_id!r}: {exc}") from None

    # -- helpers -------------------------------------------------------------------------------
    def _running(self, entry: Entry) -> Cluster:
        self.monitor.refresh(entry)
        if entry.cluster is None or entry.model.state != RUNNING:
            raise Conflict(f"cluster {entry.model.id!r} is {entry.model.state}"
                           f"{': ' + entry.model.ended if entry.model.ended else ''}")
        return entry.cluster



def _whole(value: Any, what: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} {value!r}: expected a whole number") from None
    if number < minimum:
        raise BadRequest(f"{what} {number}: must be at least {minimum}")
    return number
