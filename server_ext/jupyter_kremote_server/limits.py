"""What one user may hold, and the checks that refuse a request before anything starts.

A refusal is one :class:`~.models.OverLimit` line naming the limit, what is in use and what
to do; nothing is created. The checks themselves are :mod:`.policy`'s, shared with the hub's
kremote service, which passes each caller's limits (per user and JupyterHub group) instead of
this server's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jupyter_kremote.session import ClusterOptions

from .models import BadRequest, ClusterModel, OverLimit, family_of
from .policy import UserLimits, check_allowed, check_start

#: request fields that map onto ClusterOptions
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(ClusterOptions))
_FILE_SUFFIXES = (".yaml", ".yml")  # a -t name with one is looked for as a file first


@dataclass
class Limits:
    """What one user may hold at once; 0 means unlimited."""

    max_clusters: int = 0
    max_pods: int = 0
    max_gpus: int = 0
    max_cpu: str = ""  # a quantity over all pods ("16", "8000m"); "" = unlimited
    max_memory: str = ""  # a quantity over all pods ("64Gi"); "" = unlimited
    allowed_templates: list[str] = field(default_factory=list)  # [] = any
    allowed_images: list[str] = field(default_factory=list)  # patterns with * and ?; [] = any
    default_ttl: float = 3600.0
    max_ttl: float = 86400.0
    idle_cull_seconds: float = 0.0  # 0: never cull idle clusters
    backend: str = "local"
    backends: tuple[str, ...] = ("local", "kubernetes")  # what users may ask for
    namespace: str | None = None
    user: str = "user"  # clusters are labelled with it; other users' are invisible
    monitor_interval: float = 0.5  # seconds between looks at pods, events and agents
    monitor_idle_interval: float = 30.0  # between pings of agents no panel watches
    telemetry_interval: float = 2.0
    telemetry_history: int = 150
    #: the hub's service: requests come from users' own servers, so their files, their
    #: namespace and a port-forward to this process are not theirs to choose
    shared: bool = False

    def user_limits(self) -> UserLimits:
        """This server's limits for its one user, as the policy checks them."""
        return UserLimits(max_clusters=self.max_clusters, max_pods=self.max_pods,
                          max_gpus=self.max_gpus, max_cpu=self.max_cpu,
                          max_memory=self.max_memory, max_ttl=self.max_ttl,
                          allowed_templates=tuple(self.allowed_templates),
                          allowed_images=tuple(self.allowed_images))


def parse_options(fields: dict[str, Any], limits: Limits,
                  allowed: UserLimits | None = None) -> ClusterOptions:
    """A request's fields as ClusterOptions, with the defaults; BadRequest or OverLimit.

    ``allowed``: the caller's limits (the hub's service), else this server's own.
    """
    unknown = sorted(set(fields) - set(OPTION_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; expected name, notebook or one of "
                         f"{', '.join(OPTION_FIELDS)}")
    values = {k: v for k, v in fields.items() if v is not None}
    values.setdefault("backend", limits.backend)
    values.setdefault("ttl", limits.default_ttl)
    if limits.namespace and values["backend"] == "kubernetes":
        values.setdefault("namespace", limits.namespace)
    if limits.shared:
        _check_shared(values, limits)
    if values["backend"] not in ("local", "kubernetes"):
        raise BadRequest(f"backend {values['backend']!r}: expected local or kubernetes")
    if values["backend"] not in limits.backends:
        raise OverLimit(f"backend {values['backend']!r} is not offered here; use "
                        f"--backend {' or '.join(limits.backends)} (or KREMOTE_BACKEND)")
    try:
        opts = ClusterOptions(**values)
        opts.to_spec()  # validates every field, naming the option
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(str(exc).splitlines()[0]) from None
    check_allowed(limits.user, allowed or limits.user_limits(), opts)
    return opts


def _check_shared(values: dict[str, Any], limits: Limits) -> None:
    """What the hub's service refuses whatever the limits: a template read from its own
    disk (a user's ``-t ./file.yaml`` is on their server, not here), another namespace
    than the user's, and agents reached through this process's port-forward listeners."""
    for name in values.get("templates") or []:
        if isinstance(name, str) and (name.endswith(_FILE_SUFFIXES) or "/" in name
                                      or "\\" in name) and not name.startswith("configmap:"):
            raise BadRequest(f"template {name!r} is a file: the hub's kremote service reads "
                             "no files of yours; use a template your admin offers (by name) "
                             "or configmap:NAME/KEY")
    ns = values.get("namespace")
    if values.get("backend") == "kubernetes" and ns and ns != limits.namespace:
        raise BadRequest(f"namespace {ns!r}: clusters of {limits.user} run in "
                         f"{limits.namespace or 'the service namespace'}; leave --namespace out")
    if values.get("connect") == "port-forward":
        raise BadRequest("--connect port-forward: the hub's service reaches agents directly "
                         "and cannot forward ports to your server; leave --connect out")


def check_limits(user: str, allowed: UserLimits, held: Iterable[ClusterModel],
                 opts: ClusterOptions, name: str, notebook: str) -> None:
    """Raise OverLimit if starting cluster ``name`` of ``notebook`` with ``opts`` on top of
    the ``held`` clusters passes one of ``allowed`` (a new group of a held cluster counts once
    as a cluster)."""
    check_start(user, allowed, opts, list(held), notebook=notebook,
                family=family_of(name, opts.group))
