"""This kernel's parallel-map counts, sent to its Jupyter server for the panel.

Only maps report (a plain cell never does): :meth:`TaskReporter.note` just sets an event;
a daemon thread finds the server once (``ServerLink.discover``) and sends ``PUT tasks``
with the notebook's recent maps (``mapper.RECENT``) at most every ``MIN_INTERVAL`` seconds,
coalescing what came in between, so the map's event loop never waits on HTTP. Without a
server (or with ``KREMOTE_SERVER=off``) the thread ends after its one look.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

#: seconds between two reports of one kernel (the panel shows a few updates a second)
MIN_INTERVAL = 0.25


class TaskReporter:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def note(self) -> None:
        """A map started, moved or ended: report soon."""
        self._wake.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="kremote-task-report")
                    self._thread.start()

    def _run(self) -> None:
        from .server_link import ServerError, ServerLink, notebook_path

        link = ServerLink.discover()
        if link is None:
            return  # no server: `%remote tasks` still shows the counts
        notebook = notebook_path(link)
        last = 0.0
        while True:
            self._wake.wait()
            time.sleep(max(0.0, last + MIN_INTERVAL - time.monotonic()))
            self._wake.clear()
            try:
                link.request("PUT", "tasks", {"notebook": notebook, "maps": _maps()},
                             timeout=5)
            except (ServerError, OSError):
                pass  # the panel is a view: a map never fails for it
            last = time.monotonic()


def _maps() -> list[dict[str, Any]]:
    from .mapper import RECENT

    while True:
        try:
            return [asdict(m) for m in list(RECENT)]
        except RuntimeError:  # a map started while copying: copy again
            continue


_REPORTER = TaskReporter()


def report_tasks() -> None:
    """Report this kernel's maps to its Jupyter server soon (throttled, in the background)."""
    _REPORTER.note()
