"""The clusters of the server's user: plain async code over the synchronous ``session.Cluster``.

No Tornado here: the REST handlers are a thin layer over :class:`ClusterManager`, and tests can
drive it directly. Each ``Cluster`` call blocks (it starts processes or pods and talks to agents),
so it runs in a worker thread; one ``asyncio.Lock`` per cluster keeps two requests from using a
cluster's connections at once.

Example:
    >>> manager = ClusterManager(Limits(max_clusters=2), root="/home/me")
    >>> model = await manager.ensure("default", "train.ipynb", {"count": 2})   # doctest: +SKIP
    >>> model.id, model.state                                                  # doctest: +SKIP
    ('train-default', 'running')
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from jupyter_kremote.errors import ClusterEnded
from jupyter_kremote.session import Cluster, ClusterOptions
from jupyter_kremote.spec import dns_safe_name, format_duration

from .models import (
    ENDED,
    RUNNING,
    STARTING,
    BadRequest,
    ClusterModel,
    Conflict,
    LogsModel,
    NotFound,
    OverLimit,
    StartFailed,
)

log = logging.getLogger("jupyter_kremote_server")

#: request fields that map onto ClusterOptions
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(ClusterOptions))
#: ended clusters stay visible (state "ended", with the reason) this long, then are forgotten
KEEP_ENDED_SECONDS = 3600.0


@dataclass
class Limits:
    """What one user may hold at once; 0 means unlimited."""

    max_clusters: int = 0
    max_pods: int = 0
    max_gpus: int = 0
    default_ttl: float = 3600.0
    max_ttl: float = 86400.0
    idle_cull_seconds: float = 0.0  # 0: never cull idle clusters
    backend: str = "local"
    namespace: str | None = None


@dataclass
class _Entry:
    model: ClusterModel
    options: ClusterOptions
    cluster: Cluster | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None  # the start, kept so that it is not garbage-collected


class ClusterManager:
    """Clusters by id; every public method returns JSON-able models or raises ApiError."""

    def __init__(self, limits: Limits | None = None, root: str = ".") -> None:
        self.limits = limits or Limits()
        self.root = root
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()  # guards the registry and the limit checks

    # -- queries -------------------------------------------------------------------------------
    async def list_clusters(self) -> list[ClusterModel]:
        ids = sorted(self._entries)
        return list(await asyncio.gather(*(self.get(i) for i in ids)))

    async def get(self, cluster_id: str) -> ClusterModel:
        entry = self._entry(cluster_id)
        if entry.cluster is not None and entry.model.state == RUNNING:
            async with entry.lock:
                if entry.cluster is not None:
                    self._refresh(entry)
                    if entry.model.state == RUNNING:
                        entry.model.pods = await asyncio.to_thread(entry.cluster.status)
        return dataclasses.replace(entry.model, pods=list(entry.model.pods))

    async def logs(self, cluster_id: str, rank: Any = 0, tail: Any = 200) -> LogsModel:
        entry = self._entry(cluster_id)
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
                     options: dict[str, Any] | None = None) -> ClusterModel:
        """The running cluster ``name`` of ``notebook``, started if there is none.

        Refuses (OverLimit, nothing started) when it would pass a limit.
        """
        if not isinstance(name, str) or not name.strip():
            raise BadRequest(f"name {name!r}: expected a non-empty cluster name")
        if not isinstance(notebook, str):
            raise BadRequest(f"notebook {notebook!r}: expected a notebook path")
        opts = self._options(options or {})
        async with self._lock:
            existing = self._find(name, notebook)
            if existing is not None and existing.model.state != ENDED:
                entry = existing
            else:
                self._check_limits(opts)
                cluster_id = existing.model.id if existing else self._new_id(name, notebook)
                entry = _Entry(ClusterModel(
                    id=cluster_id, name=name, notebook=notebook, backend=opts.backend,
                    count=opts.count, gpu=opts.gpu, created=time.time(), ttl=opts.ttl), opts)
                self._entries[cluster_id] = entry
                entry.task = asyncio.get_running_loop().create_task(self._start(entry))
        await entry.started.wait()
        if entry.model.state == ENDED and entry.cluster is None and entry.model.ended_at is None:
            raise StartFailed(entry.model.ended or "the cluster did not start")
        return await self.get(entry.model.id)

    async def _start(self, entry: _Entry) -> None:
        m = entry.model
        try:
            cluster = await asyncio.to_thread(Cluster, m.name, entry.options, self.root,
                                              notebook=m.notebook)
        except BaseException as exc:  # noqa: BLE001 - reported to whoever waits
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            m.state, m.ended = ENDED, f"could not start: {reason}"
            async with self._lock:
                if self._entries.get(m.id) is entry:
                    del self._entries[m.id]
            log.warning("kremote cluster %s %s", m.id, m.ended)
        else:
            entry.cluster = cluster
            m.state, m.deadline = RUNNING, cluster.deadline
            m.last_activity, m.warnings = cluster.last_activity, list(cluster.warnings)
            log.info("kremote cluster %s started (%d %s agents)", m.id, m.count, m.backend)
        finally:
            entry.started.set()

    async def extend(self, cluster_id: str, seconds: Any) -> ClusterModel:
        entry = self._entry(cluster_id)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise BadRequest(f"seconds {seconds!r}: expected a positive number of seconds")
        async with entry.lock:
            cluster = self._running(entry)
            new_deadline = max(cluster.deadline, time.time()) + seconds
            lifetime = new_deadline - entry.model.created
            if lifetime > self.limits.max_ttl:
                raise OverLimit(
                    f"extending by {format_duration(seconds)} would give cluster {cluster_id!r} "
                    f"a lifetime of {format_duration(lifetime)}, more than the "
                    f"{format_duration(self.limits.max_ttl)} allowed; ask for less")
            try:
                entry.model.deadline = await asyncio.to_thread(cluster.extend, seconds)
            except ClusterEnded as exc:
                self._refresh(entry)
                raise Conflict(str(exc)) from None
        return await self.get(cluster_id)

    async def shutdown(self, cluster_id: str) -> None:
        """Stop the cluster's agents (if still running) and forget it."""
        entry = self._entry(cluster_id)
        if entry.model.state == STARTING:
            await entry.started.wait()
        await self._stop(entry, "it was shut down")
        async with self._lock:
            if self._entries.get(cluster_id) is entry:
                del self._entries[cluster_id]

    async def shutdown_all(self) -> None:
        await asyncio.gather(*(self.shutdown(i) for i in list(self._entries)),
                             return_exceptions=True)

    async def cull_once(self, now: float | None = None) -> dict[str, str]:
        """Shut down clusters whose TTL passed, whose agents died, or that sat idle too long.

        Culled clusters stay listed as "ended" with the reason; returns {id: reason}.
        """
        now = time.time() if now is None else now
        culled: dict[str, str] = {}
        for cluster_id, entry in list(self._entries.items()):
            m = entry.model
            if entry.cluster is None:  # starting, or ended and released
                if m.ended_at is not None and now - m.ended_at > KEEP_ENDED_SECONDS:
                    self._entries.pop(cluster_id, None)
                continue
            reason = await self._cull_reason(entry, now)
            if reason:
                await self._stop(entry, reason, now)
                culled[cluster_id] = reason
                log.info("kremote cluster %s culled: %s", cluster_id, reason)
        return culled

    async def _cull_reason(self, entry: _Entry, now: float) -> str | None:
        cluster = entry.cluster
        assert cluster is not None
        if cluster.ended:
            return cluster.ended
        if now >= cluster.deadline:
            return "its TTL ran out"
        idle = self.limits.idle_cull_seconds
        if idle > 0 and now - cluster.last_activity > idle:
            # the kernel talks to the agents directly, so ask them whether they are busy
            async with entry.lock:
                rows = await asyncio.to_thread(cluster.status)
            if any(r.get("state") == "busy" for r in rows):
                cluster.last_activity = now
                return None
            return f"it was idle for more than {format_duration(idle)}"
        return None

    # -- helpers -------------------------------------------------------------------------------
    async def _stop(self, entry: _Entry, reason: str, now: float | None = None) -> None:
        async with entry.lock:
            cluster, entry.cluster = entry.cluster, None
            if cluster is not None:
                try:
                    await asyncio.to_thread(cluster.shutdown)
                except Exception as exc:  # noqa: BLE001 - the agents are gone or going
                    log.warning("kremote cluster %s: shutdown: %s", entry.model.id, exc)
            m = entry.model
            if m.state != ENDED or m.ended_at is None:
                m.state, m.ended, m.ended_at = ENDED, m.ended or reason, now or time.time()
                m.pods = []

    def _refresh(self, entry: _Entry) -> None:
        """Mirror the cluster's own view of whether it ended (agent died, TTL) in the model."""
        cluster = entry.cluster
        if cluster is None:
            return
        entry.model.deadline = cluster.deadline
        entry.model.last_activity = cluster.last_activity
        if cluster.ended is None and time.time() >= cluster.deadline:
            cluster.ended = "its TTL ran out"
        if cluster.ended is not None and entry.model.state == RUNNING:
            entry.model.state, entry.model.ended = ENDED, cluster.ended
            entry.model.ended_at, entry.model.pods = time.time(), []
            # the processes or pods are released by the culler's next pass

    def _running(self, entry: _Entry) -> Cluster:
        self._refresh(entry)
        if entry.cluster is None or entry.model.state != RUNNING:
            raise Conflict(f"cluster {entry.model.id!r} is {entry.model.state}"
                           f"{': ' + entry.model.ended if entry.model.ended else ''}")
        return entry.cluster

    def _entry(self, cluster_id: str) -> _Entry:
        entry = self._entries.get(cluster_id)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise NotFound(f"no cluster {cluster_id!r} (clusters: {known})")
        return entry

    def _find(self, name: str, notebook: str) -> _Entry | None:
        for entry in self._entries.values():
            if entry.model.name == name and entry.model.notebook == notebook:
                return entry
        return None

    def _new_id(self, name: str, notebook: str) -> str:
        stem = PurePath(notebook).stem if notebook else ""
        base = dns_safe_name(stem, name, max_len=50) if stem else dns_safe_name(name, max_len=50)
        cluster_id, n = base, 1
        while cluster_id in self._entries:
            n += 1
            cluster_id = f"{base}-{n}"
        return cluster_id

    def _options(self, fields: dict[str, Any]) -> ClusterOptions:
        unknown = sorted(set(fields) - set(OPTION_FIELDS))
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}; expected name, notebook or one of "
                             f"{', '.join(OPTION_FIELDS)}")
        values = {k: v for k, v in fields.items() if v is not None}
        values.setdefault("backend", self.limits.backend)
        values.setdefault("ttl", self.limits.default_ttl)
        if self.limits.namespace and values["backend"] == "kubernetes":
            values.setdefault("namespace", self.limits.namespace)
        if values["backend"] not in ("local", "kubernetes"):
            raise BadRequest(f"backend {values['backend']!r}: expected local or kubernetes")
        try:
            opts = ClusterOptions(**values)
            opts.to_spec()  # validates every field, naming the option
        except (TypeError, ValueError, AttributeError) as exc:
            raise BadRequest(str(exc).splitlines()[0]) from None
        if opts.ttl > self.limits.max_ttl:
            raise OverLimit(f"ttl {format_duration(opts.ttl)} is more than the "
                            f"{format_duration(self.limits.max_ttl)} allowed; ask for less")
        return opts

    def _check_limits(self, opts: ClusterOptions) -> None:
        """Raise OverLimit if starting ``opts`` would pass a per-user limit (caller holds lock)."""
        live = [e.options for e in self._entries.values() if e.model.state != ENDED]
        lim = self.limits
        if lim.max_clusters and len(live) + 1 > lim.max_clusters:
            raise OverLimit(f"{len(live)} clusters running of {lim.max_clusters} allowed; "
                            "shut down a cluster first")
        pods = sum(o.count for o in live)
        if lim.max_pods and pods + opts.count > lim.max_pods:
            raise OverLimit(f"{pods} pods in use of {lim.max_pods} allowed and this cluster "
                            f"asks for {opts.count}; shut down a cluster or ask for fewer")
        gpus = sum(o.gpu * o.count for o in live)
        want = opts.gpu * opts.count
        if lim.max_gpus and want and gpus + want > lim.max_gpus:
            raise OverLimit(f"{gpus} GPUs in use of {lim.max_gpus} allowed and this cluster "
                            f"asks for {want}; shut down a cluster or ask for fewer")


def _whole(value: Any, what: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} {value!r}: expected a whole number") from None
    if number < minimum:
        raise BadRequest(f"{what} {number}: must be at least {minimum}")
    return number
