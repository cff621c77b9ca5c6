"""The hub-wide limits' settings, as traitlets any kremote application class can mix in.

The hub's kremote service inherits :class:`HubLimits`, so that an admin writes, in the
service's config (JupyterHub style)::

    c.KRemoteService.limits = {"max_gpus": 1, "max_clusters": 2, "max_ttl": "8h"}
    c.KRemoteService.group_limits = {"gpu-team": {"max_gpus": 8}}
    c.KRemoteService.user_limits = {"alice": {"max_pods": 32}}
    c.KRemoteService.admin_scope = "custom:kremote:admin"

and the service asks :meth:`HubLimits.limits_for` with each caller's JupyterHub identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from traitlets import Dict, Unicode
from traitlets.config import Configurable

from .policy import LIMIT_KEYS, LimitPolicy, UserLimits, is_admin

_KEYS = ", ".join(LIMIT_KEYS)


class HubLimits(Configurable):
    """Limits per user, overrides per JupyterHub group and per user, and who is an admin."""

    limits = Dict(
        config=True,
        help="Every user's limits ({} = unlimited): keys among " + _KEYS + "; 0, '' and [] "
             "mean unlimited. Example: c.KRemoteService.limits = {'max_gpus': 1, "
             "'max_clusters': 2, 'max_cpu': '16', 'max_memory': '64Gi', 'max_ttl': '8h', "
             "'allowed_templates': ['gpu', 'shm'], 'allowed_images': ['nvcr.io/nvidia/*']}")
    group_limits = Dict(
        config=True,
        help="Overrides per JupyterHub group; a member of several gets the most generous "
             "value of each limit (lists are joined). Example: "
             "c.KRemoteService.group_limits = {'gpu-team': {'max_gpus': 8}}")
    user_limits = Dict(
        config=True,
        help="Overrides per user name; they win over group_limits. Example: "
             "c.KRemoteService.user_limits = {'alice': {'max_pods': 32}}")
    admin_scope = Unicode(
        "custom:kremote:admin", config=True,
        help="A JupyterHub scope whose holders see and shut down every user's clusters, as "
             "JupyterHub admins do ('' = admins only). Define it in "
             "c.JupyterHub.custom_scopes and grant it with a role. "
             "Example: c.KRemoteService.admin_scope = 'custom:kremote:admin'")

    _policy: LimitPolicy | None = None

    @property
    def limit_policy(self) -> LimitPolicy:
        """The validated policy; a bad setting raises ValueError naming it, at start-up."""
        if self._policy is None:
            self._policy = LimitPolicy(self.limits, self.group_limits, self.user_limits,
                                       setting=f"c.{type(self).__name__}")
        return self._policy

    def limits_for(self, identity: Mapping[str, Any]) -> UserLimits:
        """The limits of a JupyterHub identity (``/hub/api/user``'s model: name, groups)."""
        return self.limit_policy.resolve(str(identity.get("name", "")),
                                         identity.get("groups") or ())

    def is_admin(self, identity: Mapping[str, Any]) -> bool:
        return is_admin(identity, self.admin_scope)
