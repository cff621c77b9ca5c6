"""The ipyparallel peer of sections (a) and (b), timed in its own process.

    python ipp_peer.py      (started by ``peers.IPPPeer``; not meant to be run by hand)

Why a process of its own: an ipyparallel ``Client`` keeps an IO thread (and the
launcher's watcher threads) alive for as long as it is connected. Were it in the
benchmark process, those threads would be there, holding the GIL whenever they wake,
while kremote and the raw socket are timed. Here the benchmark process holds only the
kremote client and the raw DEALER while they are timed; this process holds the warm
ipyparallel cluster and times it, block by block, when asked.

Commands come one per line on stdin, as JSON; each is answered by one JSON line on the
original stdout (the script's own stdout is redirected to stderr, so that whatever
ipyparallel prints cannot garble the answers):

    {"op": "start"}                       -> {"ok": true}   cluster + DirectView, one engine
    {"op": "latency", "n": N}             -> {"samples": [s, ...]}  N timed execute("pass")
    {"op": "array", "mib": M}             -> {"ok": true}   the array of section (b)
    {"op": "transfer", "check": bool}     -> {"elapsed": s} one timed push + pull round
    {"op": "stop"}                        -> {"ok": true}   cluster stopped, then exit

A failure is answered ``{"error": "..."}``. At EOF on stdin (the benchmark is gone),
on SIGTERM/SIGHUP or after "stop", the cluster is stopped and every descendant of this
process still there is terminated before it exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

from cleanup import Reaper
from peers import clock, ipp_cluster

MIB = 1024 * 1024


class Peer:
    def __init__(self) -> None:
        self.reaper = Reaper()
        self.cluster: Any = None
        self.client: Any = None
        self.view: Any = None
        self.arr: Any = None

    def start(self) -> dict[str, Any]:
        self.cluster = ipp_cluster()
        self.reaper.add("ipyparallel cluster", self._stop_cluster)
        self.client = self.cluster.start_and_connect_sync()
        self.reaper.remember()
        self.view = self.client[:]
        self.view.execute("pass", block=True)
        return {"ok": True}

    def _stop_cluster(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
        finally:
            self.reaper.remember()
            self.cluster.stop_cluster_sync()

    def latency(self, n: int) -> dict[str, Any]:
        execute, out = self.view.execute, []
        for _ in range(n):
            t0 = clock()
            execute("pass", block=True)
            out.append(clock() - t0)
        return {"samples": out}

    def array(self, mib: int) -> dict[str, Any]:
        import numpy as np

        # the same values as the benchmark process's array (same generator, same seed)
        self.arr = np.random.default_rng(0).random(mib * MIB // 8)
        return {"ok": True}

    def transfer(self, check: bool) -> dict[str, Any]:
        import numpy as np

        t0 = clock()
        self.view.push({"a": self.arr}, block=True)
        back = self.view.pull("a", block=True)
        elapsed = clock() - t0
        if check and not np.array_equal(back[0], self.arr):
            raise RuntimeError("ipyparallel pulled other values")
        del back
        # drop the results the client caches (the array, per pull), outside the timing
        for cache in (self.client.results, self.client.metadata, self.view.results):
            cache.clear()
        return {"elapsed": elapsed}

    def finish(self) -> None:
        self.reaper.finish()


def main() -> int:
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the channel to the benchmark
    os.dup2(2, 1)  # what ipyparallel prints goes to stderr
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)
    peer = Peer()
    ops = {"start": lambda cmd: peer.start(),
           "latency": lambda cmd: peer.latency(int(cmd["n"])),
           "array": lambda cmd: peer.array(int(cmd["mib"])),
           "transfer": lambda cmd: peer.transfer(bool(cmd.get("check")))}
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "stop":
                peer.finish()
                answers.write(json.dumps({"ok": True}) + "\n")
                break
            try:
                answer = ops[cmd["op"]](cmd)
            except Exception as exc:  # noqa: BLE001 - reported to the benchmark
                traceback.print_exc()
                answer = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            answers.write(json.dumps(answer) + "\n")
    finally:
        peer.finish()  # a second call finds nothing left to stop
    return 0


if __name__ == "__main__":
    sys.exit(main())
