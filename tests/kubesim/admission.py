"""Admission of new objects, in the API server's order: NamespaceLifecycle, ServiceAccount,
PodSecurity, ResourceQuota. Every refusal is the 403 `admission.NewForbidden` makes, naming
the pod by its generateName when it has no name yet (as a Job's pods are named)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from . import errors, podsecurity
from .resources import JOBS, NAMESPACES, PODS, RESOURCEQUOTAS, SERVICEACCOUNTS, ResourceType
from .store import Store
from .util import QuantityError, format_quantity, parse_quantity

TERMINAL = ("Succeeded", "Failed")
# Quota names that count pod requests/limits, by the resource they count.
_REQUESTS = {"cpu": "cpu", "requests.cpu": "cpu", "memory": "memory",
             "requests.memory": "memory", "requests.nvidia.com/gpu": "nvidia.com/gpu"}
_LIMITS = {"limits.cpu": "cpu", "limits.memory": "memory"}


def forbidden(rt: ResourceType, obj: dict[str, Any], message: str) -> errors.ApiError:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    details: dict[str, Any] = {"name": name, "kind": rt.plural}
    return errors.ApiError(403, "Forbidden", f'{qualified} "{name}" is forbidden: {message}',
                           details)


def pod_usage(spec: dict[str, Any]) -> dict[str, Decimal]:
    """What a pod counts against quotas: per resource, the sum over containers or the largest
    init container, whichever is more (requests.X and limits.X keys)."""
    usage: dict[str, Decimal] = {}
    for section in ("requests", "limits"):
        for res in ("cpu", "memory", "nvidia.com/gpu"):
            def amount(c: dict[str, Any], section: str = section, res: str = res) -> Decimal:
                value = ((c.get("resources") or {}).get(section) or {}).get(res)
                try:
                    return parse_quantity(value) if value is not None else Decimal(0)
                except QuantityError:
                    return Decimal(0)
            main = sum((amount(c) for c in spec.get("containers") or []), Decimal(0))
            init = max((amount(c) for c in spec.get("initContainers") or []),
                       default=Decimal(0))
            usage[f"{section}.{res}"] = max(main, init)
    usage["pods"] = Decimal(1)
    return usage


def _counted(key: str, usage: dict[str, Decimal]) -> Decimal | None:
    if key == "pods":
        return usage["pods"]
    if key in _REQUESTS:
        return usage[f"requests.{_REQUESTS[key]}"]
    if key in _LIMITS:
        return usage[f"limits.{_LIMITS[key]}"]
    return None


def _fmt(key: str, value: Decimal) -> str:
    res = _REQUESTS.get(key) or _LIMITS.get(key) or key
    return format_quantity(value, res if res in ("cpu", "memory") else "")


class Admission:
    """Checks a create against the namespace, its accounts, labels and quotas."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Mutating webhooks (Kueue's suspends queued Jobs), run before the checks.
        self.webhooks: list[Callable[[ResourceType, dict[str, Any]], None]] = []

    def namespace(self, rt: ResourceType, namespace: str | None) -> dict[str, Any] | None:
        """NamespaceLifecycle: 404 for a missing namespace, 403 for a terminating one."""
        if not rt.namespaced or not namespace:
            return None
        ns = self.store.peek(NAMESPACES, "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        return ns

    def admit(self, rt: ResourceType, obj: dict[str, Any]) -> list[str]:
        """Raise the 403 of the first plugin that refuses `obj`; return warnings."""
        for webhook in self.webhooks:
            webhook(rt, obj)
        namespace = (obj.get("metadata") or {}).get("namespace")
        ns = self.namespace(rt, namespace)
        if ns is not None and ns["metadata"].get("deletionTimestamp"):
            raise forbidden(rt, obj, f"unable to create new content in namespace {namespace} "
                                     "because it is being terminated")
        if rt is PODS:
            self._service_account(obj)
            self._pod_security(ns, obj)
            self._quota(obj)
            return self._pod_security_warnings(ns, obj.get("spec") or {}, podsecurity.WARN)
        if rt is JOBS:
            spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
            return (self._pod_security_warnings(ns, spec, podsecurity.ENFORCE)
                    or self._pod_security_warnings(ns, spec, podsecurity.WARN))
        return []

    def _service_account(self, pod: dict[str, Any]) -> None:
        spec = pod.get("spec") or {}
        name = spec.get("serviceAccountName") or "default"
        ns = pod["metadata"].get("namespace", "")
        if self.store.peek(SERVICEACCOUNTS, ns, name) is None:
            raise forbidden(PODS, pod, f"error looking up service account {ns}/{name}: "
                                       f'serviceaccount "{name}" not found')

    def _pod_security(self, ns: dict[str, Any] | None, pod: dict[str, Any]) -> None:
        level = podsecurity.level_of(ns)
        problems = podsecurity.violations(level, pod.get("spec") or {})
        if problems:
            raise forbidden(PODS, pod, podsecurity.describe(level, problems))

    def _pod_security_warnings(self, ns: dict[str, Any] | None, spec: dict[str, Any],
                               label: str) -> list[str]:
        level = podsecurity.level_of(ns, label)
        problems = podsecurity.violations(level, spec)
        return [podsecurity.describe(level, problems, "would violate")] if problems else []

    def _quota(self, pod: dict[str, Any]) -> None:
        ns = pod["metadata"].get("namespace", "")
        quotas = list(self.store.iter_objects(RESOURCEQUOTAS, ns))
        if not quotas:
            return
        spec = pod.get("spec") or {}
        usage = pod_usage(spec)
        for quota in quotas:
            hard = (quota.get("spec") or {}).get("hard") or {}
            missing: dict[str, list[str]] = {}
            for key in sorted(hard):
                res = _REQUESTS.get(key) or _LIMITS.get(key)
                if res not in ("cpu", "memory"):
                    continue
                section = "limits" if key in _LIMITS else "requests"
                for c in spec.get("containers") or []:
                    if res not in ((c.get("resources") or {}).get(section) or {}):
                        missing.setdefault(key, []).append(str(c.get("name")))
            if missing:
                why = "; ".join(f"{k} for: {','.join(sorted(v))}" for k, v in missing.items())
                raise forbidden(PODS, pod, f"failed quota: {quota['metadata']['name']}: "
                                           f"must specify {why}")
            used = self.used(ns, hard)
            over = [k for k in sorted(hard) if (n := _counted(k, usage)) is not None and n
                    and used[k] + n > parse_quantity(hard[k])]
            if over:
                def show(values: dict[str, Decimal], over: list[str] = over) -> str:
                    return ",".join(f"{k}={_fmt(k, values[k])}" for k in over)
                requested = {k: _counted(k, usage) or Decimal(0) for k in over}
                limited = {k: parse_quantity(hard[k]) for k in over}
                raise forbidden(PODS, pod, f"exceeded quota: {quota['metadata']['name']}, "
                                           f"requested: {show(requested)}, used: {show(used)}, "
                                           f"limited: {show(limited)}")

    def used(self, namespace: str, hard: dict[str, Any]) -> dict[str, Decimal]:
        """What the live (not terminal, not deleting) pods of `namespace` use of `hard`."""
        total = {k: Decimal(0) for k in hard}
        for pod in self.store.iter_objects(PODS, namespace):
            if (pod.get("status") or {}).get("phase") in TERMINAL or \
                    pod["metadata"].get("deletionTimestamp"):
                continue
            usage = pod_usage(pod.get("spec") or {})
            for k in hard:
                n = _counted(k, usage)
                if n is not None:
                    total[k] += n
        return total

    def sync_quotas(self) -> None:
        """The quota controller: keep status.hard and status.used current."""
        for quota in list(self.store.iter_objects(RESOURCEQUOTAS)):
            meta = quota["metadata"]
            hard = dict((quota.get("spec") or {}).get("hard") or {})
            used = {k: _fmt(k, v) for k, v in self.used(meta["namespace"], hard).items()}
            if (quota.get("status") or {}) != {"hard": hard, "used": used}:
                self.store.mutate(RESOURCEQUOTAS, meta["namespace"], meta["name"],
                                  lambda q, h=hard, u=used: q.__setitem__(
                                      "status", {"hard": h, "used": u}))
