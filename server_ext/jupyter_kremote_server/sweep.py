"""The periodic orphan sweep: kremote's Jobs and Secrets on Kubernetes whose owner is gone.

Kubernetes' garbage collector already removes what has a dead owner *reference* (a Job owned
by a deleted notebook pod; the Secret and NetworkPolicy owned by a deleted Job). The sweep
removes what no reference covers:

- a Secret whose Job never came or is gone (the process died between creating the Secret and
  giving it its Job as owner);
- where the caller knows them (the hub's service), a Job whose user no longer exists, and a
  Job of a cluster the service no longer holds once adoption is done.

Jobs are deleted with background propagation, so their pods, Secret and NetworkPolicy go too.
Everything younger than ``grace`` is left alone: a Secret exists briefly before its Job, and a
cluster being started is not yet held.

Example:
    >>> sweep = Sweep(backend, namespace="ml", user="ann")         # doctest: +SKIP
    >>> await sweep.once()                                         # doctest: +SKIP
    Orphans(jobs=[], secrets=['jupyter-kremote-c1-key'])
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from jupyter_kremote.manifests import LABEL_CLUSTER, LABEL_USER, MANAGED_BY
from jupyter_kremote.spec import label_value

log = logging.getLogger("jupyter_kremote_server")

#: seconds a new Secret or Job is left alone (a start in progress)
DEFAULT_GRACE = 120.0


@dataclass
class Orphans:
    """What one pass found (and deleted): names of Jobs and Secrets."""

    jobs: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)


def find_orphans(jobs: list[dict[str, Any]], secrets: list[dict[str, Any]], *, now: float,
                 grace: float = DEFAULT_GRACE, held: set[str] | None = None,
                 users: set[str] | None = None) -> Orphans:
    """The orphans among kremote's ``jobs`` and ``secrets`` (API objects as dicts).

    ``held``: the names of the Jobs the caller holds (None: unknown, no Job is judged by it);
    ``users``: the user labels that still exist (None: unknown).
    """
    def labels(obj: dict[str, Any]) -> dict[str, str]:
        return obj["metadata"].get("labels") or {}

    def settled(obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return not meta.get("deletionTimestamp") and now - _created(meta) >= grace

    found = Orphans()
    user_labels = None if users is None else {label_value(u) for u in users}
    live_clusters = set()
    for job in jobs:
        lab = labels(job)
        gone_user = user_labels is not None and lab.get(LABEL_USER) not in user_labels
        not_held = held is not None and job["metadata"]["name"] not in held
        if settled(job) and (gone_user or not_held):
            found.jobs.append(job["metadata"]["name"])
        elif not job["metadata"].get("deletionTimestamp"):
            live_clusters.add(lab.get(LABEL_CLUSTER))
    for secret in secrets:
        if settled(secret) and labels(secret).get(LABEL_CLUSTER) not in live_clusters:
            found.secrets.append(secret["metadata"]["name"])
    return found


def _created(meta: dict[str, Any]) -> float:
    text = meta.get("creationTimestamp")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else 0.0


class Sweep:
    """Finds and deletes orphans in one namespace, once or every ``interval`` seconds.

    ``user`` limits it to one user's objects (a single-user server); the hub's service passes
    None with ``held`` and ``users`` callables.
    """

    def __init__(self, backend: Any, namespace: str | None = None, *, user: str | None = None,
                 grace: float = DEFAULT_GRACE, held: Callable[[], set[str] | None] | None = None,
                 users: Callable[[], Awaitable[set[str] | None]] | None = None) -> None:
        self.backend = backend
        self.namespace = namespace
        self.user = user
        self.grace = grace
        self.held = held
        self.users = users
        self._task: asyncio.Task | None = None

    async def once(self) -> Orphans:
        import time

        users = await self.users() if self.users else None
        held = self.held() if self.held else None
        kl = self.backend.kube
        ns = self.namespace or self.backend.settings.namespace or kl.namespace
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        if self.user is not None:
            selector += f",{LABEL_USER}={label_value(self.user)}"
        jobs, secrets = await asyncio.wrap_future(kl.spawn(_list(kl, ns, selector)))
        found = find_orphans(jobs, secrets, now=time.time(), grace=self.grace, held=held,
                             users=users)
        if found.jobs or found.secrets:
            await asyncio.wrap_future(kl.spawn(_delete(kl, ns, found)))
            log.info("kremote: swept orphans in %s: %s", ns,
                     ", ".join([*(f"job/{n}" for n in found.jobs),
                                *(f"secret/{n}" for n in found.secrets)]))
        return found

    def start(self, interval: float) -> None:
        """Sweep every ``interval`` seconds until `close` (errors are logged, never fatal)."""
        if interval > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._forever(interval))

    async def _forever(self, interval: float) -> None:
        while True:
            try:
                await self.once()
            except Exception as exc:  # noqa: BLE001 - the next pass tries again
                from jupyter_kremote.backends.kube_api import api_message

                log.warning("kremote: orphan sweep failed: %s", api_message(exc))
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


async def _list(kl: Any, ns: str, selector: str) -> tuple[list[dict], list[dict]]:
    from jupyter_kremote.backends.kube_api import retry

    async def items(call: Callable[[], Awaitable[Any]], what: str) -> list[dict]:
        res = await retry(call, what)
        assert res is not None  # without ok_status, retry raises rather than return None
        return json.loads(await res.read()).get("items", [])

    jobs = await items(lambda: kl.batch.list_namespaced_job(
        ns, label_selector=selector, _preload_content=False), "list Jobs")
    secrets = await items(lambda: kl.core.list_namespaced_secret(
        ns, label_selector=selector, _preload_content=False), "list Secrets")
    return jobs, secrets


async def _delete(kl: Any, ns: str, found: Orphans) -> None:
    from kubernetes_asyncio import client

    from jupyter_kremote.backends.kube_api import retry

    opts = client.V1DeleteOptions(propagation_policy="Background")
    for name in found.jobs:
        await retry(partial(kl.batch.delete_namespaced_job, name, ns, body=opts),
                    "delete Job", ok_status=(404,))
    for name in found.secrets:
        await retry(partial(kl.core.delete_namespaced_secret, name, ns),
                    "delete Secret", ok_status=(404,))
