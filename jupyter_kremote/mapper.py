"""A load-balanced parallel map over agents, with retries and speculative re-runs.

The kernel hands out *chunks* of inputs: each free agent takes the next one (guided
self-scheduling: a chunk is a share of what is left, so chunks shrink toward the end and
the agents finish together; never so small that round trips dominate, by the measured
time per input). An input that raises is retried on another agent, up to ``retries``
times, then raised naming the input. The chunks of an agent that dies are re-run on the
others. Once nothing is left to hand out, an idle agent re-runs the oldest chunk that
runs late (as kubeface does); the first result wins and the other run is interrupted.

The agent side is :func:`jupyter_kremote.chunks.run_chunk`, shipped by reference in an
ordinary ``call`` request, so maps need no message kind of their own.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .chunks import run_chunk
from .errors import AgentDied, RemoteError, _remote_error_class
from .protocol import Message

#: a chunk should take at least this long on its agent, once the time per input is known
MIN_CHUNK_SECONDS = 0.002
#: chunks in flight per agent when chunks are short (hides the round trip)
PIPELINE_DEPTH = 2
#: a chunk is late (worth a speculative re-run) past this many times its expected time
LATE_FACTOR = 2.0
LATE_FLOOR = 0.5  # seconds (an agent's first chunk may wait for its imports)


# -- the kernel's side ---------------------------------------------------------------------
@dataclass(eq=False)
class Worker:
    """One agent as the map sees it: ``call`` sends one ``call`` request to it."""

    label: str  # "rank 2", or "train 1" in a cluster of several groups
    call: Callable[[Any], Awaitable[Message]]
    interrupt: Callable[[], None] = lambda: None  # interrupt what the agent runs now
    dead: bool = False


@dataclass
class TaskCounts:
    """Where one map stands, for the progress line, ``%remote tasks`` and the panel."""

    cluster: str
    function: str
    total: int
    done: int = 0
    running: int = 0
    failed: int = 0  # inputs that raised (each attempt counts)
    retried: int = 0
    rerun: int = 0  # inputs re-run because their agent died
    speculative: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    state: str = "running"  # running, done, failed, cancelled

    def line(self) -> str:
        took = (self.finished or time.time()) - self.started
        extra = "".join(f", {n} {what}" for n, what in (
            (self.retried, "retried"), (self.rerun, "re-run after an agent died"),
            (self.speculative, "speculative")) if n)
        return (f"{self.function}: {self.done}/{self.total} done, {self.running} running, "
                f"{self.failed} failed{extra} ({took:.1f}s, {self.state})")


#: recent maps of this process, newest last (``%remote tasks``)
RECENT: deque[TaskCounts] = deque(maxlen=20)


class MapError(RemoteError):
    """Base of the errors a map raises when an input keeps failing."""


@dataclass(eq=False)
class _Chunk:
    indices: list[int]
    worker: Worker
    started: float
    twin: _Chunk | None = None  # the other run of a speculatively re-run chunk
    abandoned: bool = False  # its twin won: its outcome is ignored when it comes
    interrupted: bool = False  # and its agent was asked to stop it


class Mapper:
    """One map's state; :meth:`results` yields ``(index, value)`` as they come."""

    def __init__(self, fn: Callable[[Any], Any], items: Sequence[Any], workers: list[Worker],
                 counts: TaskCounts, *, chunksize: int | None = None, retries: int = 2,
                 on_progress: Callable[[TaskCounts], None] | None = None) -> None:
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if not workers:
            raise ValueError("no agents to map over")
        self.fn_name = getattr(fn, "__qualname__", repr(fn))
        self.blob = cloudpickle.dumps(fn, protocol=5)
        self.items = items
        self.workers = workers
        self.counts = counts
        self.chunksize = chunksize
        self.retries = retries
        self.on_progress = on_progress
        self.todo: deque[int] = deque(range(len(items)))
        self.retry: deque[int] = deque()
        self.avoid: dict[int, set[int]] = {}  # index -> ids of workers it failed on
        self.attempts: dict[int, int] = {}
        self.done = bytearray(len(items))
        self.remaining = len(items)
        self.running: dict[asyncio.Task, _Chunk] = {}
        self.per_item: float | None = None  # seconds per input on an agent (moving average)

    # -- handing out ---------------------------------------------------------------------
    def _alive(self) -> list[Worker]:
        return [w for w in self.workers if not w.dead]

    def _load(self, w: Worker) -> int:
        return sum(1 for c in self.running.values() if c.worker is w)

    def _depth(self) -> int:
        if self.per_item is None:
            return 1
        return PIPELINE_DEPTH if self.per_item * self._size(1) < 0.02 else 1

    def _size(self, workers: int) -> int:
        if self.chunksize:
            return self.chunksize
        guided = math.ceil(len(self.todo) / (2 * max(workers, 1)))
        floor = 1 if self.per_item is None else math.ceil(MIN_CHUNK_SECONDS /
                                                           max(self.per_item, 1e-9))
        return max(1, min(len(self.todo), max(guided, floor)))

    def _next(self, w: Worker) -> list[int]:
        alive = self._alive()
        for _ in range(len(self.retry)):
            i = self.retry.popleft()
            if self.done[i]:
                continue
            # another agent than the ones it failed on, unless it failed on all of them
            if id(w) not in self.avoid.get(i, ()) or all(
                    id(o) in self.avoid.get(i, ()) for o in alive):
                return [i]
            self.retry.append(i)
        size = self._size(len(alive))
        out = []
        while self.todo and len(out) < size:
            i = self.todo.popleft()
            if not self.done[i]:
                out.append(i)
        return out

    def _start(self, w: Worker, indices: list[int], twin: _Chunk | None = None) -> _Chunk:
        payload = (run_chunk, (self.blob, [self.items[i] for i in indices]), {})
        task = asyncio.ensure_future(w.call(payload))
        chunk = self.running[task] = _Chunk(indices, w, time.monotonic(), twin)
        return chunk

    def _dispatch(self) -> None:
        depth = self._depth()
        for w in self._alive():
            while self._load(w) < depth:
                indices = self._next(w)
                if not indices:
                    break
                self._start(w, indices)
        self._speculate()
        self.counts.running = len({i for c in self.running.values() for i in c.indices
                                   if not self.done[i]})

    def _speculate(self) -> None:
        """Re-run a late chunk on an idle agent once nothing else is left to hand out."""
        if self.todo or any(not self.done[i] for i in self.retry):
            return
        now = time.monotonic()
        for w in self._alive():
            if self._load(w):
                continue
            late = [c for c in self.running.values()
                    if c.twin is None and not c.abandoned and c.worker is not w
                    and now - c.started > self._late(c)]
            if not late:
                return
            chunk = min(late, key=lambda c: c.started)
            left = [i for i in chunk.indices if not self.done[i]]
            if left:
                chunk.twin = self._start(w, left, twin=chunk)
                self.counts.speculative += len(left)

    def _late(self, c: _Chunk) -> float:
        expected = (self.per_item or 0.0) * len(c.indices)
        return max(LATE_FACTOR * expected, LATE_FLOOR)

    # -- taking back -----------------------------------------------------------------------
    async def results(self) -> AsyncIterator[tuple[int, Any]]:
        try:
            while self.remaining:
                self._dispatch()
                if not self.running:
                    raise AgentDied(f"every agent died during the map of {self.fn_name}; "
                                    f"{self.remaining} input(s) left undone")
                wake = 0.05 if not self.todo else None
                finished, _ = await asyncio.wait(list(self.running), timeout=wake,
                                                 return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    for pair in self._take(task):
                        yield pair
                if finished and self.on_progress is not None:
                    self.on_progress(self.counts)
            self.counts.state = "done"
        except BaseException as exc:
            self.counts.state = "cancelled" if isinstance(
                exc, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)) else "failed"
            raise
        finally:
            self.counts.finished = time.time()
            self.counts.running = 0
            await self._stop_all()
            if self.on_progress is not None:
                self.on_progress(self.counts)

    async def _stop_all(self) -> None:
        """Cancel what still runs (late twins, or everything on failure): the client
        interrupts those agents, so none is left busy with work nobody waits for."""
        asked = [t for t, c in self.running.items() if c.interrupted]
        if asked:  # already interrupted: their replies come soon; a second interrupt
            await asyncio.wait(asked, timeout=3.0)  # could hit the caller's next request
        tasks = list(self.running)
        self.running.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _take(self, task: asyncio.Task) -> list[tuple[int, Any]]:
        chunk = self.running.pop(task)
        w = chunk.worker
        if chunk.abandoned:
            if not task.cancelled() and isinstance(task.exception(), AgentDied):
                w.dead = True
            return []
        try:
            msg = task.result()
        except AgentDied:
            w.dead = True
            lost = [i for i in chunk.indices if not self.done[i]]
            if chunk.twin is None or chunk.twin.worker.dead:
                self.todo.extendleft(reversed(lost))
                self.counts.rerun += len(lost)
            return []
        content = msg.content
        if content.get("status") == "error":  # the chunk as a whole (fn does not unpickle)
            return self._record(chunk, [(False, content.get("ename"), content.get("evalue"),
                                         content.get("traceback") or [])] * len(chunk.indices))
        outs, seconds = msg.payload
        per = seconds / max(len(outs), 1)
        self.per_item = per if self.per_item is None else 0.7 * self.per_item + 0.3 * per
        return self._record(chunk, outs)

    def _record(self, chunk: _Chunk, outs: list[tuple[Any, ...]]) -> list[tuple[int, Any]]:
        """Record a chunk's outcomes; returns the new results, retries or raises."""
        got = []
        for i, out in zip(chunk.indices, outs, strict=True):
            if self.done[i]:
                continue  # its twin was first
            if out[0]:
                self.done[i] = 1
                self.remaining -= 1
                self.counts.done += 1
                got.append((i, out[1]))
                continue
            _, ename, evalue, tb = out
            self.counts.failed += 1
            n = self.attempts[i] = self.attempts.get(i, 0) + 1
            self.avoid.setdefault(i, set()).add(id(chunk.worker))
            if n > self.retries:
                raise _map_error(str(ename), str(evalue), list(tb), i, self.items[i], n,
                                 chunk.worker.label)
            self.counts.retried += 1
            self.retry.append(i)
        if chunk.twin is not None and all(self.done[i] for i in chunk.twin.indices):
            self._cancel(chunk.twin)
        return got

    def _cancel(self, chunk: _Chunk) -> None:
        """Abandon the losing run of a chunk. It keeps its agent's slot until its reply
        comes, so nothing else is sent there meanwhile; it is interrupted only when it
        is all that agent has in flight (an interrupt must not hit another chunk)."""
        chunk.abandoned = True
        if sum(1 for c in self.running.values() if c.worker is chunk.worker) == 1:
            chunk.interrupted = True
            chunk.worker.interrupt()


def _map_error(ename: str, evalue: str, tb: list[str], index: int, item: Any, attempts: int,
               where: str) -> RemoteError:
    shown = repr(item)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    cls = type(f"{ename}", (_remote_error_class(ename), MapError), {
        "__module__": "jupyter_kremote.remote"})
    err = cls(ename, f"{evalue} (input {index}: {shown}; failed {attempts} time(s), "
                     f"last on {where})", tb)
    err.index, err.input = index, item  # type: ignore[attr-defined]
    return err


def notebook_progress() -> Callable[[TaskCounts], None] | None:
    """A progress line updated in place in a notebook; None outside an IPython kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return None
    from IPython.display import display

    handle: Any = None
    last = 0.0

    def show(counts: TaskCounts) -> None:
        nonlocal handle, last
        now = time.monotonic()
        if counts.state == "running" and now - last < 0.25:
            return
        last = now
        text = {"text/plain": counts.line()}
        if handle is None:
            handle = display(text, raw=True, display_id=True)
        else:
            handle.update(text, raw=True)

    return show
