"""Label selectors (=, ==, !=, in, notin, exists, !exists, >, <) and field selectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request
from .util import dig

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*")
_OP_RE = re.compile(rf"\s*({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})\s*")
_NOT_RE = re.compile(rf"\s*!\s*({_KEY})\s*")
_HAS_RE = re.compile(rf"\s*({_KEY})\s*")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        if self.op in ("!=", "notin"):
            return not has or value not in self.values
        try:  # > and <: integer comparison, absent or non-integer never matches
            return has and (int(value) > int(self.values[0]) if self.op == ">"
                            else int(value) < int(self.values[0]))
        except (TypeError, ValueError):
            return False


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse the `labelSelector` query parameter; raise a 400 ApiError when malformed."""
    if not text or not text.strip():
        return []
    reqs: list[Requirement] = []
    for part in _split_top(text):
        if m := _SET_RE.fullmatch(part):
            values = tuple(v.strip() for v in m[3].split(",") if v.strip())
            if not all(re.fullmatch(_VALUE, v) for v in values):
                raise _selector_error(part)
            reqs.append(Requirement(m[1], m[2], values))
        elif m := _OP_RE.fullmatch(part):
            op = "=" if m[2] == "==" else m[2]
            if op in (">", "<") and not re.fullmatch(r"-?\d+", m[3]):
                raise _selector_error(part)
            reqs.append(Requirement(m[1], op, (m[3],)))
        elif m := _NOT_RE.fullmatch(part):
            reqs.append(Requirement(m[1], "!exists"))
        elif m := _HAS_RE.fullmatch(part):
            reqs.append(Requirement(m[1], "exists"))
        else:
            raise _selector_error(part)
    return reqs


def _selector_error(part: str) -> ApiError:
    return bad_request(f"unable to parse requirement: found '{part.strip()}', expected: "
                       f"identifier, '=', '==', '!=', 'in', 'notin', '!' or end of string")


def labels_match(reqs: list[Requirement], obj: dict[str, Any]) -> bool:
    labels = dig(obj, "metadata", "labels", default={})
    return all(r.matches(labels) for r in reqs)


def match_label_selector_object(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A structured LabelSelector (matchLabels / matchExpressions), as in Job.spec.selector."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in selector.get("matchExpressions") or []:
        req = Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        if not req.matches(labels):
            return False
    return True


# ---------------------------------------------------------------------------- fields

def _involved(field: str) -> Callable[[dict[str, Any]], Any]:
    return lambda o: dig(o, "involvedObject", field)


_COMMON_FIELDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "metadata.name": lambda o: dig(o, "metadata", "name"),
    "metadata.namespace": lambda o: dig(o, "metadata", "namespace"),
}
_FIELDS: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "pods": {
        "spec.nodeName": lambda o: dig(o, "spec", "nodeName"),
        "spec.restartPolicy": lambda o: dig(o, "spec", "restartPolicy"),
        "spec.schedulerName": lambda o: dig(o, "spec", "schedulerName"),
        "spec.serviceAccountName": lambda o: dig(o, "spec", "serviceAccountName"),
        "spec.hostNetwork": lambda o: str(bool(dig(o, "spec", "hostNetwork"))).lower(),
        "status.phase": lambda o: dig(o, "status", "phase"),
        "status.podIP": lambda o: dig(o, "status", "podIP"),
        "status.nominatedNodeName": lambda o: dig(o, "status", "nominatedNodeName"),
    },
    "events": {
        **{f"involvedObject.{f}": _involved(f)
           for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                     "fieldPath")},
        "reason": lambda o: o.get("reason"),
        "reportingComponent": lambda o: o.get("reportingComponent"),
        "source": lambda o: dig(o, "source", "component"),
        "type": lambda o: o.get("type"),
    },
    "jobs": {"status.successful": lambda o: str(dig(o, "status", "succeeded", default=0))},
    "secrets": {"type": lambda o: o.get("type")},
    "namespaces": {"status.phase": lambda o: dig(o, "status", "phase")},
    "nodes": {"spec.unschedulable": lambda o: str(bool(dig(o, "spec", "unschedulable"))).lower()},
}


@dataclass(frozen=True)
class FieldRequirement:
    getter: Callable[[dict[str, Any]], Any]
    negate: bool
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        actual = self.getter(obj)
        actual = "" if actual is None else str(actual)
        return (actual != self.value) if self.negate else (actual == self.value)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur += text[i:i + 2]
            i += 2
            continue
        if ch == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_field_selector(text: str | None, plural: str) -> list[FieldRequirement]:
    """Parse `fieldSelector` for a resource; unknown fields give the real 400."""
    if not text or not text.strip():
        return []
    fields = {**_COMMON_FIELDS, **_FIELDS.get(plural, {})}
    reqs: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(!=|==|=)(.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        key, op, value = m[1], m[2], _unescape(m[3])
        if key not in fields:
            raise bad_request(f'field label not supported: {key}')
        reqs.append(FieldRequirement(fields[key], op == "!=", value))
    return reqs


def fields_match(reqs: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all(r.matches(obj) for r in reqs)
