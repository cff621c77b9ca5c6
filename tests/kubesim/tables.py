"""Server-side printing: `meta.k8s.io/v1 Table` answers, which `kubectl get` asks for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .resources import ResourceType
from .store import with_kind
from .util import dig, human_age, parse_time

Row = list[Any]


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    return human_age(time.time() - parse_time(ts))


def _col(name: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": name,
            "priority": priority}


def _pod_status(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    has_running = False
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            t = state["terminated"]
            reason = t.get("reason") or f"ExitCode:{t.get('exitCode')}"
        elif "running" in state and cs.get("ready"):
            has_running = True
    if reason == "Completed" and has_running:
        reason = "Running"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_row(pod: dict[str, Any]) -> Row:
    statuses = dig(pod, "status", "containerStatuses", default=[])
    total = len(dig(pod, "spec", "containers", default=[]))
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    return [pod["metadata"]["name"], f"{ready}/{total}", _pod_status(pod), str(restarts),
            _age(pod["metadata"].get("creationTimestamp")),
            dig(pod, "status", "podIP", default="<none>"),
            dig(pod, "spec", "nodeName", default="<none>"), "<none>", "<none>"]


def _job_row(job: dict[str, Any]) -> Row:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    succeeded = int(status.get("succeeded") or 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{spec['completions']}"
    else:
        completions = f"{succeeded}/1 of {spec.get('parallelism', 1)}"
    state = "Running"
    for c in status.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed", "Suspended"):
            state = c["type"]
    duration = ""
    if status.get("startTime"):
        end = parse_time(status["completionTime"]) if status.get("completionTime") else time.time()
        duration = human_age(end - parse_time(status["startTime"]))
    containers = dig(job, "spec", "template", "spec", "containers", default=[])
    selector = ",".join(f"{k}={v}" for k, v in (dig(spec, "selector", "matchLabels",
                                                     default={}) or {}).items())
    return [job["metadata"]["name"], state, completions, duration,
            _age(job["metadata"].get("creationTimestamp")),
            ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers), selector]


def _event_row(ev: dict[str, Any]) -> Row:
    inv = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get(
        "creationTimestamp")
    source = dig(ev, "source", "component", default="")
    if dig(ev, "source", "host"):
        source += f", {ev['source']['host']}"
    return [_age(last), ev.get("type", ""), ev.get("reason", ""),
            f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
            inv.get("fieldPath", ""), source, ev.get("message", ""),
            _age(ev.get("firstTimestamp") or last), int(ev.get("count") or 1),
            ev["metadata"]["name"]]


def _node_row(node: dict[str, Any]) -> Row:
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in dig(node, "status", "conditions", default=[]))
    return [node["metadata"]["name"], "Ready" if ready else "NotReady", "<none>",
            _age(node["metadata"].get("creationTimestamp")),
            dig(node, "status", "nodeInfo", "kubeletVersion", default="")]


_TABLES: dict[str, tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]] = {
    "Pod": ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts"),
             _col("Age"), _col("IP", priority=1), _col("Node", priority=1),
             _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)], _pod_row),
    "Job": ([_col("Name", fmt="name"), _col("Status"), _col("Completions"), _col("Duration"),
             _col("Age"), _col("Containers", priority=1), _col("Images", priority=1),
             _col("Selector", priority=1)], _job_row),
    "Event": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"),
               _col("Subobject", priority=1), _col("Source", priority=1), _col("Message"),
               _col("First Seen", priority=1), _col("Count", "integer", 1),
               _col("Name", priority=1)], _event_row),
    "Secret": ([_col("Name", fmt="name"), _col("Type"), _col("Data", "integer"), _col("Age")],
               lambda o: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}),
                          _age(o["metadata"].get("creationTimestamp"))]),
    "ConfigMap": ([_col("Name", fmt="name"), _col("Data", "integer"), _col("Age")],
                  lambda o: [o["metadata"]["name"],
                             len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                             _age(o["metadata"].get("creationTimestamp"))]),
    "Namespace": ([_col("Name", fmt="name"), _col("Status"), _col("Age")],
                  lambda o: [o["metadata"]["name"], dig(o, "status", "phase", default=""),
                             _age(o["metadata"].get("creationTimestamp"))]),
    "Node": ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"),
              _col("Version")], _node_row),
}


def to_table(rt: ResourceType, items: list[dict[str, Any]], list_meta: dict[str, Any],
             include_object: str = "Metadata") -> dict[str, Any]:
    """A Table for `items`; rows carry PartialObjectMetadata unless told otherwise."""
    columns, row_fn = _TABLES.get(rt.kind, ([_col("Name", fmt="name"), _col("Age")],
                                            lambda o: [o["metadata"]["name"], _age(
                                                o["metadata"].get("creationTimestamp"))]))
    rows = []
    for obj in items:
        row: dict[str, Any] = {"cells": row_fn(obj)}
        if include_object == "Object":
            row["object"] = with_kind(rt, obj)
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": dict(list_meta),
            "columnDefinitions": columns, "rows": rows}
