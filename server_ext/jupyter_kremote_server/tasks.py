"""Parallel maps' progress as kernels report it, per notebook, for the panel.

A map runs in the kernel (``jupyter_kremote.mapper``), not in the server: the kernel sends
its recent maps' counts with ``PUT tasks`` (throttled, a few times a second at most), and the
server keeps the latest per notebook and passes each change to the panel's WebSocket.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .models import BadRequest

#: maps kept per notebook (the kernel sends its newest; mapper.RECENT keeps 20)
MAX_MAPS = 20
STATES = ("running", "done", "failed", "cancelled")
_COUNTS = ("total", "done", "running", "failed", "retried", "rerun", "speculative")


@dataclass
class MapSummary:
    """One map: where it stands (``mapper.TaskCounts`` as the kernel sends it)."""

    cluster: str
    function: str
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0
    retried: int = 0
    rerun: int = 0
    speculative: int = 0
    started: float = 0.0
    finished: float | None = None
    state: str = "running"

    @classmethod
    def parse(cls, data: Any, i: int) -> MapSummary:
        """Check one map of a ``PUT tasks`` body; unknown keys are dropped."""
        if not isinstance(data, dict):
            raise BadRequest(f"maps[{i}]: expected an object with cluster, function and counts")
        for key in ("cluster", "function"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise BadRequest(f"maps[{i}].{key}: expected a non-empty string")
        counts = {}
        for key in _COUNTS:
            value = data.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadRequest(f"maps[{i}].{key} {value!r}: expected a whole number >= 0")
            counts[key] = value
        state = data.get("state", "running")
        if state not in STATES:
            raise BadRequest(f"maps[{i}].state {state!r}: expected one of {', '.join(STATES)}")
        times = {}
        for key in ("started", "finished"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise BadRequest(f"maps[{i}].{key} {value!r}: expected a Unix time")
            times[key] = value
        return cls(cluster=data["cluster"][:200], function=data["function"][:200],
                   state=state, started=float(times["started"] or 0.0),
                   finished=times["finished"], **counts)


class TaskBoard:
    """The latest maps of each notebook."""

    def __init__(self) -> None:
        self._maps: dict[str, list[MapSummary]] = {}

    def put(self, notebook: Any, maps: Any) -> list[dict[str, Any]]:
        """Replace ``notebook``'s maps; returns them as sent to the panel."""
        if not isinstance(notebook, str):
            raise BadRequest(f"notebook {notebook!r}: expected the notebook's path")
        if not isinstance(maps, list):
            raise BadRequest("maps: expected a list of maps (mapper.TaskCounts fields)")
        parsed = [MapSummary.parse(m, i) for i, m in enumerate(maps)][-MAX_MAPS:]
        if parsed:
            self._maps[notebook] = parsed
        else:
            self._maps.pop(notebook, None)
        return [asdict(m) for m in parsed]

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {nb: [asdict(m) for m in maps] for nb, maps in sorted(self._maps.items())}
