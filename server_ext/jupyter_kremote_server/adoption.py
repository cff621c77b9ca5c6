"""Taking back running Kubernetes clusters after a restart of whoever held them.

A cluster's Job carries its name and notebook (annotations) and its user (a label); its
Secret holds the keys. Adoption reads those back, attaches to the running agents and lists
the cluster again. A Job still waiting in Kueue is listed as starting, with where it waits,
and taken back once admitted (a kernel asking for it meanwhile waits, as for its own start).
It never shuts anything down: a cluster it cannot take back is left to its TTL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from jupyter_kremote.manifests import LABEL_GROUP
from jupyter_kremote.session import Cluster, ClusterOptions

from . import services
from .limits import Limits
from .models import RUNNING, STARTING, ClusterModel
from .monitor import Monitor
from .registry import Entry, Registry

log = logging.getLogger("jupyter_kremote_server")


async def adopt(registry: Registry, monitor: Monitor, backend: Any, limits: Limits,
                root: str, jobs: list[dict[str, Any]] | None = None) -> list[str]:
    """Adopt ``limits.user``'s running Jobs (``jobs`` if the caller listed them already);
    returns the new entries' ids."""
    if jobs is None:
        jobs = await asyncio.to_thread(backend.find_running, limits.user,
                                       limits.namespace)
    adopted = []
    for job in jobs:
        meta = job["metadata"]
        notes = meta.get("annotations") or {}
        name = notes.get("kremote/name") or "default"
        notebook = notes.get("kremote/notebook-path", "")
        if registry.find(name, notebook) is not None:
            continue
        queue = backend.queued(job) if hasattr(backend, "queued") else None
        if queue:  # still waiting in Kueue: listed as starting, taken back once admitted
            adopted.append(await _adopt_queued(registry, monitor, backend, limits, root, job,
                                               name, notebook, queue))
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
                Cluster, name, opts, root, notebook=notebook, backend=backend,
                handle=handle, check_drift=False))
        except Exception as exc:  # noqa: BLE001 - adopt the rest; never shut it down
            backend.release(handle)  # type: ignore[attr-defined]
            log.warning("kremote: could not adopt Job %s: %s", meta.get("name"), exc)
            continue
        async with registry.lock:
            entry = Entry(ClusterModel(
                id=registry.new_id(name, notebook), name=name, notebook=notebook,
                backend="kubernetes", count=opts.count, user=limits.user,
                namespace=opts.namespace, group=opts.group, created=handle.started,
                ttl=opts.ttl, state=RUNNING, deadline=handle.deadline,
                last_activity=time.time()), opts, cluster)
            entry.model.services = services.listing(entry.model.id, cluster)
            entry.started.set()
            registry.add(entry)
        monitor.add_event(entry, {"reason": "Adopted",
                                  "message": f"Job {meta['name']} taken back after a "
                                             "server restart"})
        monitor.publish(entry)
        adopted.append(entry.model.id)
    if adopted:
        monitor.start()
    return adopted


async def _adopt_queued(registry: Registry, monitor: Monitor, backend: Any, limits: Limits,
                        root: str, job: dict[str, Any], name: str, notebook: str,
                        queue: str) -> str:
    """List a Job that waits in Kueue as starting, and take it back once admitted."""
    meta, spec = job["metadata"], job.get("spec", {})
    opts = ClusterOptions(count=spec.get("completions") or 1, backend="kubernetes",
                          ttl=spec.get("activeDeadlineSeconds") or 3600, queue=queue,
                          namespace=meta.get("namespace"),
                          group=(meta.get("labels") or {}).get(LABEL_GROUP, "main"))
    async with registry.lock:
        entry = Entry(ClusterModel(
            id=registry.new_id(name, notebook), name=name, notebook=notebook,
            backend="kubernetes", count=opts.count, user=limits.user,
            namespace=opts.namespace, group=opts.group, created=time.time(), ttl=opts.ttl,
            state=STARTING, stage=f"queued in {queue}"), opts)
        registry.add(entry)
    monitor.add_event(entry, {"reason": "Adopted", "message": f"Job {meta['name']} taken "
                              f"back after a server restart, still queued in {queue}"})
    monitor.publish(entry)
    entry.task = asyncio.get_running_loop().create_task(
        _wait_admitted(monitor, backend, root, entry, job))
    return entry.model.id


async def _wait_admitted(monitor: Monitor, backend: Any, root: str, entry: Entry,
                         job: dict[str, Any]) -> None:
    m = entry.model
    loop = asyncio.get_running_loop()

    def progress(line: str) -> None:  # on the waiting thread: hand over to the loop
        loop.call_soon_threadsafe(monitor.stage, entry, line)

    try:
        handle = await asyncio.to_thread(backend.attach_queued, job, progress, entry.cancelled,
                                         entry.keep_queued)
        try:
            cluster = await asyncio.to_thread(functools.partial(
                Cluster, m.name, entry.options, root, notebook=m.notebook, backend=backend,
                handle=handle, check_drift=False))
        except BaseException:
            backend.release(handle)
            raise
    except BaseException as exc:  # noqa: BLE001 - reported to whoever waits
        await monitor.start_failed(entry, exc)
    else:
        await monitor.running(entry, cluster, f"{m.count} kubernetes agent"
                              f"{'s' if m.count > 1 else ''} ready")
    finally:
        entry.started.set()
