"""What kremote is measured against: a raw pyzmq echo process, ipyparallel and dask.

Heavy imports happen inside the functions: ``run.py`` is re-imported by every process
that multiprocessing spawns (dask's workers), and must not slow their start down.
Every start registers a stop with the :class:`~cleanup.Reaper` before it can fail.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cleanup import Reaper, descendants

FRAME = 4 * 1024 * 1024  # bytes per frame when the raw peer moves a large array


def clock() -> float:
    return time.perf_counter()


def one() -> int:
    return 1


#: what the peers call remotely: shipped by value, not as a reference to this module
#: (their workers cannot import it)
one.__module__ = "__main__"


class Started:
    """The processes a peer's start added under us, to wait for after its stop."""

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper
        self.before = {p.pid for p in descendants()}
        self.procs: list[Any] = []

    def note(self) -> None:
        self.procs = [p for p in self.reaper.remember() if p.pid not in self.before]

    def wait_gone(self) -> None:
        self.reaper.wait_gone(self.procs, timeout=5.0)


# -- raw pyzmq ----------------------------------------------------------------------------
class EchoProcess:
    """The echo server of ``echo.py`` in its own process, and a DEALER connected to it."""

    def __init__(self, reaper: Reaper, mode: str) -> None:
        import zmq

        self._reaper = reaper
        script = Path(__file__).with_name("echo.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(os.getpid()), mode],
            stdout=subprocess.PIPE, start_new_session=True)  # Ctrl-C reaches only us
        self._token = reaper.add(f"echo process {self.proc.pid}", self._stop_proc)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip():
            raise RuntimeError(f"the echo process exited with {self.proc.wait()}")
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(f"tcp://127.0.0.1:{int(line)}")

    def _stop_proc(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def close(self) -> None:
        self.sock.close(0)
        self._reaper.stop(self._token)

    # -- one round trip each ------------------------------------------------------------
    def roundtrip(self, payload: bytes) -> bytes:
        self.sock.send(payload)
        return self.sock.recv()

    def transfer(self, frames: list[Any]) -> list[Any]:
        self.sock.send_multipart(frames, copy=False)
        return self.sock.recv_multipart(copy=False)


def split_frames(arr: Any, size: int = FRAME) -> list[memoryview]:
    """The array's bytes as ``size``-byte memoryviews (no copy)."""
    view = memoryview(arr).cast("B")
    return [view[i:i + size] for i in range(0, view.nbytes, size)]


# -- ipyparallel ----------------------------------------------------------------------------
def ipp_cluster() -> Any:
    import ipyparallel as ipp

    return ipp.Cluster(n=1, log_level=logging.WARNING)


class IPPPeer:
    """A warm one-engine ipyparallel cluster held and timed by ``ipp_peer.py``, a process
    of its own, so that its client's IO thread never runs in this process (see there).

    Each method sends one command and waits for the answer; the timing happens there,
    with the same clock, and only the samples come back.
    """

    def __init__(self, reaper: Reaper) -> None:
        self._reaper = reaper
        self._started = Started(reaper)
        script = Path(__file__).with_name("ipp_peer.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True)  # Ctrl-C reaches only us
        self._token = reaper.add(f"ipyparallel peer process {self.proc.pid}", self._stop)
        self._ask({"op": "start"})
        self._started.note()  # its controller and engine, our descendants too

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the ipyparallel peer process exited ({self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def latency(self, n: int) -> list[float]:
        """``n`` calls of ``view.execute("pass", block=True)``, each timed there (s)."""
        return [float(x) for x in self._ask({"op": "latency", "n": n})["samples"]]

    def make_array(self, mib: int) -> None:
        """Build there the array of section (b) (same generator and seed as here)."""
        self._ask({"op": "array", "mib": mib})

    def transfer(self, check: bool) -> float:
        """One push + pull round, timed there (s); its cached results dropped, untimed."""
        return float(self._ask({"op": "transfer", "check": check})["elapsed"])

    def _stop(self) -> None:
        self._started.note()  # what it started, to wait for once it has stopped
        try:
            if self.proc.poll() is None:
                try:
                    self._ask({"op": "stop"})
                except (OSError, ValueError, RuntimeError):
                    pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()  # it stops its cluster on SIGTERM
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(3)
        finally:
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
            self._started.wait_gone()

    def close(self) -> None:
        self._reaper.stop(self._token)


def ipp_start_to_first_result(reaper: Reaper) -> float:
    """``ipp.Cluster(n=1)`` start_and_connect_sync + ``apply_sync(lambda: 1)``; seconds."""
    started = Started(reaper)
    t0 = clock()
    cluster = ipp_cluster()
    client: list[Any] = []

    def stop() -> None:
        try:
            if client:
                client[0].close()
        finally:
            started.note()
            cluster.stop_cluster_sync()
            started.wait_gone()

    token = reaper.add("ipyparallel cluster (start test)", stop)
    client.append(cluster.start_and_connect_sync())
    value = client[0][:].apply_sync(one)
    elapsed = clock() - t0
    reaper.stop(token)
    if value != [1]:
        raise RuntimeError(f"ipyparallel returned {value!r}")
    return elapsed


# -- dask ------------------------------------------------------------------------------------
def dask_start_to_first_result(reaper: Reaper) -> float:
    """``LocalCluster(n_workers=1, threads_per_worker=1, processes=True)`` + ``Client`` +
    ``submit(lambda: 1).result()`` (``one``); seconds. The dashboard is off (no bokeh here anyway)."""
    from distributed import Client, LocalCluster

    held: list[Any] = []
    started = Started(reaper)

    def stop() -> None:
        started.note()
        for obj in reversed(held):
            try:
                obj.close()
            except Exception:  # noqa: BLE001, S110 - close the rest anyway
                pass
        started.wait_gone()

    token = reaper.add("dask LocalCluster (start test)", stop)
    t0 = clock()
    held.append(LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                             dashboard_address=None))
    held.append(Client(held[0]))
    value = held[1].submit(one).result()
    elapsed = clock() - t0
    reaper.stop(token)
    if value != 1:
        raise RuntimeError(f"dask returned {value!r}")
    return elapsed
