"""Raw pyzmq echo server, run as its own process: ``python echo.py PARENT_PID MODE``.

A ROUTER socket on a random loopback port (printed on the first stdout line) that
sends every multipart message straight back. MODE ``small`` receives with copies
(fastest for tiny messages), ``large`` without (zero-copy, as for big frames). It
ignores Ctrl-C (the benchmark stops it) and leaves on its own once its parent is gone.
"""

from __future__ import annotations

import os
import signal
import sys

import zmq


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = int(sys.argv[1])
    copy = sys.argv[2] != "large"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.rcvtimeo = 500  # ms: how often an idle server checks that its parent lives
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    while True:
        try:
            frames = sock.recv_multipart(copy=copy)
        except zmq.Again:
            if os.getppid() != parent:
                break
            continue
        sock.send_multipart(frames, copy=copy)
    sock.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
