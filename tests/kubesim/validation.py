"""Defaulting and validation on create and update, with the API server's 422 messages."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from . import errors
from .resources import CONFIGMAPS, EVENTS, JOBS, NAMESPACES, NODES, PODS, SECRETS, ResourceType
from .util import QuantityError, deep, dig, new_uid, parse_quantity

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
PORT_NAME = re.compile(r"[-a-z0-9]+")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage", "hugepages-")
JOB_LABELS = ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name",
              "controller-uid", "job-name")

Causes = list[tuple[str, str]]


def default_pull_policy(image: str) -> str:
    """Always for ':latest' or untagged images, else IfNotPresent (digests included)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _canonical_resources(resources: dict[str, Any]) -> None:
    for section in ("limits", "requests"):
        values = resources.get(section)
        if isinstance(values, dict):
            resources[section] = {k: str(v) if isinstance(v, (int, float)) else v
                                  for k, v in values.items()}
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for k, v in limits.items():
            requests.setdefault(k, v)


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        if c.get("image"):
            c.setdefault("imagePullPolicy", default_pull_policy(str(c["image"])))
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        _canonical_resources(c.setdefault("resources", {}))
        for port in c.get("ports") or []:
            port.setdefault("protocol", "TCP")


def qos_class(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    reqs = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in reqs):
        return "BestEffort"
    for r in reqs:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for res in ("cpu", "memory"):
            if res not in limits or requests.get(res, limits[res]) != limits[res]:
                return "Burstable"
    return "Guaranteed"


def _check_name(name: Any, field: str, pattern: re.Pattern[str], limit: int,
                causes: Causes) -> None:
    if not isinstance(name, str) or not name:
        causes.append((field, "Required value"))
    elif len(name) > limit:
        causes.append((field, (f'Invalid value: "{name}": must be no more than {limit} '
                              f'characters')))
    elif not pattern.fullmatch(name):
        kind = "RFC 1123 label" if pattern is DNS_LABEL else "RFC 1123 subdomain"
        causes.append((field, (f'Invalid value: "{name}": a lowercase {kind} must consist of '
                              f"lower case alphanumeric characters, '-' or '.', and must start "
                              f"and end with an alphanumeric character")))


def _check_labels(labels: Any, field: str, causes: Causes, values: bool = True) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        causes.append((field, "Invalid value: must be a map of strings"))
        return
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (prefix and not DNS_SUBDOMAIN.fullmatch(prefix)) or len(name) > 63 \
                or not LABEL_NAME.fullmatch(name):
            causes.append((field, (f'Invalid value: "{key}": name part must consist of '
                                  f"alphanumeric characters, '-', '_' or '.', and must start "
                                  f"and end with an alphanumeric character")))
        if not isinstance(value, str):
            causes.append((f"{field}", f"Invalid value: {value!r}: must be a string"))
        elif values and (len(value) > 63 or not LABEL_VALUE.fullmatch(value)):
            causes.append((field, (f'Invalid value: "{value}": a valid label must be an empty '
                                  f"string or consist of alphanumeric characters, '-', '_' or "
                                  f"'.', and must start and end with an alphanumeric "
                                  f"character")))


def _check_meta(rt: ResourceType, meta: dict[str, Any], causes: Causes) -> None:
    if not meta.get("name") and not meta.get("generateName"):
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif meta.get("name") and rt.group == "rbac.authorization.k8s.io":
        name = str(meta["name"])  # path segment names: "system:basic-user" is valid
        if name in (".", "..") or "/" in name or "%" in name:
            causes.append(("metadata.name", f'Invalid value: "{name}": may not contain \'/\''))
    elif meta.get("name"):
        label_like = rt in (NAMESPACES, JOBS)
        _check_name(meta["name"], "metadata.name", DNS_LABEL if label_like else DNS_SUBDOMAIN,
                    63 if label_like else 253, causes)
    _check_labels(meta.get("labels"), "metadata.labels", causes)
    _check_labels(meta.get("annotations"), "metadata.annotations", causes, values=False)


def _check_nonnegative(value: Any, field: str, causes: Causes, minimum: int = 0) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        causes.append((field, (f"Invalid value: {value}: must be greater than or equal to "
                              f"{minimum}")))


def _check_resources(res: dict[str, Any], field: str, causes: Causes) -> None:
    parsed: dict[str, dict[str, Any]] = {}
    for section in ("limits", "requests"):
        parsed[section] = {}
        for name, value in (res.get(section) or {}).items():
            try:
                q = parse_quantity(value)
            except QuantityError as exc:
                causes.append((f"{field}.{section}[{name}]", f'Invalid value: "{value}": {exc}'))
                continue
            if q < 0:
                causes.append((f"{field}.{section}[{name}]",
                               f'Invalid value: "{value}": must be greater than or equal to 0'))
            if not name.startswith(STANDARD_RESOURCES) and q != int(q):
                causes.append((f"{field}.{section}[{name}]",
                               f'Invalid value: "{value}": must be an integer'))
            parsed[section][name] = q
    for name, q in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        standard = name.startswith(STANDARD_RESOURCES)
        if limit is not None and standard and q > limit:
            causes.append((f"{field}.requests", (f'Invalid value: "{res["requests"][name]}": '
                                                f"must be less than or equal to {name} limit of "
                                                f"{res['limits'][name]}")))
        elif not standard and (limit is None or q != limit):
            causes.append((f"{field}.requests", (f'Invalid value: "{res["requests"][name]}": '
                                                f"must be equal to {name} limit of "
                                                f"{(res.get('limits') or {}).get(name, 0)}")))


