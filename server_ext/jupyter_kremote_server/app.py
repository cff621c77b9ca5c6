"""The jupyter-server extension app: settings (traitlets), the cluster manager, the culler."""

from __future__ import annotations

import asyncio
import contextlib
import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Int, List, Unicode

from .handlers import default_handlers
from .manager import ClusterManager, Limits


class KRemoteApp(ExtensionApp):
    """Clusters of remote agents for this server's user, behind ``/kremote/api/v1/``."""

    name = "jupyter_kremote_server"
    load_other_extensions = True

    backend = Unicode(
        "local", config=True,
        help="Backend of clusters that do not name one: local or kubernetes. "
             "Example: c.KRemoteApp.backend = 'kubernetes'")
    namespace = Unicode(
        "", config=True,
        help="Kubernetes namespace of clusters that do not name one ('' = the kubeconfig's). "
             "Example: c.KRemoteApp.namespace = 'ml-team'")
    template_path = List(
        Unicode(), [], config=True,
        help="Folders of admin pod templates, searched before the builtin ones. "
             "Example: c.KRemoteApp.template_path = ['/etc/jupyter/kremote-templates']")
    default_ttl = Float(
        3600.0, config=True,
        help="TTL in seconds of clusters that do not ask for one. "
             "Example: c.KRemoteApp.default_ttl = 7200")
    max_ttl = Float(
        86400.0, config=True,
        help="Longest lifetime in seconds a cluster may have, extensions included. "
             "Example: c.KRemoteApp.max_ttl = 4 * 3600")
    idle_cull_seconds = Float(
        0.0, config=True,
        help="Shut down clusters whose agents were idle this long (0 = never). "
             "Example: c.KRemoteApp.idle_cull_seconds = 1800")
    cull_interval = Float(
        5.0, config=True,
        help="Seconds between two passes of the culler (TTL, idle, dead agents). "
             "Example: c.KRemoteApp.cull_interval = 10")
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

    manager: ClusterManager
    _culler: asyncio.Task | None = None

    def initialize_settings(self) -> None:
        limits = Limits(max_clusters=self.max_clusters, max_pods=self.max_pods,
                        max_gpus=self.max_gpus, default_ttl=self.default_ttl,
                        max_ttl=self.max_ttl, idle_cull_seconds=self.idle_cull_seconds,
                        backend=self.backend, namespace=self.namespace or None)
        if self.template_path and "KREMOTE_TEMPLATE_PATH" not in os.environ:
            # the Kubernetes backend reads its template folders from the environment
            os.environ["KREMOTE_TEMPLATE_PATH"] = os.pathsep.join(self.template_path)
        root = getattr(self.serverapp, "root_dir", None) or os.getcwd()
        self.manager = ClusterManager(limits, root=root)
        self.settings["kremote_manager"] = self.manager

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        self._culler = asyncio.get_running_loop().create_task(self._cull_forever())

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
        await self.manager.shutdown_all()


_load_jupyter_server_extension = KRemoteApp._load_jupyter_server_extension
