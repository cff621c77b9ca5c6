"""The jupyter-server extension app: settings (traitlets), the cluster manager, the culler."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import threading

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, List, Unicode, default

from jupyter_kremote.spec import user_namespace

from .admin import SingleUser, admin_handlers
from .handlers import default_handlers
from .hub_proxy import HubService, forward_handlers
from .manager import ClusterManager, Limits
from .proxy import default_handlers as proxy_handlers
from .settings import ClusterSettings


class KRemoteApp(ClusterSettings, ExtensionApp):
    """Clusters of remote agents for this server's user, behind ``/kremote/api/v1/``."""

    name = "jupyter_kremote_server"
    load_other_extensions = True

    max_ttl = Float(
        86400.0, config=True,
        help="Longest lifetime in seconds a cluster may have, extensions included. "
             "Example: c.KRemoteApp.max_ttl = 4 * 3600")
    max_clusters = Int(
        0, config=True,
        help="Most clusters the user may hold at once (0 = unlimited). "
             "Example: c.KRemoteApp.max_clusters = 3")
    max_pods = Int(
        0, config=True,
        help="Most pods (agents) the user may hold at once, over all clusters (0 = unlimited). "
             "Example: c.KRemoteApp.max_pods = 8")
    max_gpus = Int(
        0, config=True,
        help="Most GPUs the user may hold at once, over all clusters (0 = unlimited). "
             "Example: c.KRemoteApp.max_gpus = 4")

    max_cpu = Unicode(
        "", config=True,
        help="Most CPU the user may request at once, over all pods ('' = unlimited). "
             "Example: c.KRemoteApp.max_cpu = '16'")
    max_memory = Unicode(
        "", config=True,
        help="Most memory the user may request at once, over all pods ('' = unlimited). "
             "Example: c.KRemoteApp.max_memory = '64Gi'")
    allowed_templates = List(
        Unicode(), [], config=True,
        help="Templates users may name with -t ([] = any). "
             "Example: c.KRemoteApp.allowed_templates = ['gpu', 'shm']")
    allowed_images = List(
        Unicode(), [], config=True,
        help="Images users may ask for with --image, as patterns with * and ? ([] = any). "
             "Example: c.KRemoteApp.allowed_images = ['python:3.11*', 'nvcr.io/nvidia/*']")
    user = Unicode(
        config=True,
        help="Whose clusters this server shows and labels (default: $JUPYTERHUB_USER, else "
             "the login name). Example: c.KRemoteApp.user = 'alice'")
    adopt = Bool(
        True, config=True,
        help="On start, take back this user's running Kubernetes clusters (labelled with the "
             "user) that a previous server left. Example: c.KRemoteApp.adopt = False")
    keep_on_exit = List(
        Unicode(), ["kubernetes"], config=True,
        help="Backends whose clusters outlive a server stop (their TTL still ends them; the "
             "next server adopts them). Local agents always stop with the server. "
             "Example: c.KRemoteApp.keep_on_exit = []")

    service_url = Unicode(
        config=True,
        help="Hub mode: the hub's kremote service (its URL with its prefix), to which this "
             "server forwards every cluster operation with its own JupyterHub token; used "
             "only under JupyterHub ($JUPYTERHUB_API_TOKEN set). Default $KREMOTE_SERVICE_URL; "
             "'' = this server holds its user's clusters itself. "
             "Example: c.KRemoteApp.service_url = 'http://hub:10101/services/kremote/'")

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("KREMOTE_SERVICE_URL", "")

    @property
    def hub_service(self) -> HubService | None:
        """The service this server forwards to (hub mode), or None."""
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not (self.service_url and token):
            return None
        return HubService(self.service_url.rstrip("/") + "/", token)

    @default("user")
    def _default_user(self) -> str:
        return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()

    manager: ClusterManager
    _culler: asyncio.Task | None = None

    def initialize_settings(self) -> None:
        if "local" in self.keep_on_exit:
            raise ValueError("c.KRemoteApp.keep_on_exit: local agents stop with the server; "
                             "remove 'local'")
        limits = Limits(max_clusters=self.max_clusters, max_pods=self.max_pods,
                        max_gpus=self.max_gpus, max_cpu=self.max_cpu,
                        max_memory=self.max_memory,
                        allowed_templates=list(self.allowed_templates),
                        allowed_images=list(self.allowed_images),
                        default_ttl=self.default_ttl,
                        max_ttl=self.max_ttl, idle_cull_seconds=self.idle_cull_seconds,
                        backend=self.backend,
                        namespace=user_namespace(self.namespace, self.user) or None,
                        user=self.user, monitor_interval=self.monitor_interval,
                        monitor_idle_interval=self.monitor_idle_interval,
                        telemetry_interval=self.telemetry_interval,
                        telemetry_history=self.telemetry_history)
        self.export_template_settings()
        root = getattr(self.serverapp, "root_dir", None) or os.getcwd()
        self.manager = ClusterManager(limits, root=root)
        self.settings["kremote_manager"] = self.manager
        self.settings["kremote_hub_service"] = self.hub_service
        self.settings["kremote_admin"] = SingleUser(self.user, self.manager)

    def initialize_handlers(self) -> None:
        service = self.hub_service
        if service is not None:
            self.handlers.extend(forward_handlers + proxy_handlers)
            self.log.info("kremote: hub mode, clusters held by the service at %s", service.url)
        else:
            self.handlers.extend(default_handlers + admin_handlers + proxy_handlers)

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        _stop_on_sigint(serverapp)
        self._culler = asyncio.get_running_loop().create_task(self._cull_forever())
        if self.adopt and self.backend == "kubernetes" and self.hub_service is None:
            try:
                adopted = await self.manager.adopt()
            except Exception as exc:  # noqa: BLE001 - the server must start anyway
                self.log.warning("kremote: could not look for clusters to adopt: %s", exc)
            else:
                if adopted:
                    self.log.info("kremote: adopted %s", ", ".join(adopted))
        if self.backend == "kubernetes" and self.hub_service is None:
            self.manager.start_sweep(self.sweep_interval)

    async def _cull_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cull_interval)
            try:
                await self.manager.cull_once()
            except Exception:
                self.log.exception("kremote: culling failed")

    async def stop_extension(self) -> None:
        if self._culler is not None:
            self._culler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._culler
            self._culler = None
        await self.manager.close(keep=tuple(self.keep_on_exit))
        self.log.info("kremote: stopped (clusters shut down, except %s ones, which are kept)",
                      ", ".join(self.keep_on_exit) or "no")


def _stop_on_sigint(serverapp) -> None:
    """Make SIGINT stop the server the way SIGTERM does, through its cleanup.

    jupyter_server installs its own SIGINT handler only when stdin is a tty. Without one (a
    server spawned by JupyterHub, which stops it with SIGINT), SIGINT raises
    KeyboardInterrupt out of the event loop, ``stop_extension`` never runs, and the clusters
    this extension holds outlive their server. A server that inherited SIGINT ignored (a
    hub started in the background by a non-interactive shell) gets the handler too, or the
    hub's stop would wait for its SIGTERM.
    """
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) in (signal.default_int_handler,
                                                    signal.SIG_IGN)):
        signal.signal(signal.SIGINT, serverapp._signal_stop)


_load_jupyter_server_extension = KRemoteApp._load_jupyter_server_extension
