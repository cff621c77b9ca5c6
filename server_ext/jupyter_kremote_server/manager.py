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
import base64
import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from jupyter_kremote.backends import Backend, get_backend
from jupyter_kremote.errors import ClusterEnded
from jupyter_kremote.manifests import LABEL_GROUP
from jupyter_kremote.session import Cluster, ClusterOptions
from jupyter_kremote.spec import dns_safe_name, format_duration, parse_quantity

from .hub import Hub
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
from .tasks import TaskBoard

log = logging.getLogger("jupyter_kremote_server")

#: request fields that map onto ClusterOptions
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(ClusterOptions))
#: ended clusters stay visible (state "ended", with the reason) this long, then are forgotten
KEEP_ENDED_SECONDS = 3600.0
#: events kept per cluster (the newest)
MAX_EVENTS = 100


@dataclass
class Limits:
    """What one user may hold at once; 0 means unlimited."""

    max_clusters: int = 0
    max_pods: int = 0
    max_gpus: int = 0
    max_cpu: str = ""  # a quantity over all pods ("16", "8000m"); "" = unlimited
    max_memory: str = ""  # a quantity over all pods ("64Gi"); "" = unlimited
    allowed_templates: list[str] = field(default_factory=list)  # [] = any
    default_ttl: float = 3600.0
    max_ttl: float = 86400.0
    idle_cull_seconds: float = 0.0  # 0: never cull idle clusters
    backend: str = "local"
    namespace: str | None = None
    user: str = "user"  # clusters are labelled with it; other users' are invisible
    monitor_interval: float = 0.5  # seconds between looks at pods, events and agents
    telemetry_interval: float = 2.0
    telemetry_history: int = 150


@dataclass
class _Entry:
    model: ClusterModel
    options: ClusterOptions
    cluster: Cluster | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None  # the start, kept so that it is not garbage-collected
    runtime: dict[str, Any] | None = None  # the asking kernel's Python, for the drift check
    events: deque = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))  # newest first
    seen_events: set = field(default_factory=set)
    telemetry: dict[int, deque] = field(default_factory=dict)
    last_sample: float = 0.0
    published: str = ""  # the model as last sent to the WebSocket clients


