"""Pod Security admission: the baseline and restricted Pod Security Standards (latest), with the
check names and wording of k8s.io/pod-security-admission, in its order (by check id)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LEVELS = ("privileged", "baseline", "restricted")
ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret")
Spec = dict[str, Any]


def _containers(spec: Spec) -> list[dict[str, Any]]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(key) or [] if isinstance(c, dict)]


def _sc(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("securityContext") or {}


def _names(containers: list[dict[str, Any]]) -> str:
    quoted = ", ".join(f'"{c.get("name")}"' for c in containers)
    return f"container {quoted}" if len(containers) == 1 else f"containers {quoted}"


def _allow_privilege_escalation(spec: Spec) -> str | None:
    bad = [c for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    return (f"allowPrivilegeEscalation != false ({_names(bad)} must set "
            "securityContext.allowPrivilegeEscalation=false)") if bad else None


def _capabilities_baseline(spec: Spec) -> str | None:
    found = []
    for c in _containers(spec):
        extra = [a for a in (_sc(c).get("capabilities") or {}).get("add") or []
                 if a not in BASELINE_CAPS]
        if extra:
            listed = ", ".join(f'"{a}"' for a in extra)
            found.append(f"{_names([c])} must not include {listed} in "
                         "securityContext.capabilities.add")
    return f"non-default capabilities ({'; '.join(found)})" if found else None


def _capabilities_restricted(spec: Spec) -> str | None:
    found = []
    for c in _containers(spec):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f'{_names([c])} must set securityContext.capabilities.drop=["ALL"]')
        extra = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            listed = ", ".join(f'"{a}"' for a in extra)
            found.append(f"{_names([c])} must not include {listed} in "
                         "securityContext.capabilities.add")
    return f"unrestricted capabilities ({'; '.join(found)})" if found else None


def _host_namespaces(spec: Spec) -> str | None:
    on = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    return f"host namespaces ({', '.join(on)})" if on else None


def _host_path_volumes(spec: Spec) -> str | None:
    names = [f'"{v.get("name")}"' for v in spec.get("volumes") or [] if "hostPath" in v]
    if not names:
        return None
    return f"hostPath volume{'s' if len(names) > 1 else ''} ({', '.join(names)})"


def _host_ports(spec: Spec) -> str | None:
    found = [f'{_names([c])} uses hostPort {p["hostPort"]}' for c in _containers(spec)
             for p in c.get("ports") or [] if p.get("hostPort")]
    return f"hostPort ({'; '.join(found)})" if found else None


def _privileged(spec: Spec) -> str | None:
    bad = [c for c in _containers(spec) if _sc(c).get("privileged")]
    return (f"privileged ({_names(bad)} must not set securityContext.privileged=true)"
            if bad else None)


def _restricted_volumes(spec: Spec) -> str | None:
    found = []
    for v in spec.get("volumes") or []:
        kinds = [k for k in v if k != "name" and k not in RESTRICTED_VOLUMES]
        if kinds:
            found.append(f'volume "{v.get("name")}" uses restricted volume type "{kinds[0]}"')
    return f"restricted volume types ({'; '.join(found)})" if found else None


def _run_as_non_root(spec: Spec) -> str | None:
    pod = _sc(spec).get("runAsNonRoot")
    if pod is False:
        return "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)"
    bad = [c for c in _containers(spec) if _sc(c).get("runAsNonRoot") is False]
    if bad:
        return (f"runAsNonRoot != true ({_names(bad)} must not set "
                "securityContext.runAsNonRoot=false)")
    unset = [c for c in _containers(spec) if _sc(c).get("runAsNonRoot") is None]
    if pod is not True and unset:
        return (f"runAsNonRoot != true (pod or {_names(unset)} must set "
                "securityContext.runAsNonRoot=true)")
    return None


def _run_as_user(spec: Spec) -> str | None:
    if _sc(spec).get("runAsUser") == 0:
        return "runAsUser=0 (pod must not set runAsUser=0)"
    bad = [c for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    return f"runAsUser=0 ({_names(bad)} must not set runAsUser=0)" if bad else None


def _seccomp_type(obj: dict[str, Any]) -> str | None:
    return (_sc(obj).get("seccompProfile") or {}).get("type")


def _seccomp_baseline(spec: Spec) -> str | None:
    if _seccomp_type(spec) == "Unconfined":
        return ('seccompProfile (pod must not set securityContext.seccompProfile.type to '
                '"Unconfined")')
    bad = [c for c in _containers(spec) if _seccomp_type(c) == "Unconfined"]
    return (f'seccompProfile ({_names(bad)} must not set securityContext.seccompProfile.type '
            'to "Unconfined")') if bad else None


def _seccomp_restricted(spec: Spec) -> str | None:
    ok = ("RuntimeDefault", "Localhost")
    pod = _seccomp_type(spec)
    if pod is not None and pod not in ok:
        return (f'seccompProfile (pod must not set securityContext.seccompProfile.type to '
                f'"{pod}")')
    bad = [c for c in _containers(spec) if _seccomp_type(c) not in (*ok, None)]
    if bad:
        return (f'seccompProfile ({_names(bad)} must not set '
                f'securityContext.seccompProfile.type to "{_seccomp_type(bad[0])}")')
    unset = [c for c in _containers(spec) if _seccomp_type(c) is None]
    if pod is None and unset:
        return (f'seccompProfile (pod or {_names(unset)} must set '
                'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    return None


# (check id, lowest level it applies to, check, id of the baseline check it overrides)
CHECKS: list[tuple[str, str, Callable[[Spec], str | None], str]] = sorted([
    ("allowPrivilegeEscalation", "restricted", _allow_privilege_escalation, ""),
    ("capabilities_baseline", "baseline", _capabilities_baseline, ""),
    ("capabilities_restricted", "restricted", _capabilities_restricted,
     "capabilities_baseline"),
    ("hostNamespaces", "baseline", _host_namespaces, ""),
    ("hostPathVolumes", "baseline", _host_path_volumes, ""),
    ("hostPorts", "baseline", _host_ports, ""),
    ("privileged", "baseline", _privileged, ""),
    ("restrictedVolumes", "restricted", _restricted_volumes, ""),
    ("runAsNonRoot", "restricted", _run_as_non_root, ""),
    ("runAsUser", "restricted", _run_as_user, ""),
    ("seccompProfile_baseline", "baseline", _seccomp_baseline, ""),
    ("seccompProfile_restricted", "restricted", _seccomp_restricted,
     "seccompProfile_baseline"),
], key=lambda c: c[0])


def violations(level: str, spec: Spec) -> list[str]:
    """What `spec` (a pod spec) breaks of the Pod Security Standard `level`."""
    if level not in ("baseline", "restricted"):
        return []
    wanted = [c for c in CHECKS if c[1] == "baseline" or level == "restricted"]
    overridden = {c[3] for c in wanted if c[3]}
    return [msg for cid, _lvl, check, _o in wanted if cid not in overridden
            and (msg := check(spec)) is not None]


def level_of(namespace: dict[str, Any] | None, label: str = ENFORCE) -> str:
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(label, "privileged")
    return level if level in LEVELS else "restricted"  # an invalid level is most strict


def describe(level: str, problems: list[str], verb: str = "violates") -> str:
    return f'{verb} PodSecurity "{level}:latest": {", ".join(problems)}'
