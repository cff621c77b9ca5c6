"""The three measurements. Each returns a :class:`Section` of figures and ratios.

Peers are measured in interleaved blocks (latency) or rounds (transfer, start-up) so
that a burst of load from another process on this shared machine hits all of them
rather than one, which keeps the ratios meaningful even when absolute numbers move.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cleanup import Reaper, checkpoint
from peers import (
    EchoProcess,
    IPPPeer,
    clock,
    dask_start_to_first_result,
    ipp_start_to_first_result,
    split_frames,
)
from stats import Figure

MIB = 1024 * 1024


@dataclass
class Config:
    calls: int = 2000  # (a) timed calls per peer
    warmup: int = 200  # (a) untimed calls per peer first
    blocks: int = 10  # (a) interleaved blocks the calls are split into
    mib: int = 256  # (b) array size
    rounds: int = 7  # (b) timed push+pull rounds per peer (after one warm-up round)
    starts: int = 5  # (c) timed starts per peer (after one warm-up start)
    tasks: int = 10_000  # (d) tiny tasks per map
    map_rounds: int = 3  # (d, e) timed map rounds per peer (after one warm-up round)
    kill_rounds: int = 2  # (f) maps with an agent killed

    @classmethod
    def quick(cls) -> Config:
        return cls(calls=300, warmup=50, blocks=5, rounds=3, starts=2, tasks=2_000,
                   map_rounds=1, kill_rounds=1)


@dataclass
class Ratio:
    label: str
    num: str  # figure key
    den: str | None  # figure key, or None for an absolute value of ``num``
    op: str | None = None  # "<=", ">=", "<" ... against ``target``
    target: float | None = None


@dataclass
class Section:
    key: str
    title: str
    kind: str  # "latency" (shown in ``scale`` units) or "throughput" (GB/s of ``nbytes``)
    unit: str
    scale: float = 1.0
    nbytes: int = 0
    figures: list[Figure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figure(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)

    def shown(self, seconds: float) -> float:
        """A time in this section's unit (ms, s) or as GB/s for a transfer."""
        if self.kind == "throughput":
            return self.nbytes / seconds / 1e9
        return seconds * self.scale


class Shared:
    """A warm ipyparallel cluster used by (a) and (b), started once, stopped before (c).

    It lives in a process of its own (``ipp_peer.py``), which also times it: no
    ipyparallel client thread runs in this process while kremote and raw are timed.
    """

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper
        self._ipp: IPPPeer | None = None
        self.ipp_used = False  # ipyparallel ran once in this run (its files are warm)

    def ipp(self) -> IPPPeer:
        if self._ipp is None:
            self.ipp_used = True
            self._ipp = IPPPeer(self.reaper)
        return self._ipp

    def close(self) -> None:
        if self._ipp is not None:
            self._ipp.close()
            self._ipp = None


# -- helpers ---------------------------------------------------------------------------------
def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _start_kremote(reaper: Reaper, name: str) -> tuple[Any, int]:
    from jupyter_kremote.session import Cluster, ClusterOptions

    cluster = Cluster(name, ClusterOptions(count=1))
    reaper.remember()
    return cluster, reaper.add(f"kremote cluster {name!r}", cluster.shutdown)


def _check_ok(replies: dict[int, dict[str, Any]]) -> None:
    for rank, content in replies.items():
        if content.get("status") != "ok":
            raise RuntimeError(f"rank {rank}: {content.get('ename')}: {content.get('evalue')}")


def _progress(msg: str) -> None:
    checkpoint()
    print(f"  .. {msg}", flush=True)