class ClusterManager:
    """Clusters by id; every public method returns JSON-able models or raises ApiError."""

    def __init__(self, limits: Limits | None = None, root: str = ".") -> None:
        self.limits = limits or Limits()
        self.root = root
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()  # guards the registry and the limit checks
        self._backends: dict[str, Backend] = {}
        self.hub = Hub()
        self.tasks = TaskBoard()  # parallel maps' counts, as kernels report them
        self._monitor: asyncio.Task | None = None

    def backend(self, name: str) -> Backend:
        """One backend object per kind for all clusters (the Kubernetes one keeps the user)."""
        if name not in self._backends:
            backend = get_backend(name)
            settings = getattr(backend, "settings", None)
            if settings is not None:
                settings.user = self.limits.user
                if self.limits.namespace and not settings.namespace:
                    settings.namespace = self.limits.namespace
            self._backends[name] = backend
        return self._backends[name]

    # -- the live view: one monitor for every client ------------------------------------------
    def start_monitor(self) -> None:
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.get_running_loop().create_task(self._monitor_forever())

    async def _monitor_forever(self) -> None:
        while True:
            try:
                await self.monitor_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kremote: monitor pass failed")
            await asyncio.sleep(self.limits.monitor_interval)

    async def monitor_once(self) -> None:
        """Look at every running cluster once and publish what changed."""
        entries = [e for e in list(self._entries.values()) if e.cluster is not None]
        await asyncio.gather(*(self._observe(e) for e in entries))

    async def _observe(self, entry: _Entry) -> None:
        now = time.time()
        want_sample = now - entry.last_sample >= self.limits.telemetry_interval
        async with entry.lock:
            cluster = entry.cluster
            if cluster is None:
                return
            ended = None
            try:
                await asyncio.to_thread(cluster.check_usable)
            except ClusterEnded:
                ended = cluster.ended
            rows = await asyncio.to_thread(cluster.status, 0.3) if ended is None else []
            samples: dict[int, dict[str, Any]] = {}
            if want_sample and ended is None and hasattr(cluster, "telemetry"):
                entry.last_sample = now
                samples = await asyncio.to_thread(cluster.telemetry, 0.5)
            records = getattr(cluster.backend, "event_records", None)
            kube_events = await asyncio.to_thread(records, cluster.handle) if records else []
        for rank, sample in sorted(samples.items()):
            history = entry.telemetry.setdefault(
                rank, deque(maxlen=self.limits.telemetry_history))
            history.append(sample)
            self.hub.publish({"type": "telemetry", "id": entry.model.id, "rank": rank,
                              "sample": sample})
        for ev in kube_events:
            self._add_event(entry, ev)
        last = [r.get("last_request") for r in rows if r.get("last_request")]
        if last and cluster.last_activity < max(last):
            cluster.last_activity = max(last)  # the kernel talks to the agents directly
        if ended is not None:
            self._add_event(entry, {"type": "Warning", "reason": "Ended", "message": ended})
            await self._stop(entry, ended)
            return
        entry.model.pods = [self._row(entry, r) for r in rows]
        self._refresh(entry)
        self._publish(entry)

    def _row(self, entry: _Entry, row: dict[str, Any]) -> dict[str, Any]:
        history = entry.telemetry.get(row["rank"])
        return {**row, "group": entry.model.group,
                "telemetry": history[-1] if history else None}

    def _add_event(self, entry: _Entry, event: dict[str, Any]) -> None:
        ev = {"time": time.time(), "type": "Normal", "object": f"cluster/{entry.model.id}",
              **{k: v for k, v in event.items() if v is not None}}
        key = (ev.get("object"), ev.get("reason"), ev.get("message"), ev.get("count"))
        if key in entry.seen_events:
            return
        entry.seen_events.add(key)
        entry.events.appendleft(ev)
        entry.model.events = list(entry.events)
        self.hub.publish({"type": "event", "id": entry.model.id, "event": ev})

    def _publish(self, entry: _Entry, force: bool = False) -> None:
        data = entry.model.to_dict()
        text = json.dumps(data, sort_keys=True, default=str)
        if force or text != entry.published:
            entry.published = text
            self.hub.publish({"type": "cluster", "cluster": data})

    def put_tasks(self, notebook: Any, maps: Any) -> dict[str, Any]:
        """A kernel's latest map counts (``PUT tasks``), passed on to the panel."""
        message = {"type": "tasks", "notebook": notebook,
                   "maps": self.tasks.put(notebook, maps)}
        self.hub.publish(message)
        return {"notebook": notebook, "maps": message["maps"]}

    def snapshot(self) -> list[dict[str, Any]]:
        return [self._entries[i].model.to_dict() for i in sorted(self._entries)]

    async def close(self, keep: tuple[str, ...] = ()) -> None:
        """Stop the monitor; shut clusters down, except those of the ``keep`` backends.

        Kubernetes clusters are kept by default: their Job's deadline still ends them, and the
        next server adopts them.
        """
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        for cluster_id, entry in list(self._entries.items()):
            if entry.cluster is not None and entry.model.backend in keep:
                entry.cluster.detach()
                release = getattr(entry.cluster.backend, "release", None)
                if release:
                    release(entry.cluster.handle)
                entry.cluster = None
                del self._entries[cluster_id]
        await self.shutdown_all()
        self.hub.close()

    async def adopt(self) -> list[str]:
        """Take back this user's running Kubernetes clusters (after a server restart)."""
        backend = self.backend("kubernetes")
        jobs = await asyncio.to_thread(backend.find_running, self.limits.user,  # type: ignore[attr-defined]
                                       self.limits.namespace)
        adopted = []
        for job in jobs:
            meta = job["metadata"]
            notes = meta.get("annotations") or {}
            name = notes.get("kremote/name") or "default"
            notebook = notes.get("kremote/notebook-path", "")
            if self._find(name, notebook) is not None:
                continue
            try:
                handle = await asyncio.to_thread(backend.attach, job)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - one broken Job must not stop the rest
                log.warning("kremote: could not adopt Job %s: %s", meta.get("name"), exc)
                continue
            spec = job.get("spec", {})
            opts = ClusterOptions(count=spec.get("completions") or 1, backend="kubernetes",
                                  ttl=handle.deadline - handle.started,
                                  namespace=meta.get("namespace"),
                                  group=(meta.get("labels") or {}).get(LABEL_GROUP, "main"))
            try:  # no drift check: no kernel asked; kernels compare when they connect
                cluster = await asyncio.to_thread(functools.partial(
                    Cluster, name, opts, self.root, notebook=notebook, backend=backend,
                    handle=handle, check_drift=False))
            except Exception as exc:  # noqa: BLE001 - adopt the rest; never shut it down
                backend.release(handle)  # type: ignore[attr-defined]
                log.warning("kremote: could not adopt Job %s: %s", meta.get("name"), exc)
                continue
            async with self._lock:
                cluster_id = self._new_id(name, notebook)
                entry = _Entry(ClusterModel(
                    id=cluster_id, name=name, notebook=notebook, backend="kubernetes",
                    count=opts.count, user=self.limits.user, namespace=opts.namespace,
                    group=opts.group, created=handle.started, ttl=opts.ttl, state=RUNNING,
                    deadline=handle.deadline, last_activity=time.time()), opts, cluster)
                entry.started.set()
                self._entries[cluster_id] = entry
            self._add_event(entry, {"reason": "Adopted",
                                    "message": f"Job {meta['name']} taken back after a "
                                               "server restart"})
            self._publish(entry)
            adopted.append(cluster_id)
        if adopted:
            self.start_monitor()
        return adopted

    # -- queries -------------------------------------------------------------------------------
    async def list_clusters(self) -> list[ClusterModel]:
        ids = sorted(self._entries)
        return list(await asyncio.gather(*(self.get(i) for i in ids)))

    async def get(self, cluster_id: str) -> ClusterModel:
        """The cluster as the monitor last saw it (at most ``monitor_interval`` s old)."""
        entry = self._entry(cluster_id)
        self._refresh(entry)
        return dataclasses.replace(entry.model, pods=list(entry.model.pods),
                                   events=list(entry.events))

    async def connection(self, cluster_id: str) -> dict[str, Any]:
        """What a kernel needs to reach the agents itself: key and endpoints (secret!)."""
        entry = self._entry(cluster_id)
        cluster = self._running(entry)
        handle = cluster.handle
        return {"id": cluster_id, "key": base64.b64encode(handle.key).decode(),
                "deadline": handle.deadline,
                "endpoints": [{"rank": e.rank, "host": e.host, "port": e.port,
                               "control_port": e.control_port,
                               "curve_serverkey": e.curve_serverkey.decode()
                               if e.curve_serverkey else None} for e in handle.endpoints]}

    async def events(self, cluster_id: str) -> dict[str, Any]:
        entry = self._entry(cluster_id)
        return {"id": cluster_id, "events": list(entry.events)}

    async def telemetry(self, cluster_id: str) -> dict[str, Any]:
        entry = self._entry(cluster_id)
        return {"id": cluster_id, "interval": self.limits.telemetry_interval,
                "pods": {str(r): list(h) for r, h in sorted(entry.telemetry.items())}}

    async def follow_logs(self, cluster_id: str, rank: Any = 0) -> AsyncIterator[str]:
        """The agent's log so far, then each new chunk until the agent ends."""
        entry = self._entry(cluster_id)
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
            except Exception:  # noqa: BLE001 - EOFError, or the agent is gone
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
        options = dict(options or {})
        runtime = options.pop("runtime", None)
        if runtime is not None and not isinstance(runtime, dict):
            raise BadRequest(f"runtime {runtime!r}: expected the kernel's runtime_info()")
        opts = self._options(options)
        async with self._lock:
            existing = self._find(name, notebook)
            if existing is not None and existing.model.state != ENDED:
                entry = existing
            else:
                self._check_limits(opts)
                cluster_id = existing.model.id if existing else self._new_id(name, notebook)
                entry = _Entry(ClusterModel(
                    id=cluster_id, name=name, notebook=notebook, backend=opts.backend,
                    count=opts.count, gpu=opts.gpu, created=time.time(), ttl=opts.ttl,
                    user=self.limits.user, templates=list(opts.templates),
                    namespace=opts.namespace, group=opts.group, image=opts.image,
                    cpu=opts.cpu, mem=opts.mem), opts, runtime=runtime)
                self._entries[cluster_id] = entry
                self._publish(entry)
                entry.task = asyncio.get_running_loop().create_task(self._start(entry))
                self.start_monitor()
        await entry.started.wait()
        if entry.model.state == ENDED and entry.cluster is None and entry.model.ended_at is None:
            raise StartFailed(entry.model.ended or "the cluster did not start")
        return await self.get(entry.model.id)

    async def _start(self, entry: _Entry) -> None:
        m = entry.model
        backend = self.backend(entry.options.backend)
        try:
            # compared with the asking kernel's Python (not this server's); without it, the
            # kernel compares when it connects
            cluster = await asyncio.to_thread(functools.partial(
                Cluster, m.name, entry.options, self.root, notebook=m.notebook,
                backend=backend, runtime=entry.runtime, check_drift=entry.runtime is not None))
        except BaseException as exc:  # noqa: BLE001 - reported to whoever waits
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            m.state, m.ended = ENDED, f"could not start: {reason}"
            async with self._lock:
                if self._entries.get(m.id) is entry:
                    del self._entries[m.id]
            self.hub.publish({"type": "removed", "id": m.id})
            log.warning("kremote cluster %s %s", m.id, m.ended)
        else:
            entry.cluster = cluster
            m.state, m.deadline = RUNNING, cluster.deadline
            m.last_activity, m.warnings = cluster.last_activity, list(cluster.warnings)
            m.pods = [self._row(entry, r) for r in await asyncio.to_thread(cluster.status, 1.0)]
            self._add_event(entry, {"reason": "Ready", "message": f"{m.count} {m.backend} "
                                    f"agent{'s' if m.count > 1 else ''} ready"})
            self._publish(entry)
            log.info("kremote cluster %s started (%d %s agents)", m.id, m.count, m.backend)
        finally:
            entry.started.set()

    async def extend(self, cluster_id: str, seconds: Any = None,
                     deadline: Any = None) -> ClusterModel:
        """Move the deadline ``seconds`` later, or to ``deadline`` (a Unix time, kernels)."""
        entry = self._entry(cluster_id)
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
        self._add_event(entry, {"reason": "Extended", "message": f"TTL extended by "
                                f"{format_duration(seconds)}", "time": time.time()})
        self._publish(entry)
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
        self.hub.publish({"type": "removed", "id": cluster_id})

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
                    self.hub.publish({"type": "removed", "id": cluster_id})
                continue
            reason = await self._cull_reason(entry, now)
            if reason:
                self._add_event(entry, {"type": "Warning", "reason": "Culled", "message": reason})
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
                self.hub.publish({"type": "ended", "id": m.id, "reason": m.ended})
                self._publish(entry)

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
            self.hub.publish({"type": "ended", "id": entry.model.id, "reason": cluster.ended})
            self._publish(entry)
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
        allowed = self.limits.allowed_templates
        refused = [t for t in opts.templates if allowed and t not in allowed]
        if refused:
            raise OverLimit(f"template {refused[0]!r} is not allowed here; the admin allows "
                            f"{', '.join(allowed)}")
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
        for what, limit, ask, unit in (
                ("CPUs", lim.max_cpu, lambda o: o.cpu, ""),
                ("memory", lim.max_memory, lambda o: o.mem, "B")):
            if not limit:
                continue
            used = sum(parse_quantity(ask(o)) * o.count for o in live if ask(o))
            want_q = parse_quantity(ask(opts)) * opts.count if ask(opts) else 0
            if used + want_q > parse_quantity(limit):
                raise OverLimit(f"{_q(used, unit)} of {limit} {what} allowed in use and this "
                                f"cluster asks for {_q(want_q, unit)}; shut down a cluster or "
                                "ask for less")
        gpus = sum(o.gpu * o.count for o in live)
        want = opts.gpu * opts.count
        if lim.max_gpus and want and gpus + want > lim.max_gpus:
            raise OverLimit(f"{gpus} GPUs in use of {lim.max_gpus} allowed and this cluster "
                            f"asks for {want}; shut down a cluster or ask for fewer")


def _q(value: Any, unit: str) -> str:
    """A quantity for a message: 2 CPUs, 0.5 CPUs, 8GiB."""
    if unit and value >= 2**30:
        return f"{float(value) / 2**30:g}Gi"
    if unit and value >= 2**20:
        return f"{float(value) / 2**20:g}Mi"
    return f"{float(value):g}"


def _whole(value: Any, what: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} {value!r}: expected a whole number") from None
    if number < minimum:
        raise BadRequest(f"{what} {number}: must be at least {minimum}")
    return number
