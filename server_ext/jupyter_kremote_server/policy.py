"""Who may hold what: limits per user, overrides per JupyterHub group, and the checks.

Pure (no I/O, no asyncio), so the single-user extension and the hub's kremote service apply
the same rules and tests drive them directly. Limits are read from traitlets such as::

    c.KRemoteService.limits = {"max_gpus": 1, "max_clusters": 2, "max_ttl": "8h"}
    c.KRemoteService.group_limits = {"gpu-team": {"max_gpus": 8, "allowed_images": ["nvcr.io/*"]}}
    c.KRemoteService.user_limits = {"alice": {"max_gpus": 0}}   # 0 = unlimited

Precedence, limit by limit: the user's own entry in ``user_limits``, else the most generous
value among the user's groups in ``group_limits`` (0 / "" / [] mean unlimited and win; lists
of templates and images are joined), else ``limits``, else unlimited (``max_ttl``: 24 h).

Example:
    >>> policy = LimitPolicy({"max_gpus": 1}, {"gpu-team": {"max_gpus": 4}})
    >>> policy.resolve("alice", ["gpu-team"]).max_gpus, policy.resolve("bob", []).max_gpus
    (4, 1)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any, Protocol

from jupyter_kremote.spec import SpecError, format_duration, parse_duration, parse_quantity

from .models import ENDED, OverLimit

#: the longest lifetime when nothing says otherwise
DEFAULT_MAX_TTL = 86400.0


@dataclass(frozen=True)
class UserLimits:
    """What one user may hold at once; 0, "" and () mean unlimited."""

    max_clusters: int = 0
    max_pods: int = 0
    max_gpus: int = 0
    max_cpu: str = ""  # a quantity over all pods ("16", "8000m")
    max_memory: str = ""  # a quantity over all pods ("64Gi")
    max_ttl: float = DEFAULT_MAX_TTL  # seconds from creation, extensions included
    allowed_templates: tuple[str, ...] = ()  # names users may pass with -t
    allowed_images: tuple[str, ...] = ()  # patterns with * and ? ("nvcr.io/nvidia/*")


LIMIT_KEYS = tuple(f.name for f in fields(UserLimits))


class Ask(Protocol):
    """What a new cluster (one pod group) asks for: ClusterOptions has these fields."""

    count: int
    gpu: int
    cpu: str | None
    mem: str | None
    ttl: float
    templates: list[str]
    image: str | None


class Held(Protocol):
    """A cluster record the user holds: ClusterModel has these fields."""

    id: str
    notebook: str
    family: str
    state: str
    count: int
    gpu: int
    cpu: str | None
    mem: str | None


def parse_limits(data: Any, where: str) -> dict[str, Any]:
    """Validate one limits mapping from the config; returns the keys it sets, typed.

    ``where`` names the setting in errors, e.g. ``c.KRemoteService.group_limits['gpu-team']``.
    """
    if not isinstance(data, Mapping):  # a config error, like the others: ValueError
        raise ValueError(  # noqa: TRY004
            f"{where}: expected a dict of limits such as {{'max_gpus': 2}}, not {data!r}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in LIMIT_KEYS:
            raise ValueError(f"{where}: unknown limit {key!r}; expected one of "
                             f"{', '.join(LIMIT_KEYS)}")
        out[key] = _parse_one(key, value, f"{where}[{key!r}]")
    return out


def _parse_one(key: str, value: Any, where: str) -> Any:
    if key in ("max_clusters", "max_pods", "max_gpus"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: expected a whole number >= 0 (0 = unlimited), "
                             f"not {value!r}")
        return value
    if key in ("max_cpu", "max_memory"):
        if value in ("", 0, None):
            return ""
        try:
            parse_quantity(value)
        except SpecError:
            raise ValueError(f"{where}: expected a Kubernetes quantity such as "
                             f"{'16 or 8000m' if key == 'max_cpu' else '64Gi'}, "
                             f"not {value!r}") from None
        return str(value)
    if key == "max_ttl":
        try:
            seconds = parse_duration(value, where)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        if seconds <= 0:
            raise ValueError(f"{where}: expected a positive duration such as 8h, not {value!r}")
        return seconds
    if isinstance(value, str) or not isinstance(value, Iterable) or not all(
            isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: expected a list of names ([] = any), not {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class LimitPolicy:
    """Every user's limits (``default``), overridden per group, then per user."""

    default: Mapping[str, Any]
    groups: Mapping[str, Mapping[str, Any]] = None  # type: ignore[assignment]
    users: Mapping[str, Mapping[str, Any]] = None  # type: ignore[assignment]
    setting: str = "c.KRemoteService"  # how errors name the config

    def __post_init__(self) -> None:
        s = self.setting
        object.__setattr__(self, "default", parse_limits(self.default, f"{s}.limits"))
        for attr, label in (("groups", "group_limits"), ("users", "user_limits")):
            table = getattr(self, attr) or {}
            if not isinstance(table, Mapping):
                raise ValueError(  # noqa: TRY004 - a config error, like the others
                    f"{s}.{label}: expected a dict of name -> limits, not {table!r}")
            object.__setattr__(self, attr, {name: parse_limits(v, f"{s}.{label}[{name!r}]")
                                            for name, v in table.items()})

    def resolve(self, user: str, groups: Iterable[str] = ()) -> UserLimits:
        """The limits that apply to ``user``, a member of ``groups`` (JupyterHub's names)."""
        values: dict[str, Any] = dict(self.default)
        overrides = [self.groups[g] for g in sorted(set(groups)) if g in self.groups]
        for key in LIMIT_KEYS:
            given = [o[key] for o in overrides if key in o]
            if given:
                values[key] = _most_generous(key, given)
        values.update(self.users.get(user, {}))
        return replace(UserLimits(), **values)


