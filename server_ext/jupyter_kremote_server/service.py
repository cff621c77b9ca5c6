"""The kremote service for JupyterHub: one process per hub holds the only Kubernetes rights.

Run it as a JupyterHub service (managed, or its own Deployment)::

    c.JupyterHub.services = [{
        "name": "kremote", "url": "http://127.0.0.1:10101",
        "command": [sys.executable, "-m", "jupyter_kremote_server.service"],
    }]

It answers the server extension's REST API (docs/api.md) under its prefix
(``/services/kremote/kremote/api/v1/``) for JupyterHub-authenticated users: each user sees
only their own clusters (one :class:`~.manager.ClusterManager` per user), admins also the
admin routes. Every user's clusters share the namespace's one set of label-selected watches
(``kube_watch.NamespaceWatch``). On start it adopts every user's running Jobs; while it runs it
culls (TTL, idle, dead agents) and ends a user's clusters once their server has stopped
(:mod:`.owners`). Single-user servers in hub mode forward to it (:mod:`.hub_proxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Any

from tornado import httpserver, web
from traitlets import Bool, Float, Unicode, default
from traitlets.config import Application

from jupyter_kremote.backends import get_backend
from jupyter_kremote.spec import user_namespace

from .hub_limits import HubLimits
from .manager import ClusterManager, Limits
from .owners import OwnerWatch
from .service_handlers import HubAdmins, hub_auth, service_handlers
from .settings import ClusterSettings
from .sweep import Sweep

log = logging.getLogger("jupyter_kremote_server")

#: users whose clusters are adopted at once after a restart (of the 200 users x 2 clusters of
#: bench/hub_scale.py, one after another took minutes)
ADOPT_AT_ONCE = 4


class KRemoteService(ClusterSettings, HubLimits, Application):
    """Every JupyterHub user's clusters, behind ``<prefix>kremote/api/v1/``."""

    name = "jupyter-kremote-service"
    description = __doc__

    config_file = Unicode(
        "", config=True,
        help="A Python config file (c.KRemoteService.* settings). "
             "Example: --KRemoteService.config_file=/etc/kremote/kremote_config.py")
    url = Unicode(
        config=True,
        help="Where the service listens (default $JUPYTERHUB_SERVICE_URL, which JupyterHub "
             "sets from the service's 'url'). Example: c.KRemoteService.url = "
             "'http://0.0.0.0:10101'")
    prefix = Unicode(
        config=True,
        help="The URL prefix the hub's proxy sends to the service (default "
             "$JUPYTERHUB_SERVICE_PREFIX, else /services/kremote/).")
    owner_stopped_grace = Float(
        30.0, config=True,
        help="Seconds a user's clusters outlive their last server before they are shut down "
             "(0 = at the next look; negative = never). "
             "Example: c.KRemoteService.owner_stopped_grace = 120")
    owner_poll_interval = Float(
        5.0, config=True,
        help="Seconds between two looks at the hub's list of running servers. "
             "Example: c.KRemoteService.owner_poll_interval = 10")
    allow_local = Bool(
        False, config=True,
        help="Let users start local agents, which run as processes of this service, with its "
             "rights: for tests and trusted single-user hubs only. "
             "Example: c.KRemoteService.allow_local = False")
    adopt = Bool(
        True, config=True,
        help="On start, take back every user's running clusters (Jobs labelled "
             "managed-by=jupyter-kremote in the namespace).")

    @default("backend")
    def _default_backend(self) -> str:
        return "kubernetes"

    @default("url")
    def _default_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")

    @default("prefix")
    def _default_prefix(self) -> str:
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/kremote/")
        return "/" + prefix.strip("/") + "/"

    managers: dict[str, ClusterManager]

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        self.limit_policy  # noqa: B018 - a bad limit stops the service now, naming it
        self.export_template_settings()
        self.managers = {}
        self.root = os.getcwd()
        self.hub_auth = hub_auth()
        self.owners = OwnerWatch(self)
        self._tasks: list[asyncio.Task] = []
        self.sweep: Sweep | None = None
        self.ready = asyncio.Event()  # set once adoption is done: requests wait for it

    # -- each user's manager -------------------------------------------------------------------
    def manager_for(self, identity: Mapping[str, Any] | str) -> ClusterManager:
        """The user's manager (created on first use), with the user's current limits."""
        if isinstance(identity, str):
            identity = {"name": identity}
        user = str(identity["name"])
        manager = self.managers.get(user)
        if manager is None:
            manager = ClusterManager(Limits(
                backend=self.backend,
                backends=("local", "kubernetes") if self.allow_local else ("kubernetes",),
                namespace=user_namespace(self.namespace, user) or None, user=user,
                idle_cull_seconds=self.idle_cull_seconds, default_ttl=self.default_ttl,
                monitor_interval=self.monitor_interval,
                monitor_idle_interval=self.monitor_idle_interval,
                telemetry_interval=self.telemetry_interval,
                telemetry_history=self.telemetry_history, shared=True), root=self.root)
            self.managers[user] = manager
        if "groups" in identity or "admin" in identity:  # a request: the hub's view now
            self._apply_limits(manager.limits, identity)
        return manager

    def _apply_limits(self, limits: Limits, identity: Mapping[str, Any]) -> None:
        """Copy the user's hub-wide limits (HubLimits) onto the manager's own."""
        resolved = self.limits_for(identity)
        limits.max_clusters, limits.max_pods = resolved.max_clusters, resolved.max_pods
        limits.max_gpus, limits.max_cpu = resolved.max_gpus, resolved.max_cpu
        limits.max_memory, limits.max_ttl = resolved.max_memory, resolved.max_ttl
        limits.allowed_templates = list(resolved.allowed_templates)
        limits.allowed_images = list(resolved.allowed_images)

    # -- start and stop --------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        return web.Application(service_handlers(self.prefix), kremote_service=self,
                               hub_auth=self.hub_auth, kremote_admin=HubAdmins(self))

    async def run(self) -> None:
        """Listen, adopt, cull and watch owners until SIGTERM or SIGINT."""
        parts = urllib.parse.urlsplit(self.url)
        server = httpserver.HTTPServer(self.make_app(), xheaders=True)
        server.listen(parts.port or 80, parts.hostname or "")
        log.info("kremote service on %s%s (backend %s)", self.url.rstrip("/"), self.prefix,
                 self.backend)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.adopt and self.backend == "kubernetes":
            await self.adopt_all()
        self.ready.set()
        self._tasks = [loop.create_task(self._cull_forever()),
                       loop.create_task(self.owners.run())]
        self.start_sweep()
        await stop.wait()
        server.stop()
        await self.close()

    async def adopt_all(self) -> list[str]:
        """Every user's running clusters, taken back (after a restart of the service)."""
        namespace = "" if "{username}" in self.namespace else self.namespace
        try:  # one list for every user (per-user namespaces: each user's first request)
            backend = get_backend("kubernetes")
            jobs = await asyncio.to_thread(backend.find_running, None,  # type: ignore[attr-defined]
                                           namespace or None)
        except Exception as exc:  # noqa: BLE001 - the service must start anyway
            log.warning("kremote: could not look for clusters to adopt: %s", exc)
            return []
        by_user: dict[str, list[dict[str, Any]]] = {}
        for job in jobs:
            user = (job["metadata"].get("annotations") or {}).get("kremote/user-name", "")
            if user:
                by_user.setdefault(user, []).append(job)
        # users side by side (a few at once: each attach holds a worker thread while it
        # reads the cluster's Secret), each user's clusters one after another
        at_once = asyncio.Semaphore(ADOPT_AT_ONCE)

        async def adopt_user(user: str) -> list[str]:
            async with at_once:
                try:
                    # per-user namespaces: the user's manager lists its own namespace
                    ids = await self.manager_for(user).adopt(None if not namespace
                                                             else by_user[user])
                except Exception as exc:  # noqa: BLE001 - one user's failure must not stop the rest
                    log.warning("kremote: could not adopt %s's clusters: %s", user, exc)
                    return []
            return [f"{user}/{i}" for i in ids]

        done = await asyncio.gather(*(adopt_user(u) for u in sorted(by_user)))
        adopted = [name for names in done for name in names]
        if adopted:
            log.info("kremote: adopted %s", ", ".join(adopted))
        return adopted

    def start_sweep(self) -> None:
        """Once adoption is done: every ``sweep_interval`` s, delete kremote's Jobs that no
        user's manager holds and Secrets without their Job (`sweep.py`). Not with one
        namespace per user (each user's manager would have to sweep its own)."""
        if self.backend != "kubernetes" or "{username}" in self.namespace:
            return
        self.sweep = Sweep(get_backend("kubernetes"), self.namespace or None,
                           held=lambda: set().union(*(m.held_jobs()
                                                      for m in list(self.managers.values()))))
        self.sweep.start(self.sweep_interval)

    async def _cull_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cull_interval)
            for user, manager in list(self.managers.items()):
                try:
                    await manager.cull_once()
                except Exception:
                    log.exception("kremote: culling %s's clusters failed", user)

    async def close(self) -> None:
        """Stop the loops; leave Kubernetes clusters running (the next service adopts them)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.sweep is not None:
            await self.sweep.close()
        await asyncio.gather(*(m.close(keep=("kubernetes",)) for m in self.managers.values()),
                             return_exceptions=True)


def allow_many_sockets() -> int:
    """Room for every user's clusters: the soft limit on open files raised to the hard one,
    and ZeroMQ's shared context allowed as many sockets (its default, 1023, ran out at about
    250 clusters: each rank takes a data and a control socket and a handshake monitor).
    Before any socket is made (ZeroMQ reads the setting once). Returns the socket limit."""
    import resource

    import zmq

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    limit = max(1023, min(soft if soft != resource.RLIM_INFINITY else want, 65536) - 64)
    zmq.Context.instance().set(zmq.MAX_SOCKETS, limit)
    return limit


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] "
                        "%(message)s", stream=sys.stderr)
    log.info("kremote service: room for %d ZeroMQ sockets", allow_many_sockets())
    service = KRemoteService()
    service.initialize(argv)
    asyncio.run(service.run())


if __name__ == "__main__":
    main()
