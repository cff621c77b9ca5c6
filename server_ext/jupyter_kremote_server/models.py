"""Plain, JSON-able models returned by the cluster manager, and its errors.

The REST handlers send ``model.to_dict()`` as is; docs/api.md describes each field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: states a cluster goes through, in order
STARTING, RUNNING, ENDED = "starting", "running", "ended"


@dataclass
class ClusterModel:
    """One cluster as the panel sees it.

    Example:
        >>> ClusterModel(id="train-default", name="default", notebook="train.ipynb",
        ...              backend="local", count=1).to_dict()["state"]
        'starting'
    """

    id: str
    name: str
    notebook: str
    backend: str
    count: int
    gpu: int = 0  # per pod
    group: str = "main"  # this record's pod group; a cluster's groups share ``family``
    family: str = ""  # the name of the cluster the group belongs to ("" = ``name``)
    image: str | None = None
    cpu: str | None = None  # per pod, as asked
    mem: str | None = None  # per pod, as asked
    user: str = ""
    templates: list[str] = field(default_factory=list)
    namespace: str | None = None  # Kubernetes only
    state: str = STARTING
    #: while starting, the latest start-up stage (pod stages; on Kueue "queued in <LocalQueue>
    #: (ClusterQueue <cq>), position N: <reason>", then "admitted after ...")
    stage: str | None = None
    #: why Kueue evicted the running cluster while it waits to be admitted again
    #: (``--on-preempt requeue``; state ``starting``); None once its fresh agents answer
    evicted: str | None = None
    created: float = 0.0  # Unix time
    deadline: float | None = None  # Unix time at which the TTL ends; None while starting
    ttl: float = 0.0  # asked for at creation, in seconds
    last_activity: float | None = None  # Unix time
    ended: str | None = None  # why the cluster ended ("its TTL ran out", ...)
    ended_at: float | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)  # Cluster.status() rows
    #: rank 0's services (ports named kremote-<name>) while running: name, port, and path
    #: (``kremote/proxy/<id>/<name>/``, under the server's base URL)
    services: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # newest first

    def __post_init__(self) -> None:
        self.family = self.family or family_of(self.name, self.group)

    def to_dict(self) -> dict[str, Any]:
        """The fields, lists copied one level deep: cheaper than ``asdict``'s deep copy (the
        admin's list of every user's clusters builds hundreds); the rows and events inside
        are never changed once made."""
        return {name: list(value) if isinstance(value, list) else value
                for name, value in ((f, getattr(self, f)) for f in _CLUSTER_FIELDS)}


_CLUSTER_FIELDS = tuple(f.name for f in fields(ClusterModel))


def family_of(name: str, group: str) -> str:
    """The cluster a group's record belongs to: group ``train`` of ``swimmy`` is started as
    ``swimmy-train`` (podgroups.GroupFamily.cluster_name)."""
    suffix = f"-{group}"
    return name[: -len(suffix)] if group != "main" and name.endswith(suffix) else name


@dataclass
class LogsModel:
    """The tail of one agent's own log (start-up, warnings, crashes)."""

    id: str
    rank: int
    tail: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ApiError(Exception):
    """A refusal the user can act on; ``status`` is the HTTP status it maps to."""

    status = 500


class BadRequest(ApiError):
    status = 400


class OverLimit(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """The cluster exists but ended, so it cannot do what was asked."""

    status = 409


class StartFailed(ApiError):
    """The backend could not start the agents; the message says why."""

    status = 500


class Unreachable(ApiError):
    """A service of the cluster cannot be reached (a refused port-forward); says why."""

    status = 502
