"""The map sections: (d) many tiny tasks against dask and ipyparallel, (e) 50 ms tasks
against the ideal, (f) a map during which an agent is killed.

kremote's maps run on an event loop in this process (``LocalCluster.map``); dask and
ipyparallel each run in a process of their own (``map_peer.py``), asked for one round
at a time, interleaved with kremote's rounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from cleanup import Reaper, checkpoint
from peers import Started, clock
from sections import Config, Ratio, Section, Shared, _AsyncCluster, _error, _progress
from stats import Figure

WORKERS = 4


def square(x: int) -> int:
    return x * x


def sleep_50ms(x: int) -> int:
    import time

    time.sleep(0.05)
    return x


def work_5ms(x: int) -> int:
    import time

    time.sleep(0.005)
    return x


for _fn in (square, sleep_50ms, work_5ms):
    _fn.__module__ = "__main__"  # shipped by value: the agents cannot import this file


class MapPeer:
    """dask or ipyparallel with WORKERS workers, held and timed by ``map_peer.py``."""

    def __init__(self, reaper: Reaper, kind: str) -> None:
        self.kind = kind
        self._started = Started(reaper)
        script = Path(__file__).with_name("map_peer.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), kind, str(WORKERS)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self._reaper = reaper
        self._token = reaper.add(f"{kind} map peer process {self.proc.pid}", self._stop)
        self._read()  # ready
        self._started.note()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} peer process exited ({self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def round(self, n: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": "map", "n": n}) + "\n")
        self.proc.stdin.flush()
        return float(self._read()["elapsed"])

    def _stop(self) -> None:
        self._started.note()
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                try:
                    self.proc.stdin.write(json.dumps({"op": "stop"}) + "\n")
                    self.proc.stdin.flush()
                except OSError:
                    pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        finally:
            self._started.wait_gone()

    def close(self) -> None:
        self._reaper.stop(self._token)


class KremoteMaps(_AsyncCluster):
    """A LocalCluster of WORKERS agents on an event loop of its own, driven from here."""

    def __init__(self, reaper: Reaper) -> None:
        super().__init__(reaper, count=WORKERS, name="bench-map")

    def map(self, fn: Any, items: Any, **kw: Any) -> tuple[float, list[Any]]:
        async def timed() -> tuple[float, list[Any]]:
            t0 = clock()
            out = await self.cluster.map(fn, items, progress=False, **kw)
            return clock() - t0, out

        return self.loop.run_until_complete(timed())

    def pids(self) -> list[int]:
        return [row["pid"] for row in self.cluster.cluster.status()]


# -- (d) 10,000 tiny tasks --------------------------------------------------------------------
def section_d(cfg: Config, reaper: Reaper, shared: Shared) -> Section:
    n = cfg.tasks
    sec = Section("d", f"(d) map of {n:,} tiny tasks (`x * x`) over {WORKERS} local "
                  f"workers: {cfg.map_rounds} rounds per peer after 1 warm-up round, "
                  "tasks/s = tasks / round time", kind="latency", unit="s", scale=1.0)
    kre = Figure("kremote", f"kremote `await LocalCluster(count={WORKERS}).map(f, range(n))`")
    dask = Figure("dask", f"dask `client.gather(client.map(f, range(n)))`, {WORKERS} "
                  "worker processes x 1 thread")
    ipp = Figure("ipyparallel", f"ipyparallel `load_balanced_view().map_sync(f, range(n))`, "
                 f"{WORKERS} engines")
    sec.figures = [kre, dask, ipp]
    sec.ratios = [Ratio("dask / kremote (time; = kremote / dask in tasks/s)", "dask", "kremote",
                        ">=", 5.0),
                  Ratio("ipyparallel / kremote (time)", "ipyparallel", "kremote")]
    rounds: dict[str, Any] = {}
    stops: list[Any] = []
    try:
        _progress(f"d: starting kremote ({WORKERS} agents), dask and ipyparallel "
                  f"({WORKERS} workers each, own processes)")
        try:
            km = KremoteMaps(reaper)
            stops.append(km.close)

            def kremote_round() -> float:
                elapsed, out = km.map(square, range(n))
                if out != [x * x for x in range(n)]:
                    raise RuntimeError("kremote returned other values")
                return elapsed

            rounds["kremote"] = kremote_round
        except Exception as exc:  # noqa: BLE001
            kre.error = _error(exc)
        for fig in (dask, ipp):
            try:
                checkpoint()
                peer = MapPeer(reaper, fig.key)
                stops.append(peer.close)
                rounds[fig.key] = lambda peer=peer: peer.round(n)
            except Exception as exc:  # noqa: BLE001
                fig.error = _error(exc)
        figs = {f.key: f for f in sec.figures}
        for r in range(cfg.map_rounds + 1):
            for key, timed in list(rounds.items()):
                try:
                    elapsed = timed()
                except Exception as exc:  # noqa: BLE001
                    figs[key].error = _error(exc)
                    del rounds[key]
                    continue
                if r > 0:
                    figs[key].samples.append(elapsed)
            _progress(f"d: round {r}/{cfg.map_rounds} done" + (" (warm-up)" if r == 0 else ""))
        for f in sec.figures:
            if f.ok:
                sec.notes.append(f"{f.key}: {n / f.median:,.0f} tasks/s at the median")
    finally:
        for stop in reversed(stops):
            stop()
    return sec


# -- (e) 200 tasks of 50 ms ---------------------------------------------------------------------
def section_e(cfg: Config, reaper: Reaper, shared: Shared) -> Section:
    n, each = 200, 0.05
    ideal = n * each / WORKERS
    sec = Section("e", f"(e) map of {n} tasks of 50 ms (`time.sleep`) over {WORKERS} local "
                  f"agents: {cfg.map_rounds} rounds after 1 warm-up; ideal = {n} x 50 ms / "
                  f"{WORKERS} = {ideal:g} s", kind="latency", unit="s", scale=1.0)
    kre = Figure("kremote", "kremote `await cluster.map(sleep_50ms, range(200))`")
    ideal_fig = Figure("ideal", "ideal: perfect balance, no overhead", info=True)
    sec.figures = [kre, ideal_fig]
    sec.ratios = [Ratio("kremote / ideal", "kremote", "ideal", "<=", 1.1)]
    km = None
    try:
        _progress("e: starting kremote")
        km = KremoteMaps(reaper)
        for r in range(cfg.map_rounds + 1):
            elapsed, out = km.map(sleep_50ms, range(n))
            if out != list(range(n)):
                raise RuntimeError("kremote returned other values")
            if r > 0:
                kre.samples.append(elapsed)
                ideal_fig.samples.append(ideal)
            _progress(f"e: round {r}/{cfg.map_rounds} done")
    except Exception as exc:  # noqa: BLE001
        kre.error = _error(exc)
    finally:
        if km is not None:
            km.close()
    return sec


# -- (f) an agent killed during the map ------------------------------------------------------------
def section_f(cfg: Config, reaper: Reaper, shared: Shared) -> Section:
    n = 400
    sec = Section("f", f"(f) map of {n} tasks of 5 ms over {WORKERS} local agents, one agent "
                  "killed (SIGKILL) a third of the way through: every result must come back; "
                  f"{cfg.kill_rounds} round(s), a fresh cluster each", kind="latency", unit="s",
                  scale=1.0)
    calm = Figure("calm", "kremote, no agent killed")
    killed = Figure("killed", f"kremote, 1 of {WORKERS} agents killed mid-map")
    sec.figures = [calm, killed]
    sec.ratios = [Ratio("killed / calm (time)", "killed", "calm")]
    complete = 0
    for r in range(cfg.kill_rounds):
        km = None
        try:
            km = KremoteMaps(reaper)
            km.map(work_5ms, range(WORKERS * 4))  # warm-up: the agents' first imports
            elapsed, out = km.map(work_5ms, range(n))
            if out != list(range(n)):
                raise RuntimeError("results missing with no agent killed")
            calm.samples.append(elapsed)
            victim = km.pids()[-1]
            timer = threading.Timer(n * 0.005 / WORKERS / 3, os.kill, (victim, signal.SIGKILL))
            timer.start()
            try:
                elapsed, out = km.map(work_5ms, range(n))
            finally:
                timer.cancel()
            if out != list(range(n)):
                raise RuntimeError(f"{sum(1 for a, b in zip(out, range(n)) if a == b)}/{n} "
                                   "results came back")
            complete += 1
            killed.samples.append(elapsed)
        except Exception as exc:  # noqa: BLE001
            killed.error = _error(exc)
        finally:
            if km is not None:
                km.close()
        _progress(f"f: round {r + 1}/{cfg.kill_rounds} done")
    sec.notes.append(f"every result came back in {complete} of {cfg.kill_rounds} round(s) "
                     "with an agent killed")
    return sec
