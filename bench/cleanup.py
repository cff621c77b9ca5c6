"""Leave nothing running: stop callbacks for what the benchmark started, then a sweep.

Everything the benchmark starts (kremote agents, the echo process, ipyparallel
controller and engine, dask workers) is a descendant of this process. Each start
registers its own stop callback; :meth:`Reaper.finish` runs the ones still
registered (after an error or Ctrl-C), then waits for the remaining descendants to
leave on their own and terminates, by pid, those that do not. Descendants seen after
each start are remembered, because some (ipyparallel's engine nanny) outlive their
parent for a moment and are then no longer our descendants.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

#: descendants that belong to the interpreter rather than to a peer; they exit with us
_IGNORED = ("multiprocessing.resource_tracker",)


class Reaper:
    def __init__(self) -> None:
        self._stops: dict[int, tuple[str, Callable[[], None]]] = {}
        self._next = 0
        self._seen: dict[tuple[int, float], object] = {}  # (pid, create time) -> Process

    def remember(self) -> list:
        """Note the current descendants; returns them (psutil.Process objects)."""
        procs = descendants()
        for p in procs:
            try:
                self._seen.setdefault((p.pid, p.create_time()), p)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass
        return procs

    def wait_gone(self, procs: list, timeout: float = 5.0) -> list[str]:
        """Wait for ``procs`` to exit; terminate (then kill) the ones still there."""
        return _end(procs, timeout)

    def add(self, what: str, stop: Callable[[], None]) -> int:
        self._next += 1
        self._stops[self._next] = (what, stop)
        return self._next

    def stop(self, token: int) -> None:
        """Run one stop callback now, reporting but not raising a failure.

        Ctrl-C during the stop is raised, and the callback stays registered so that
        :meth:`finish` tries it again.
        """
        entry = self._stops.get(token)
        if entry is None:
            return
        try:
            entry[1]()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - cleanup goes on whatever happens
            _report(entry[0], exc)
        self._stops.pop(token, None)

    def left(self) -> list:
        """What is still running: remembered processes and current descendants."""
        procs = {p.pid: p for p in self._seen.values() if _alive(p)}
        procs.update((p.pid, p) for p in descendants())
        return list(procs.values())

    def finish(self, wait: float = 8.0) -> list[str]:
        """Stop all that is still registered and sweep descendants; returns the killed."""
        self.remember()  # before stopping: children may be orphaned while they stop
        for token in sorted(self._stops, reverse=True):
            what, stop = self._stops.pop(token)
            try:
                stop()
            except BaseException as exc:  # noqa: BLE001 - the sweep below still runs
                _report(what, exc)
        return _end(list(self._seen.values()) + descendants(), wait)


def descendants() -> list:
    try:
        import psutil
    except ImportError:
        return []
    out = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if not any(tag in cmd for tag in _IGNORED):
            out.append(p)
    return out


def _end(procs: list, wait: float) -> list[str]:
    """Wait up to ``wait`` s for ``procs`` to exit, then terminate/kill them by pid."""
    import psutil

    end = time.monotonic() + wait
    procs = [p for p in procs if _alive(p)]
    while procs and time.monotonic() < end:
        time.sleep(0.1)
        procs = [p for p in procs if _alive(p)]
    killed = []
    if not procs:
        return killed
    for p in procs:
        try:
            killed.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return killed


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _report(what: str, exc: BaseException) -> None:
    print(f"[cleanup] stopping {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


_interrupted: list[int] = []  # signals received; checked again at each checkpoint


def install_signal_handlers() -> None:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt, so that the same cleanup runs.

    The handler also records the signal, and :func:`checkpoint` raises again, because a
    library may swallow the exception (ipyparallel's event loop can). A signal already
    ignored (SIGHUP under nohup, SIGINT in a background job) stays ignored.
    """

    def to_interrupt(signum, frame):
        _interrupted.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, to_interrupt)


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a stop signal came, even if someone swallowed it."""
    if _interrupted:
        raise KeyboardInterrupt(f"signal {_interrupted[0]}")


def ignore_interrupts() -> None:
    """While cleaning up, a second Ctrl-C must not leave things half stopped."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