# -- (a) trivial cell -----------------------------------------------------------------------
def section_a(cfg: Config, reaper: Reaper, shared: Shared) -> Section:
    sec = Section("a", f"(a) trivial cell round trip: per-call latency, {cfg.calls} calls "
                  f"per peer after {cfg.warmup} warm-up, 1 agent / engine, loopback",
                  kind="latency", unit="ms", scale=1e3)
    kre = Figure("kremote", 'kremote `Cluster("bench", count=1).run("pass")`')
    kre_info = Figure("kremote-info", "  same path without IPython: `info` request "
                      "(`Cluster._request`)", info=True)
    kre_async = Figure("kremote-async", 'kremote async API `await LocalCluster(count=1)'
                       '.run("pass")` (event loop, no thread)')
    raw = Figure("raw", "raw pyzmq DEALER->ROUTER echo, 100 B, echo in its own process")
    ipp = Figure("ipyparallel", 'ipyparallel `view.execute("pass", block=True)`, 1 engine')
    sec.figures = [kre, kre_info, kre_async, raw, ipp]
    sec.ratios = [Ratio("kremote / raw", "kremote", "raw", "<=", 3.0),
                  Ratio("async API / session path", "kremote-async", "kremote", "<=", 1.2),
                  Ratio("ipyparallel / kremote", "ipyparallel", "kremote", ">=", 5.0)]
    calls: dict[str, Callable[[], Any]] = {}  # timed here, call by call
    blocks: dict[str, Callable[[int], list[float]]] = {}  # n calls -> n times (s)
    stops: list[Callable[[], None]] = []
    try:
        _progress("a: starting kremote agent, echo process, ipyparallel cluster (own process)")
        try:
            cluster, token = _start_kremote(reaper, "bench")
            stops.append(lambda: reaper.stop(token))
            _check_ok(cluster.run("pass"))
            calls["kremote"] = lambda: cluster.run("pass")
            calls["kremote-info"] = lambda: cluster._request("info")
        except Exception as exc:  # noqa: BLE001 - report, measure the others
            kre.error = _error(exc)
        try:
            aio = _AsyncCluster(reaper)
            stops.append(aio.close)
            blocks["kremote-async"] = aio.timed_runs
        except Exception as exc:  # noqa: BLE001 - report, measure the others
            kre_async.error = _error(exc)
        try:
            echo = EchoProcess(reaper, "small")
            stops.append(echo.close)
            payload = os.urandom(100)
            if echo.roundtrip(payload) != payload:
                raise RuntimeError("the echo process sent back other bytes")
            calls["raw"] = lambda: echo.roundtrip(payload)
        except Exception as exc:  # noqa: BLE001
            raw.error = _error(exc)
        try:
            checkpoint()
            peer = shared.ipp()  # in its own process, which times the calls itself
            peer.latency(1)
            blocks["ipyparallel"] = peer.latency
        except Exception as exc:  # noqa: BLE001
            ipp.error = _error(exc)
        blocks.update({key: (lambda n, fn=fn: _timed_calls(fn, n)) for key, fn in calls.items()})
        blocks = {f.key: blocks[f.key] for f in sec.figures if f.key in blocks}  # table order
        figs = {f.key: f for f in sec.figures}
        for key, timed in list(blocks.items()):
            _progress(f"a: warm-up {key}")
            try:
                timed(cfg.warmup)
            except Exception as exc:  # noqa: BLE001
                figs[key].error = _error(exc)
                del blocks[key]
        per_block = max(1, cfg.calls // cfg.blocks)
        for block in range(cfg.blocks):
            n = per_block if block < cfg.blocks - 1 else cfg.calls - per_block * (cfg.blocks - 1)
            for key, timed in list(blocks.items()):
                try:
                    figs[key].samples.extend(timed(n))
                except Exception as exc:  # noqa: BLE001
                    figs[key].error = _error(exc)
                    del blocks[key]
            _progress(f"a: block {block + 1}/{cfg.blocks} done")
    finally:
        for stop in reversed(stops):
            stop()
    return sec


class _AsyncCluster:
    """The async API's cluster (one agent unless told) on an event loop of its own; each block
    of calls runs in one coroutine, so that only the calls are timed, not the loop's start."""

    def __init__(self, reaper: Reaper, count: int = 1, name: str = "bench-async") -> None:
        import asyncio

        from jupyter_kremote import LocalCluster

        self.loop = asyncio.new_event_loop()
        self.cluster = LocalCluster(count=count, name=name)
        self._reaper = reaper
        self._token = reaper.add(f"kremote cluster {name}", self._stop)
        self.loop.run_until_complete(self.cluster.start())
        reaper.remember()

    def timed_runs(self, n: int) -> list[float]:
        run = self.cluster.run

        async def block() -> list[float]:
            out = []
            for _ in range(n):
                t0 = clock()
                await run("pass")
                out.append(clock() - t0)
            return out

        return self.loop.run_until_complete(block())

    def _stop(self) -> None:
        try:
            self.loop.run_until_complete(self.cluster.shutdown())
        finally:
            self.loop.close()

    def close(self) -> None:
        self._reaper.stop(self._token)


def _timed_calls(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


# -- (b) push + pull ------------------------------------------------------------------------
def section_b(cfg: Config, reaper: Reaper, shared: Shared) -> Section:
    import numpy as np

    nbytes = cfg.mib * MIB
    sec = Section("b", f"(b) push + pull of a {cfg.mib} MiB float64 array: {cfg.rounds} "
                  "rounds per peer after 1 warm-up round, GB/s = 2 x array bytes / round "
                  "time (1 GB = 1e9 B)", kind="throughput", unit="GB/s", nbytes=2 * nbytes)
    kre = Figure("kremote", 'kremote `push({"a": arr})` + `pull(["a"])`')
    raw = Figure("raw", "raw pyzmq, same bytes as 4 MiB frames (copy=False) to an echo "
                 "process and back")
    raw_one = Figure("raw-1frame", f"  raw pyzmq, the same bytes as one {cfg.mib} MiB frame (as "
                     "kremote frames a buffer)", info=True)
    ipp = Figure("ipyparallel", 'ipyparallel `view.push({"a": arr})` + `view.pull("a")`, '
                 "block=True")
    sec.figures = [kre, raw, raw_one, ipp]
    sec.ratios = [Ratio("kremote / raw", "kremote", "raw", ">=", 0.5),
                  Ratio("kremote / ipyparallel", "kremote", "ipyparallel", ">=", 3.0)]
    arr = np.random.default_rng(0).random(nbytes // 8)
    rounds: dict[str, Callable[[bool], float]] = {}  # check values? -> seconds
    stops: list[Callable[[], None]] = []
    try:
        _progress("b: starting kremote agent and echo process")
        try:
            cluster, token = _start_kremote(reaper, "bench-transfer")
            stops.append(lambda: reaper.stop(token))

            def kremote_round(check: bool) -> None:
                cluster.push({"a": arr})
                back = cluster.pull(["a"])[0]["a"]
                if check and not np.array_equal(back, arr):
                    raise RuntimeError("kremote pulled other values")

            rounds["kremote"] = _timed_round(kremote_round)
        except Exception as exc:  # noqa: BLE001
            kre.error = _error(exc)
        try:
            echo = EchoProcess(reaper, "large")
            stops.append(echo.close)
            frames = split_frames(arr)

            def raw_round(check: bool) -> None:
                back = echo.transfer(frames)
                if check and sum(len(f.buffer) for f in back) != nbytes:
                    raise RuntimeError("the echo process sent back other lengths")

            rounds["raw"] = _timed_round(raw_round)
            whole = [memoryview(arr).cast("B")]
            rounds["raw-1frame"] = _timed_round(lambda check: echo.transfer(whole))
        except Exception as exc:  # noqa: BLE001
            raw.error = _error(exc)
        try:
            checkpoint()
            peer = shared.ipp()  # in its own process, which times the round itself
            peer.make_array(cfg.mib)
            rounds["ipyparallel"] = peer.transfer
        except Exception as exc:  # noqa: BLE001
            ipp.error = _error(exc)
        figs = {f.key: f for f in sec.figures}
        for r in range(cfg.rounds + 1):  # round 0: warm-up, with a check of the values
            for key, timed in list(rounds.items()):
                try:
                    elapsed = timed(r == 0)
                except Exception as exc:  # noqa: BLE001
                    figs[key].error = _error(exc)
                    del rounds[key]
                    continue
                if r > 0:
                    figs[key].samples.append(elapsed)
            _progress(f"b: round {r}/{cfg.rounds} done" + (" (warm-up)" if r == 0 else ""))
    finally:
        for stop in reversed(stops):
            stop()
    return sec


def _timed_round(fn: Callable[[bool], Any]) -> Callable[[bool], float]:
    def timed(check: bool) -> float:
        t0 = clock()
        fn(check)
        return clock() - t0

    return timed


# -- (c) start to first result ----------------------------------------------------------------
def section_c(cfg: Config, reaper: Reaper, shared: Shared) -> Section:
    sec = Section("c", f"(c) local cluster start to first result: {cfg.starts} starts per "
                  "peer after 1 warm-up start, one worker each, each shut down after",
                  kind="latency", unit="s", scale=1.0)
    kre = Figure("kremote", 'kremote `Cluster(..., count=1)` + first `run("1")` reply')
    kre_ready = Figure("kremote-ready", "  of which: `Cluster(...)` returns (agent listening)",
                       info=True)
    kre_first = Figure("kremote-first", '  of which: first `run("1")` reply after that',
                       info=True)
    ipp = Figure("ipyparallel", "ipyparallel `Cluster(n=1).start_and_connect_sync()` + "
                 "`apply_sync(lambda: 1)`")
    dask = Figure("dask", "dask `LocalCluster(n_workers=1, threads_per_worker=1, "
                  "processes=True)` + `Client.submit(lambda: 1).result()`")
    sec.figures = [kre, kre_ready, kre_first, ipp, dask]
    sec.ratios = [Ratio("kremote start to first result (s)", "kremote", None, "<", 0.5),
                  Ratio("ipyparallel / kremote", "ipyparallel", "kremote"),
                  Ratio("dask / kremote", "dask", "kremote")]
    if shared.ipp_used:
        sec.notes.append("ipyparallel ran earlier in this run (sections a/b), so its "
                         "warm-up start was skipped")

    def kremote_start(i: int) -> float:
        from jupyter_kremote.session import Cluster, ClusterOptions

        t0 = clock()
        cluster = Cluster(f"bench-start-{i}", ClusterOptions(count=1))
        token = reaper.add("kremote cluster (start test)", cluster.shutdown)
        t1 = clock()
        replies = cluster.run("1")
        t2 = clock()
        reaper.stop(token)
        _check_ok(replies)
        if i >= 0:
            kre_ready.samples.append(t1 - t0)
            kre_first.samples.append(t2 - t1)
        return t2 - t0

    starters: dict[str, Callable[[int], float]] = {
        "kremote": kremote_start,
        "ipyparallel": lambda i: ipp_start_to_first_result(reaper),
        "dask": lambda i: dask_start_to_first_result(reaper),
    }
    figs = {f.key: f for f in sec.figures}
    for i in range(-1, cfg.starts):  # -1: warm-up, untimed
        for key, fn in list(starters.items()):
            if i < 0 and key == "ipyparallel" and shared.ipp_used:
                continue
            try:
                elapsed = fn(i)
            except Exception as exc:  # noqa: BLE001
                figs[key].error = _error(exc)
                del starters[key]
                continue
            finally:
                checkpoint()
            if i >= 0:
                figs[key].samples.append(elapsed)
            time.sleep(0.2)  # let the stopped processes leave before the next start
        _progress(f"c: start {i + 1}/{cfg.starts} done" + (" (warm-up)" if i < 0 else ""))
    return sec


def _map_runner(name: str) -> Callable[[Config, Reaper, Shared], Section]:
    def run(cfg: Config, reaper: Reaper, shared: Shared) -> Section:
        import map_sections

        return getattr(map_sections, name)(cfg, reaper, shared)

    return run


RUNNERS = {"a": section_a, "b": section_b, "c": section_c, "d": _map_runner("section_d"),
           "e": _map_runner("section_e"), "f": _map_runner("section_f")}