def _check_ports(ports: Any, field: str, causes: Causes) -> None:
    """validateContainerPorts: IANA_SVC_NAME names (IsValidPortName), unique per container."""
    names: set[str] = set()
    for i, port in enumerate(ports if isinstance(ports, list) else []):
        name = port.get("name") if isinstance(port, dict) else None
        if not name:
            continue
        pf = f"{field}[{i}].name"
        if name in names:
            causes.append((pf, f'Duplicate value: "{name}"'))
        names.add(name)
        for why in (("must be no more than 15 characters" if len(name) > 15 else ""),
                    ("" if PORT_NAME.fullmatch(name) else
                     "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
                    ("" if re.search("[a-z]", name) else "must contain at least one letter (a-z)"),
                    ("must not contain consecutive hyphens" if "--" in name else ""),
                    ("must not begin or end with a hyphen" if name[0] == "-" or name[-1] == "-"
                     else "")):
            if why:
                causes.append((pf, f'Invalid value: "{name}": {why}'))


def validate_pod_spec(spec: Any, field: str, causes: Causes) -> None:
    if not isinstance(spec, dict):
        causes.append((field, "Required value"))
        return
    containers = spec.get("containers")
    if not containers:
        causes.append((f"{field}.containers", "Required value"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            cf = f"{field}.{group}[{i}]"
            if not isinstance(c, dict):
                causes.append((cf, "Invalid value: must be an object"))
                continue
            _check_name(c.get("name"), f"{cf}.name", DNS_LABEL, 63, causes)
            if c.get("name") in seen:
                causes.append((f"{cf}.name", f'Duplicate value: "{c["name"]}"'))
            seen.add(c.get("name"))
            if not c.get("image"):
                causes.append((f"{cf}.image", "Required value"))
            _check_resources(c.get("resources") or {}, f"{cf}.resources", causes)
            _check_ports(c.get("ports") or [], f"{cf}.ports", causes)
            for j, env in enumerate(c.get("env") or []):
                if not isinstance(env, dict) or not env.get("name"):
                    causes.append((f"{cf}.env[{j}].name", "Required value"))
                elif env.get("value") and env.get("valueFrom"):
                    causes.append((f"{cf}.env[{j}].valueFrom", ('Invalid value: "": may not be '
                                                           "specified when `value` is not empty")))
    policy = spec.get("restartPolicy")
    if policy not in RESTART_POLICIES:
        causes.append((f"{field}.restartPolicy", (f'Unsupported value: "{policy}": supported '
                                                 f'values: "Always", "Never", "OnFailure"')))
    _check_nonnegative(spec.get("activeDeadlineSeconds"), f"{field}.activeDeadlineSeconds",
                       causes, 1)


def _default_job(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    meta = obj["metadata"]
    if not meta.get("labels") and tmeta.get("labels"):
        meta["labels"] = dict(tmeta["labels"])
    if isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


def _generate_job_selector(obj: dict[str, Any]) -> None:
    meta, spec = obj["metadata"], obj["spec"]
    uid = meta.setdefault("uid", new_uid())
    if spec.get("manualSelector"):
        return
    tlabels = spec["template"]["metadata"].setdefault("labels", {})
    for key in JOB_LABELS:
        tlabels[key] = uid if key.endswith("controller-uid") else meta["name"]
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}


def _validate_job(obj: dict[str, Any], causes: Causes) -> None:
    spec = obj.get("spec") or {}
    for key in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        _check_nonnegative(spec.get(key), f"spec.{key}", causes)
    _check_nonnegative(spec.get("activeDeadlineSeconds"), "spec.activeDeadlineSeconds", causes, 1)
    mode = spec.get("completionMode")
    if mode not in ("NonIndexed", "Indexed"):
        causes.append(("spec.completionMode", (f'Unsupported value: "{mode}": supported values: '
                                              f'"NonIndexed", "Indexed"')))
    if mode == "Indexed" and spec.get("completions") is None:
        causes.append(("spec.completions", "Required value: when completion mode is Indexed"))
    template = spec.get("template") or {}
    if not template.get("spec"):
        causes.append(("spec.template.spec.containers", "Required value"))
        return
    _check_labels(dig(template, "metadata", "labels"), "spec.template.metadata.labels", causes)
    validate_pod_spec(template["spec"], "spec.template.spec", causes)
    restart = template["spec"].get("restartPolicy")
    if restart not in ("OnFailure", "Never"):
        causes.append(("spec.template.spec.restartPolicy",
                       'Required value: valid values: "OnFailure", "Never"'))
    elif spec.get("podFailurePolicy") and restart != "Never":
        causes.append(("spec.template.spec.restartPolicy",
                       (f'Invalid value: "{restart}": only "Never" is supported when '
                        "podFailurePolicy is specified")))
    for i, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        action = rule.get("action")
        if action not in ("FailJob", "FailIndex", "Ignore", "Count"):
            causes.append((f"spec.podFailurePolicy.rules[{i}].action",
                           (f'Unsupported value: "{action}": supported values: "Count", '
                            '"FailIndex", "FailJob", "Ignore"')))
        if bool(rule.get("onExitCodes")) == bool(rule.get("onPodConditions")):
            causes.append((f"spec.podFailurePolicy.rules[{i}]",
                           ("Invalid value: specifying one of OnExitCodes and "
                            "OnPodConditions is required")))


def _secret_data(obj: dict[str, Any], causes: Causes) -> None:
    data = obj.get("data") or {}
    for key, value in data.items():
        if not SECRET_KEY.fullmatch(str(key)):
            causes.append((f"data[{key}]", (f'Invalid value: "{key}": a valid config key must '
                                          f"consist of alphanumeric characters, '-', '_' or '.'")))
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise errors.bad_request(f"illegal base64 data in Secret data[{key}]") from None
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        obj["data"] = data


def prepare_create(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """Default and validate a new object; raises ApiError (422 Invalid) like the server."""
    obj = deep(obj)
    meta = obj.setdefault("metadata", {})
    causes: Causes = []
    _check_meta(rt, meta, causes)
    if rt is PODS:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec)
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("priority", 0)
        validate_pod_spec(spec, "spec", causes)
        if not causes:
            obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    elif rt is JOBS:
        _default_job(obj)
        _validate_job(obj, causes)
        if not causes and meta.get("name"):
            _generate_job_selector(obj)
        obj["status"] = {}
    elif rt is SECRETS:
        obj.setdefault("type", "Opaque")
        _secret_data(obj, causes)
    elif rt is CONFIGMAPS:
        for key in list(obj.get("data") or {}) + list(obj.get("binaryData") or {}):
            if not SECRET_KEY.fullmatch(str(key)):
                causes.append((f"data[{key}]", (f'Invalid value: "{key}": a valid config key '
                                              f"must consist of alphanumeric characters, '-', "
                                              f"'_' or '.'")))
    elif rt is NAMESPACES:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
    elif rt is EVENTS and not obj.get("involvedObject"):
        causes.append(("involvedObject", "Required value"))
    if causes:
        raise errors.invalid(rt.kind, rt.group, meta.get("name") or meta.get("generateName", ""),
                             causes)
    if rt in (JOBS, PODS):
        meta["generation"] = 1
    return obj


def prepare_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]
                   ) -> dict[str, Any]:
    """Validate an update of `old` into `new` (immutable fields, generation)."""
    new = deep(new)
    meta = new.setdefault("metadata", {})
    meta["name"] = old["metadata"]["name"]
    causes: Causes = []
    _check_labels(meta.get("labels"), "metadata.labels", causes)
    _check_labels(meta.get("annotations"), "metadata.annotations", causes, values=False)
    if rt is JOBS:
        _default_job(new)
        _validate_job(new, causes)
        for key in ("selector", "template", "completionMode", "manualSelector"):
            if dig(new, "spec", key) != dig(old, "spec", key):
                causes.append((f"spec.{key}", "Invalid value: field is immutable"))
        o, n = old["spec"], new["spec"]
        if n.get("completions") != o.get("completions") and not (
                n.get("completionMode") == "Indexed" and n.get("completions") == n.get(
                    "parallelism")):
            causes.append(("spec.completions", "Invalid value: field is immutable"))
    elif rt is PODS:
        spec = new.get("spec") or {}
        if isinstance(spec, dict):
            default_pod_spec(spec)
        allowed_old, allowed_new = deep(old.get("spec") or {}), deep(spec)
        for s in (allowed_old, allowed_new):
            for key in ("activeDeadlineSeconds", "tolerations"):
                s.pop(key, None)
            for c in (s.get("containers") or []) + (s.get("initContainers") or []):
                c.pop("image", None)
        if allowed_old != allowed_new:
            causes.append(("spec", ("Forbidden: pod updates may not change fields other than "
                                   "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                                   "`spec.activeDeadlineSeconds`, `spec.tolerations` (only "
                                   "additions to existing tolerations)")))
    elif rt in (SECRETS, CONFIGMAPS):
        if rt is SECRETS:
            _secret_data(new, causes)
        if old.get("immutable"):
            for key in ("data", "binaryData", "immutable"):
                if new.get(key) != old.get(key):
                    causes.append((key, "Forbidden: field is immutable when `immutable` is set"))
    elif rt is NODES:
        pass
    if causes:
        raise errors.invalid(rt.kind, rt.group, old["metadata"]["name"], causes)
    if rt in (JOBS, PODS) and new.get("spec") != old.get("spec"):
        meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
    return new
