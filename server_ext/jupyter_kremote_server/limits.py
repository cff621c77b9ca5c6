"""What one user may hold, and the checks that refuse a request before anything starts.

A refusal is one :class:`~.models.OverLimit` line naming the limit, what is in use and what
to do; nothing is created.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jupyter_kremote.session import ClusterOptions
from jupyter_kremote.spec import format_duration, parse_quantity

from .models import BadRequest, OverLimit

#: request fields that map onto ClusterOptions
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(ClusterOptions))


@dataclass
class Limits:
    """What one user may hold at once; 0 means unlimited."""

    max_clusters: int = 0
    max_pods: int = 0
    max_gpus: int = 0
    max_cpu: str = ""  # a quantity over all pods ("16", "8000m"); "" = unlimited
    max_memory: str = ""  # a quantity over all pods ("64Gi"); "" = unlimited
    allowed_templates: list[str] = field(default_factory=list)  # [] = any
    default_ttl: float = 3600.0
    max_ttl: float = 86400.0
    idle_cull_seconds: float = 0.0  # 0: never cull idle clusters
    backend: str = "local"
    namespace: str | None = None
    user: str = "user"  # clusters are labelled with it; other users' are invisible
    monitor_interval: float = 0.5  # seconds between looks at pods, events and agents
    telemetry_interval: float = 2.0
    telemetry_history: int = 150


def parse_options(fields: dict[str, Any], limits: Limits) -> ClusterOptions:
    """A request's fields as ClusterOptions, with the defaults; BadRequest or OverLimit."""
    unknown = sorted(set(fields) - set(OPTION_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; expected name, notebook or one of "
                         f"{', '.join(OPTION_FIELDS)}")
    values = {k: v for k, v in fields.items() if v is not None}
    values.setdefault("backend", limits.backend)
    values.setdefault("ttl", limits.default_ttl)
    if limits.namespace and values["backend"] == "kubernetes":
        values.setdefault("namespace", limits.namespace)
    if values["backend"] not in ("local", "kubernetes"):
        raise BadRequest(f"backend {values['backend']!r}: expected local or kubernetes")
    try:
        opts = ClusterOptions(**values)
        opts.to_spec()  # validates every field, naming the option
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadRequest(str(exc).splitlines()[0]) from None
    allowed = limits.allowed_templates
    refused = [t for t in opts.templates if allowed and t not in allowed]
    if refused:
        raise OverLimit(f"template {refused[0]!r} is not allowed here; the admin allows "
                        f"{', '.join(allowed)}")
    if opts.ttl > limits.max_ttl:
        raise OverLimit(f"ttl {format_duration(opts.ttl)} is more than the "
                        f"{format_duration(limits.max_ttl)} allowed; ask for less")
    return opts


def check_limits(limits: Limits, held: Iterable[ClusterOptions], opts: ClusterOptions) -> None:
    """Raise OverLimit if starting ``opts`` on top of the ``held`` clusters passes a limit."""
    live = list(held)
    lim = limits
    if lim.max_clusters and len(live) + 1 > lim.max_clusters:
        raise OverLimit(f"{len(live)} clusters running of {lim.max_clusters} allowed; "
                        "shut down a cluster first")
    pods = sum(o.count for o in live)
    if lim.max_pods and pods + opts.count > lim.max_pods:
        raise OverLimit(f"{pods} pods in use of {lim.max_pods} allowed and this cluster "
                        f"asks for {opts.count}; shut down a cluster or ask for fewer")
    for what, limit, ask, unit in (
            ("CPUs", lim.max_cpu, lambda o: o.cpu, ""),
            ("memory", lim.max_memory, lambda o: o.mem, "B")):
        if not limit:
            continue
        used = sum(parse_quantity(ask(o)) * o.count for o in live if ask(o))
        want_q = parse_quantity(ask(opts)) * opts.count if ask(opts) else 0
        if used + want_q > parse_quantity(limit):
            raise OverLimit(f"{_q(used, unit)} of {limit} {what} allowed in use and this "
                            f"cluster asks for {_q(want_q, unit)}; shut down a cluster or "
                            "ask for less")
    gpus = sum(o.gpu * o.count for o in live)
    want = opts.gpu * opts.count
    if lim.max_gpus and want and gpus + want > lim.max_gpus:
        raise OverLimit(f"{gpus} GPUs in use of {lim.max_gpus} allowed and this cluster "
                        f"asks for {want}; shut down a cluster or ask for fewer")


def _q(value: Any, unit: str) -> str:
    """A quantity for a message: 2 CPUs, 0.5 CPUs, 8GiB."""
    if unit and value >= 2**30:
        return f"{float(value) / 2**30:g}Gi"
    if unit and value >= 2**20:
        return f"{float(value) / 2**20:g}Mi"
    return f"{float(value):g}"
