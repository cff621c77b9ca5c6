"""events.k8s.io/v1 Events: one storage with core/v1 Events, converted field by field as the
real API server converts them (pkg/apis/events/v1 conversion), so either API reads both."""

from __future__ import annotations

from typing import Any

from . import errors

# events.k8s.io/v1 field -> core/v1 field
_RENAMED = {"regarding": "involvedObject", "note": "message",
            "reportingController": "reportingComponent", "deprecatedSource": "source",
            "deprecatedFirstTimestamp": "firstTimestamp",
            "deprecatedLastTimestamp": "lastTimestamp", "deprecatedCount": "count"}
_SAME = ("metadata", "eventTime", "series", "reportingInstance", "action", "reason", "related",
         "type")


def to_v1(core: dict[str, Any]) -> dict[str, Any]:
    """A stored (core/v1-shaped) Event as events.k8s.io/v1 serves it."""
    out: dict[str, Any] = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for key in _SAME:
        if key in core:
            out[key] = core[key]
    out.setdefault("eventTime", None)
    for new, old in _RENAMED.items():
        value = core.get(old)
        if value not in (None, "", 0, {}):
            out[new] = value
        elif new in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp"):
            out[new] = None
    return out


def to_core(v1: dict[str, Any]) -> dict[str, Any]:
    """An events.k8s.io/v1 Event in the stored core/v1 shape."""
    out: dict[str, Any] = {k: v1[k] for k in _SAME if k in v1}
    for new, old in _RENAMED.items():
        if v1.get(new) not in (None, ""):
            out[old] = v1[new]
    out.setdefault("source", {})
    out.setdefault("firstTimestamp", None)
    out.setdefault("lastTimestamp", None)
    return out


def validate_create(v1: dict[str, Any]) -> None:
    """What the events.k8s.io/v1 create validation requires of new Events."""
    missing = [(f, "Required value") for f in ("eventTime", "reportingController",
                                               "reportingInstance", "action", "reason",
                                               "regarding") if not v1.get(f)]
    if v1.get("type") not in ("Normal", "Warning"):
        missing.append(("type", (f'Unsupported value: "{v1.get("type", "")}": supported '
                                 'values: "Normal", "Warning"')))
    if missing:
        name = (v1.get("metadata") or {}).get("name", "")
        raise errors.invalid("Event", "events.k8s.io", name, missing)
