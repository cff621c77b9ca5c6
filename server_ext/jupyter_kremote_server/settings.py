"""Settings that the Jupyter server extension and the hub's kremote service share.

Both applications mix :class:`ClusterSettings` in, so ``c.KRemoteApp.backend`` (a server)
and ``c.KRemoteService.backend`` (the service) name the same setting.
"""

from __future__ import annotations

import os

from traitlets import Float, Int, List, Unicode
from traitlets.config import Configurable


class ClusterSettings(Configurable):
    """Where clusters run and how they are watched and culled."""

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

    idle_cull_seconds = Float(
        0.0, config=True,
        help="Shut down clusters whose agents were idle this long (0 = never). "
             "Example: c.KRemoteApp.idle_cull_seconds = 1800")

    cull_interval = Float(
        5.0, config=True,
        help="Seconds between two passes of the culler (TTL, idle, dead agents). "
             "Example: c.KRemoteApp.cull_interval = 10")

    monitor_interval = Float(
        0.5, config=True,
        help="Seconds between two looks at the pods, events and agents for the live view. "
             "Example: c.KRemoteApp.monitor_interval = 1.0")

    monitor_idle_interval = Float(
        30.0, config=True,
        help="Seconds between two pings of a user's agents while no panel of theirs is open "
             "(whether a cluster ended is still seen every monitor_interval, from the "
             "watches). Example: c.KRemoteApp.monitor_idle_interval = 60")

    telemetry_interval = Float(
        2.0, config=True,
        help="Seconds between two telemetry samples (CPU, memory, GPU) of each agent. "
             "Example: c.KRemoteApp.telemetry_interval = 5")

    sweep_interval = Float(
        300.0, config=True,
        help="Seconds between two sweeps for orphaned Kubernetes objects (a cluster's key "
             "Secret whose Job is gone; for the hub's service also Jobs of gone users or no "
             "longer held); 0 turns it off. Example: c.KRemoteApp.sweep_interval = 60")

    telemetry_history = Int(
        150, config=True,
        help="Telemetry samples kept per pod for the panel's sparklines. "
             "Example: c.KRemoteApp.telemetry_history = 300")

    def export_template_settings(self) -> None:
        """The Kubernetes backend reads its template folders and ConfigMap from the
        environment; an explicit environment wins."""
        if self.template_path and "KREMOTE_TEMPLATE_PATH" not in os.environ:
            os.environ["KREMOTE_TEMPLATE_PATH"] = os.pathsep.join(self.template_path)
        if self.template_configmap and "KREMOTE_TEMPLATE_CONFIGMAP" not in os.environ:
            os.environ["KREMOTE_TEMPLATE_CONFIGMAP"] = self.template_configmap
