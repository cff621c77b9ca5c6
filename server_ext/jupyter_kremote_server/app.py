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
from .manager import ClusterManager, Limits
from .proxy import default_handlers as proxy_handlers


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
        help="Kubernetes namespace of clusters that do not name one ('' = the kubeconfig's); "
             "{username} is replaced by the user name made DNS-safe (lower case, a short hash "
             "when changed), for per-user namespaces. "
             "Example: c.KRemoteApp.namespace = 'kremote-{username}'")
    template_path = List(
        Unicode(), [], config=True,
        help="Folders of admin pod templates, searched before the builtin ones. "
             "Example: c.KRemoteApp.template_path = ['/etc/jupyter/kremote-templates']")
    template_configmap = Unicode(
        "", config=True,
        help="A ConfigMap in the cluster's namespace whose keys NAME.yaml are templates users "
             "name with -t NAME (searched after template_path, before the builtins). "
             "Example: c.KRemoteApp.template_configmap = 'kremote-templates'")
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
    monitor_interval = Float(
        0.5, config=True,
        help="Seconds between two looks at the pods, events and agents for the live view. "
             "Example: c.KRemoteApp.monitor_interval = 1.0")
    telemetry_interval = Float(
        2.0, config=True,
        help="Seconds between two telemetry samples (CPU, memory, GPU) of each agent. "
             "Example: c.KRemoteApp.telemetry_interval = 5")
    telemetry_history = Int(
        150, config=True,
        help="Telemetry samples kept per pod for the panel's sparklines. "
             "Example: c.KRemoteApp.telemetry_history = 300")

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
                        telemetry_interval=self.telemetry_interval,
                        telemetry_history=self.telemetry_history)
        if self.template_path and "KREMOTE_TEMPLATE_PATH" not in os.environ:
            # the Kubernetes backend reads its template folders from the environment
            os.environ["KREMOTE_TEMPLATE_PATH"] = os.pathsep.join(self.template_path)
        if self.template_configmap and "KREMOTE_TEMPLATE_CONFIGMAP" not in os.environ:
            os.environ["KREMOTE_TEMPLATE_CONFIGMAP"] = self.template_configmap
        root = getattr(self.serverapp, "root_dir", None) or os.getcwd()
        self.manager = ClusterManager(limits, root=root)
        self.settings["kremote_manager"] = self.manager
        self.settings["kremote_admin"] = SingleUser(self.user, self.manager)

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers + admin_handlers + proxy_handlers)

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        _stop_on_sigint(serverapp)
        self._culler = asyncio.get_running_loop().create_task(self._cull_forever())
        if self.adopt and self.backend == "kubernetes":
            try:
                adopted = await self.manager.adopt()
            except Exception as exc:  # noqa: BLE001 - the server must start anyway
                self.log.warning("kremote: could not look for clusters to adopt: %s", exc)
            else:
                if adopted:
                    self.log.info("kremote: adopted %s", ", ".join(adopted))

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
    this extension holds outlive their server.
    """
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, serverapp._signal_stop)


_load_jupyter_server_extension = KRemoteApp._load_jupyter_server_extension