def _most_generous(key: str, values: list[Any]) -> Any:
    if key.startswith("allowed_"):
        if any(not v for v in values):
            return ()
        return tuple(dict.fromkeys(x for v in values for x in v))
    if any(not v for v in values):  # 0 or "" = unlimited (max_ttl is always set)
        return 0 if key not in ("max_cpu", "max_memory") else ""
    if key in ("max_cpu", "max_memory"):
        return max(values, key=parse_quantity)
    return max(values)


# -- the checks ------------------------------------------------------------------------------
def check_start(user: str, limits: UserLimits, ask: Ask, held: Sequence[Held],
                notebook: str = "", family: str = "") -> None:
    """Raise OverLimit (one line: the limit, what is in use, what to do) if ``ask`` may not
    start next to the clusters ``held``; ``notebook`` and ``family`` say which cluster a new
    pod group joins (a cluster of several groups counts once)."""
    check_allowed(user, limits, ask)
    live = [h for h in held if h.state != ENDED]
    families = sorted({(h.notebook, h.family) for h in live})
    joins = (notebook, family) in families
    if limits.max_clusters and not joins and len(families) + 1 > limits.max_clusters:
        raise OverLimit(f"{user}: cluster limit {limits.max_clusters} reached "
                        f"({len(families)} running: {_names(live)}); "
                        "shut one down first")
    _total(user, "pod", limits.max_pods, live, ask, lambda c: c.count, "fewer")
    _total(user, "GPU", limits.max_gpus, live, ask, lambda c: c.gpu * c.count, "fewer")
    if limits.max_cpu:
        _total(user, "CPU", limits.max_cpu, live, ask,
               lambda c: parse_quantity(c.cpu) * c.count if c.cpu else 0, "less")
    if limits.max_memory:
        _total(user, "memory", limits.max_memory, live, ask,
               lambda c: parse_quantity(c.mem) * c.count if c.mem else 0, "less", unit="B")


def check_allowed(user: str, limits: UserLimits, ask: Ask) -> None:
    """The parts of a request that do not depend on what is in use: templates, image, TTL."""
    allowed = limits.allowed_templates
    refused = [t for t in ask.templates if allowed and t not in allowed]
    if refused:
        raise OverLimit(f"{user}: template {refused[0]!r} is not allowed; the admin allows "
                        f"{', '.join(allowed)}")
    if ask.image and not image_allowed(limits, ask.image):
        raise OverLimit(f"{user}: image {ask.image!r} is not allowed; the admin allows "
                        f"{', '.join(limits.allowed_images)}")
    if ask.ttl > limits.max_ttl:
        raise OverLimit(f"{user}: TTL limit {format_duration(limits.max_ttl)} is less than "
                        f"the {format_duration(ask.ttl)} asked for; ask for less")


def image_allowed(limits: UserLimits, image: str) -> bool:
    """Whether ``image`` matches one of the allowed patterns (any image when there is none)."""
    return not limits.allowed_images or any(
        fnmatch.fnmatchcase(image, pattern) for pattern in limits.allowed_images)


def check_lifetime(user: str, limits: UserLimits, cluster_id: str, seconds: float,
                   lifetime: float) -> None:
    """Raise OverLimit if extending by ``seconds`` gives a lifetime over ``max_ttl``."""
    if lifetime > limits.max_ttl:
        raise OverLimit(f"{user}: TTL limit {format_duration(limits.max_ttl)} reached: "
                        f"extending by {format_duration(seconds)} would give cluster "
                        f"{cluster_id!r} a lifetime of {format_duration(lifetime)}; "
                        "ask for less")


def _total(user: str, what: str, limit: Any, live: Sequence[Held], ask: Ask,
           amount: Any, less: str, unit: str = "") -> None:
    if not limit:
        return
    cap = parse_quantity(limit) if isinstance(limit, str) else Decimal(limit)
    users = [h for h in live if amount(h)]
    used = sum((Decimal(amount(h)) for h in users), Decimal(0))
    want = Decimal(amount(ask))
    if not want or used + want <= cap:
        return
    by = f" by {_names(users)}" if users else ""
    hint = f"ask for {less} or shut one down" if users else f"ask for {less}"
    raise OverLimit(f"{user}: {what} limit {limit} reached ({_q(used, unit)} in use{by}); "
                    f"this cluster asks for {_q(want, unit)}: {hint}")


def _names(held: Sequence[Held]) -> str:
    """The clusters' ids, one per cluster (a cluster's group records share a family)."""
    by_family: dict[tuple[str, str], str] = {}
    for h in held:
        key = (h.notebook, h.family or h.id)
        by_family[key] = min(by_family.get(key, h.id), h.id, key=len)
    ids = sorted(by_family.values())
    label = "cluster" if len(ids) == 1 else "clusters"
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return f"{label} {shown}"


def _q(value: Decimal, unit: str) -> str:
    """A quantity for a message: 2, 0.5, 8Gi."""
    if unit and value >= 2**30:
        return f"{float(value) / 2**30:g}Gi"
    if unit and value >= 2**20:
        return f"{float(value) / 2**20:g}Mi"
    return f"{float(value):g}"


def is_admin(identity: Mapping[str, Any], admin_scope: str) -> bool:
    """Whether a JupyterHub identity (``/hub/api/user``'s model) may see every user's clusters:
    a hub admin, or a token holding ``admin_scope`` (e.g. ``custom:kremote:admin``)."""
    if identity.get("admin") is True:
        return True
    return bool(admin_scope) and admin_scope in (identity.get("scopes") or ())
