"""A container's environment as the kubelet builds it: env, envFrom, Secrets, ConfigMaps,
the downward API, and $(VAR) expansion in values, command and args."""

from __future__ import annotations

import base64
import math
import re
from decimal import Decimal
from typing import Any

from .resources import CONFIGMAPS, SECRETS
from .store import Store
from .util import QuantityError, dig, parse_quantity

_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


class ConfigError(Exception):
    """The container cannot start yet: CreateContainerConfigError with this message."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names replaced, $$ escapes, unknown left alone."""
    def sub(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        return env.get(m[1], m[0])
    return _REF.sub(sub, text)


def _decode(value: str) -> str:
    return base64.b64decode(value).decode("utf-8", errors="replace")


def _source(store: Store, kind: str, namespace: str, name: str, optional: bool
            ) -> dict[str, str] | None:
    """The data of a Secret (decoded) or ConfigMap; None if optional and absent."""
    rt = SECRETS if kind == "Secret" else CONFIGMAPS
    obj = store.peek(rt, namespace, name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{"secret" if kind == "Secret" else "configmap"} "{name}" not found')
    data = obj.get("data") or {}
    return {k: _decode(v) for k, v in data.items()} if kind == "Secret" else dict(data)


def field_value(pod: dict[str, Any], path: str) -> str:
    """The downward API's fieldRef values."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        return str((meta.get(m[1]) or {}).get(m[2], ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": dig(pod, "spec", "nodeName"),
        "spec.serviceAccountName": dig(pod, "spec", "serviceAccountName"),
        "status.hostIP": status.get("hostIP"), "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath: {path}")
    return str(simple[path] or "")


def resource_value(pod: dict[str, Any], container: dict[str, Any], ref: dict[str, Any],
                   allocatable: dict[str, str]) -> str:
    """resourceFieldRef: limits default to the node's allocatable, rounded up by divisor."""
    name = ref.get("containerName") or container.get("name")
    target = next((c for c in dig(pod, "spec", "containers", default=[])
                   if c.get("name") == name), container)
    section, _, resource = str(ref.get("resource", "")).partition(".")
    value = dig(target, "resources", section, resource)
    if value is None:
        value = allocatable.get(resource, "0") if section == "limits" else "0"
    try:
        amount = parse_quantity(value)
        divisor = parse_quantity(ref.get("divisor") or "1") or Decimal(1)
    except QuantityError as exc:
        raise ConfigError(str(exc)) from None
    return str(math.ceil(amount / divisor))


def container_env(store: Store, pod: dict[str, Any], container: dict[str, Any],
                  base: dict[str, str], allocatable: dict[str, str]) -> dict[str, str]:
    """The process environment: `base`, then envFrom, then env (later entries win)."""
    ns = pod["metadata"]["namespace"]
    env = dict(base)
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = src.get(key)
            if ref:
                data = _source(store, kind, ns, ref.get("name", ""), bool(ref.get("optional")))
                for k, v in (data or {}).items():
                    if _ENV_NAME.fullmatch(prefix + k):
                        env[prefix + k] = v
    for item in container.get("env") or []:
        name = item.get("name", "")
        source = item.get("valueFrom")
        if not source:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        if source.get("secretKeyRef") or source.get("configMapKeyRef"):
            kind = "Secret" if source.get("secretKeyRef") else "ConfigMap"
            ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
            optional = bool(ref.get("optional"))
            data = _source(store, kind, ns, ref.get("name", ""), optional)
            if data is None:
                continue
            if ref.get("key") not in data:
                if optional:
                    continue
                raise ConfigError(f"couldn't find key {ref.get('key')} in {kind} "
                                  f"{ns}/{ref.get('name')}")
            env[name] = data[ref["key"]]
        elif source.get("fieldRef"):
            env[name] = field_value(pod, source["fieldRef"].get("fieldPath", ""))
        elif source.get("resourceFieldRef"):
            env[name] = resource_value(pod, container, source["resourceFieldRef"], allocatable)
    return env
