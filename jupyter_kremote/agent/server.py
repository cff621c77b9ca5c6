"""The agent's event loop: a data socket served by the main thread, a control socket
served by a side thread.

Cells must run on the main thread (signals, matplotlib, user expectations), so the
main thread owns the *data* ROUTER socket: it receives a request, runs it and sends
replies and live output on that same socket with no thread hand-off. A second
*control* ROUTER socket, served by a daemon thread, answers ``ping``, ``telemetry``,
``interrupt`` (SIGINT to the main thread), ``extend`` and ``shutdown`` while a cell is
busy, and enforces the TTL and the parent-process watchdog. Unsigned or badly signed messages
are dropped and counted on both sockets.

``input()``, ``getpass()`` and pdb in remote code ask the notebook: the main thread, which
runs the cell, sends ``input_request`` on the data socket and itself waits there for the
kernel's ``input_reply`` (interruptible like any cell code).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from ..protocol import (
    TRACKED_PACKAGES,
    Message,
    ProtocolError,
    Signer,
    runtime_info,
    send,
    tcp_address,
)
from . import comms
from .files import FileStore
from .telemetry import Sampler

log = logging.getLogger("jupyter_kremote.agent")

#: exit status by stop reason, so a backend can tell a user why an agent ended
EXIT_CODES = {"shutdown": 0, "terminated": 0, "ttl": 3, "orphaned": 4}


@dataclass
class AgentSettings:
    key: bytes
    rank: int = 0
    count: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    control_port: int = 0
    workdir: Path = field(default_factory=Path.cwd)
    ttl: float = 3600.0
    parent_pid: int | None = None
    ready_file: Path | None = None
    cluster: str = ""
    curve_secret: bytes | None = None  # pods: CURVE-encrypt both sockets (Z85 secret key)
    #: the CURVE client public keys (Z85) admitted on both sockets: the owner's; empty:
    #: any client that knows the server key (clusters made before the allowlist)
    curve_clients: tuple[bytes, ...] = ()
    #: the cluster's folder when this agent owns its work folder in it (local agents): the
    #: work folder goes when the agent ends, and the whole folder when its kernel is gone
    cluster_dir: Path | None = None


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.signer = Signer(settings.key, sender=f"agent-{settings.rank}")
        self.ctx = zmq.Context.instance()
        self.data = self.ctx.socket(zmq.ROUTER)
        self.data.linger = 1000
        self.data.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # a kernel's socket that reconnects (a dropped port-forward) keeps its identity: the
        # new connection takes over, so the running request's reply reaches it
        self.data.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.linger = 500
        self.authenticator = None
        if settings.curve_secret and settings.curve_clients:
            # a ZAP handler in this context checks each handshake (never a message): only the
            # owner's client key gets in; a refused client learns it from the handshake
            from .zap import start_allowlist

            self.authenticator = start_allowlist(self.ctx, settings.curve_clients)
        if settings.curve_secret:
            for sock in (self.data, self.control):
                sock.curve_server = True
                sock.curve_secretkey = settings.curve_secret
        self.deadline = time.time() + settings.ttl
        self.busy_since: float | None = None
        self.last_request: float | None = None
        self.stopping = threading.Event()
        self.stop_reason = ""
        self._main_ident = threading.get_ident()
        self._pending: deque[tuple[bytes, list[Any]]] = deque()  # output from other threads
        self._current: tuple[bytes, str] | None = None  # (peer, request id) of the running cell
        self._answered: deque[str] = deque(maxlen=64)  # ids of the latest requests answered
        #: the last reply without a payload (request id, peer, frames): sent again when the
        #: kernel's connection dropped as it crossed
        self._last_reply: tuple[str, bytes, list[Any]] | None = None
        self._runner: Any = None
        #: requests that arrived while the cell waited for input: served after it
        self._backlog: deque[tuple[bytes, Message]] = deque()
        self._stdin_closed = False  # the cell was interrupted at a prompt: no more prompts
        self.files = FileStore(settings.workdir)
        self.sampler = Sampler()  # primed now: the first "telemetry" already has CPU use

    # -- start-up -------------------------------------------------------------------
    def bind(self) -> tuple[int, int]:
        s = self.settings
        port = _bind(self.data, s.host, s.port)
        cport = _bind(self.control, s.host, s.control_port)
        return port, cport

    def serve(self) -> int:
        port, cport = self.bind()
        threading.Thread(target=self._control_loop, name="kremote-control", daemon=True).start()
        info = {"port": port, "control_port": cport, "pid": os.getpid(), **runtime_info()}
        if self.settings.ready_file:
            _write_json_atomic(self.settings.ready_file, info)
        log.info("agent rank %d listening on %s:%d (control %d)", self.settings.rank,
                 self.settings.host, port, cport)
        self._runner_ready = threading.Thread(target=self._load_runner, daemon=True)
        self._runner_ready.start()
        return self._data_loop()

    def _load_runner(self) -> None:
        """Import IPython in the background so the ready file is written at once."""
        from .shell import CellRunner

        self._runner = CellRunner(self._emit)
        install_stdin(self.read_input)
        comms.install(self._emit, self._runner.shell)

    @property
    def runner(self) -> Any:
        self._runner_ready.join()
        return self._runner

    # -- data plane (main thread) -------------------------------------------------------
    def _data_loop(self) -> int:
        poller = zmq.Poller()
        poller.register(self.data, zmq.POLLIN)
        while not self.stopping.is_set():
            try:
                if self._backlog:
                    self._handle(*self._backlog.popleft())
                    continue
                while self._pending:  # replies sent again (_request_state), between requests
                    p, frames = self._pending.popleft()
                    send(self.data, [p, *frames])
                if not poller.poll(200):
                    continue
                try:
                    peer, msg = self.signer.receive(self.data, router=True)
                except ProtocolError as exc:
                    log.warning("dropped a message on the data socket: %s", exc)
                    continue
                if msg.kind == "input_reply":
                    continue  # answers a prompt that was interrupted meanwhile
                self._handle(peer, msg)
            except KeyboardInterrupt:
                continue  # an interrupt that arrived between cells
        self._shutdown()
        return EXIT_CODES.get(self.stop_reason, 0)

    def _handle(self, peer: bytes, msg: Message) -> None:
        self._current = (peer, msg.msg_id)
        self._stdin_closed = False
        self.busy_since = time.time()
        reply: dict[str, Any] = {"status": "ok"}
        payload: Any = None
        has_payload = False
        try:
            handler = getattr(self, f"_do_{msg.kind}", None)
            if msg.payload_error:  # signed, but not loadable here (a module it lacks...)
                reply = {**_error(msg.payload_error.split(":", 1)[0],
                                  f"rank {self.settings.rank} could not load what the kernel "
                                  f"sent: {msg.payload_error}"), "unloadable": True}
            elif handler is None:
                reply = _error("ValueError", f"unknown request kind {msg.kind!r}")
            else:
                reply, payload, has_payload = handler(msg)
        except KeyboardInterrupt:
            reply = _error("KeyboardInterrupt", "interrupted")
        except BaseException as exc:  # noqa: BLE001 - any failure is reported, the agent lives on
            reply = _error(type(exc).__name__, str(exc))
        finally:
            self.busy_since = None
            self.last_request = time.time()  # the server's idle culler reads it from pings
        if self.stop_reason and reply.get("status") == "error":
            reply = {**reply, "stopping": self.stop_reason}  # the kernel then asks why
        try:
            self._reply(peer, msg, reply, payload, has_payload)
        except KeyboardInterrupt:
            self._reply(peer, msg, reply, payload, has_payload)
        self._answered.append(msg.msg_id)
        self._current = None

    def _reply(self, peer: bytes, msg: Message, reply: dict[str, Any], payload: Any,
               has_payload: bool) -> None:
        try:
            self._send(peer, "reply", reply, payload, has_payload=has_payload, parent=msg.msg_id)
        except (KeyboardInterrupt, zmq.ZMQError):
            raise
        except Exception as exc:  # noqa: BLE001 - the value cannot be pickled: say which
            self._send(peer, "reply", _unsendable(msg, payload, exc, self.settings.rank),
                       parent=msg.msg_id)

    def _emit(self, kind: str, content: dict[str, Any], payload: Any = None) -> None:
        """Send live output for the running request (called from the cell's code)."""
        cur = self._current
        if cur is None:
            return
        peer, parent = cur
        if threading.get_ident() != self._main_ident:
            frames = self.signer.encode(kind, content, payload, parent_id=parent,
                                        rank=self.settings.rank)
            self._pending.append((peer, frames))
            return
        self._send(peer, kind, content, payload, parent=parent)

    def _send(self, peer: bytes, kind: str, content: dict[str, Any], payload: Any = None, *,
              has_payload: bool | None = None, parent: str = "") -> str:
        while self._pending:
            p, frames = self._pending.popleft()
            send(self.data, [p, *frames])
        msg_id, frames = self.signer.request(kind, content, payload, has_payload=has_payload,
                                             parent_id=parent, rank=self.settings.rank)
        send(self.data, [peer, *frames])
        if kind == "reply" and len(frames) == 2:  # small: header and signature only
            self._last_reply = (parent, peer, frames)
        return msg_id

    # -- stdin: input(), getpass(), pdb ----------------------------------------------------
    def read_input(self, prompt: Any = "", password: bool = False) -> str:
        """Ask the notebook for a line of input on behalf of the running request.

        Raises what the kernel's own ``input()`` raised (``StdinNotImplementedError`` where
        the frontend has no stdin, ``EOFError``), and KeyboardInterrupt on the stop button;
        after that, further prompts of the same request get EOFError at once (so a pdb
        prompt, which survives one interrupt, ends instead of waiting again).
        """
        cur = self._current
        if cur is None or threading.get_ident() != self._main_ident:
            raise _stdin_error("StdinNotImplementedError",
                               "input() has no notebook prompt outside the remote cell's "
                               "main thread")
        if self._stdin_closed:
            raise EOFError("the cell was interrupted while it waited for input")
        if self._runner is not None:
            self._runner._flush_streams()
        peer, parent = cur
        request_id = self._send(peer, "input_request",
                                {"prompt": str(prompt), "password": bool(password)},
                                parent=parent)
        poller = zmq.Poller()
        poller.register(self.data, zmq.POLLIN)
        try:
            while True:
                if self.stopping.is_set():
                    raise EOFError("the agent is stopping")
                if not poller.poll(200):
                    continue
                try:
                    p, msg = self.signer.receive(self.data, router=True)
                except ProtocolError as exc:
                    log.warning("dropped a message on the data socket: %s", exc)
                    continue
                if msg.kind == "input_reply":
                    if msg.parent_id == request_id:
                        break
                    continue
                self._backlog.append((p, msg))  # a new request: served after this one
        except KeyboardInterrupt:
            self._stdin_closed = True
            raise
        content = msg.content
        if content.get("status") != "ok":
            raise _stdin_error(str(content.get("ename")), str(content.get("evalue", "")))
        return str(content.get("value", ""))

    # -- request handlers: each returns (reply content, payload, has_payload) --------
    def _do_execute(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        os.environ.update({k: str(v) for k, v in (msg.content.get("env") or {}).items()})
        count = msg.content.get("execution_count")
        runner = self.runner
        _kernel_parent(msg)
        return runner.run_cell(msg.content["code"], count), None, False

    def _do_comm(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        """The frontend's message for a comm of this agent (a widget's slider moved)."""
        runner = self.runner
        _kernel_parent(msg)
        shell = runner.shell
        shell.last_traceback_lines = []  # ipywidgets shows a callback's error through it
        out_err = _redirect(runner)
        try:
            comms.deliver(msg.content, msg.payload)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the kernel, agent lives on
            import traceback

            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            return {**_error(type(exc).__name__, str(exc)), "traceback": tb}, None, False
        finally:
            out_err()
        if shell.last_traceback_lines:
            etype = getattr(sys, "last_type", None) or Exception
            return {**_error(etype.__name__, str(getattr(sys, "last_value", ""))),
                    "traceback": shell.last_traceback_lines}, None, False
        return {"status": "ok"}, None, False

    def _do_call(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        fn, args, kwargs = msg.payload
        runner = self.runner
        out_err = _redirect(runner)
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            import traceback

            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            return {**_error(type(exc).__name__, str(exc)), "traceback": tb}, None, False
        finally:
            out_err()
        return {"status": "ok"}, value, True

    def _do_push(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        self.runner.user_ns.update(msg.payload)
        return {"status": "ok", "names": sorted(msg.payload)}, None, False

    def _do_pull(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        ns = self.runner.user_ns
        names = list(msg.content["names"])
        absent = [n for n in names if n not in ns]
        if absent:
            return _error("NameError", f"name {absent[0]!r} is not defined on rank "
                          f"{self.settings.rank}"), None, False
        return {"status": "ok"}, {n: ns[n] for n in names}, True

    def _do_files_check(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        entries = msg.content["files"]
        missing = self.files.missing(entries)
        if not missing:
            self.files.place(entries)
            importlib.invalidate_caches()
        return {"status": "ok", "missing": missing}, None, False

    def _do_files_put(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        self.files.put(msg.payload)
        self.files.place(msg.content["files"])
        importlib.invalidate_caches()
        return {"status": "ok"}, None, False

    def _do_env(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        """Settings known only once every agent is up (MASTER_ADDR on pods)."""
        os.environ.update({k: str(v) for k, v in (msg.content.get("env") or {}).items()})
        return {"status": "ok"}, None, False

    def _do_info(self, msg: Message) -> tuple[dict[str, Any], Any, bool]:
        for name in msg.content.get("imports") or []:  # what the kernel uses, even if no
            if name in TRACKED_PACKAGES:                 # cell imported it here yet
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass
        return {"status": "ok", **runtime_info()}, None, False

    # -- control plane (side thread) ----------------------------------------------------
    def _control_loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        while not self.stopping.is_set():
            if poller.poll(250):
                frames = self.control.recv_multipart(copy=False)
                peer, frames = frames[0].bytes, frames[1:]
                try:
                    msg = self.signer.decode(frames)
                except ProtocolError as exc:
                    log.warning("dropped a message on the control socket: %s", exc)
                    continue
                content = self._control(msg)
                frames = self.signer.encode("reply", content, parent_id=msg.msg_id,
                                            rank=self.settings.rank)
                self.control.send_multipart([peer, *frames])
            self._watchdog()

    def _control(self, msg: Message) -> dict[str, Any]:
        if msg.kind == "interrupt":
            target, current = msg.content.get("request"), self._current
            busy = self.busy_since is not None and (
                not target or (current is not None and current[1] == target))
            if busy:
                signal.pthread_kill(self._main_ident, signal.SIGINT)
            return {"status": "ok", "interrupted": busy}
        if msg.kind == "extend":
            self.deadline = float(msg.content["deadline"])
            log.info("TTL extended to %s", time.ctime(self.deadline))
            return {"status": "ok", "deadline": self.deadline}
        if msg.kind == "shutdown":
            self._stop("shutdown requested")
            return {"status": "ok"}
        if msg.kind == "ping":
            asked = msg.content.get("request")
            if asked:  # the kernel's connection dropped while it waited on that request
                return {"status": "ok", "request": self._request_state(str(asked))}
            return {"status": "ok", "busy": self.busy_since is not None,
                    "last_request": self.last_request,
                    "deadline": self.deadline, "dropped": self.signer.rejected,
                    "pid": os.getpid()}
        if msg.kind == "telemetry":
            return {"status": "ok", "sample": self.sampler.sample()}
        return _error("ValueError", f"unknown control kind {msg.kind!r}")

    def _request_state(self, msg_id: str) -> str:
        """running, done (seen on the data socket, since answered) or unknown."""
        if msg_id in self._answered:
            last = self._last_reply
            if last is not None and last[0] == msg_id:  # the main thread sends it again
                self._pending.append((last[1], last[2]))
            return "done"
        # seen but not answered: running, or about to (received, or in the backlog)
        return "running" if self.signer.seen(msg_id) else "unknown"

    def _watchdog(self) -> None:
        if time.time() > self.deadline:
            log.warning("TTL reached: the cluster's time ran out; stopping")
            self._stop("ttl")
        ppid = self.settings.parent_pid
        if ppid is not None and os.getppid() != ppid:
            log.warning("the kernel that started this agent is gone; stopping")
            self._stop("orphaned")

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stopping.set()
        if self.busy_since is not None:
            signal.pthread_kill(self._main_ident, signal.SIGINT)

    def _shutdown(self) -> None:
        log.info("agent rank %d stopping (%s)", self.settings.rank, self.stop_reason or "done")
        self.data.close(linger=500)
        self.remove_workdir()

    def remove_workdir(self) -> None:
        """Leave nothing behind: the work folder always; with the kernel gone (nobody left
        to read the log or clean up), this rank's files and the cluster folder once empty."""
        s = self.settings
        if s.cluster_dir is None:
            return
        import shutil

        shutil.rmtree(s.workdir, ignore_errors=True)
        if self.stop_reason == "orphaned" or (s.parent_pid and os.getppid() != s.parent_pid):
            for name in (f"rank-{s.rank}.ready", f"rank-{s.rank}.log"):
                (s.cluster_dir / name).unlink(missing_ok=True)
            try:
                s.cluster_dir.rmdir()  # the last agent out removes it
            except OSError:
                pass


def _redirect(runner: Any):
    """Route stdout/stderr of a ``call`` through the wire like a cell's; returns undo."""
    from .shell import _StreamWriter

    real = sys.stdout, sys.stderr
    sys.stdout = _StreamWriter("stdout", runner._emit, real[0])
    sys.stderr = _StreamWriter("stderr", runner._emit, real[1])

    def undo() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = real

    return undo


def _kernel_parent(msg: Message) -> None:
    """The notebook message the kernel is handling, for ipywidgets' Output widget."""
    comms.PARENT.msg_id = str(msg.content.get("parent_msg_id") or "")


def install_stdin(read: Any) -> None:
    """Route ``input()`` and ``getpass.getpass()`` (pdb prompts too) to ``read``."""
    import builtins
    import getpass

    def input(prompt: Any = "") -> str:  # replaces the builtin
        return read(prompt, False)

    def getpass_(prompt: str = "Password: ", stream: Any = None) -> str:
        return read(prompt, True)

    builtins.input = input
    getpass.getpass = getpass_


def _stdin_error(ename: str, evalue: str) -> BaseException:
    """The exception the kernel's ``input()`` raised, rebuilt here by name."""
    if ename == "StdinNotImplementedError":
        from IPython.core.error import StdinNotImplementedError

        return StdinNotImplementedError(evalue)
    known = {"EOFError": EOFError, "KeyboardInterrupt": KeyboardInterrupt}
    return known.get(ename, RuntimeError)(evalue or ename)


def _unsendable(msg: Message, payload: Any, exc: Exception, rank: int) -> dict[str, Any]:
    """The error reply for a result that cannot be pickled, naming the culprit."""
    from ..protocol import dumps

    cause = f"{type(exc).__name__}: {exc}"
    if msg.kind == "pull" and isinstance(payload, dict):
        bad = []
        for name, value in payload.items():
            try:
                dumps(value)
            except Exception:  # noqa: BLE001 - we only look for the culprit
                bad.append(repr(name))
        what = f"cannot pull {', '.join(bad) or 'these names'} from rank {rank}"
    else:
        what = f"the result on rank {rank} cannot be sent back"
    return _error(type(exc).__name__, f"{what}: {cause}; only values that pickle can travel")


def _error(ename: str, evalue: str) -> dict[str, Any]:
    return {"status": "error", "ename": ename, "evalue": evalue, "traceback": []}


def _bind(sock: zmq.Socket, host: str, port: int) -> int:
    sock.ipv6 = ":" in host  # an IPv6 pod IP (or "::" for every address)
    if port:
        sock.bind(tcp_address(host, port))
        _bind_loopback(sock, host, port)
        return port
    return sock.bind_to_random_port(tcp_address(host))


def _bind_loopback(sock: zmq.Socket, host: str, port: int) -> None:
    """Listen on the pod's loopback as well: the API server's port-forward reaches a pod by
    dialling 127.0.0.1 (or ::1) inside the pod's network namespace, not the pod IP."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    if ip.is_loopback or ip.is_unspecified:
        return
    loopback = "::1" if ip.version == 6 else "127.0.0.1"
    try:
        sock.bind(tcp_address(loopback, port))
    except zmq.ZMQError as exc:  # port-forward will not reach this agent; direct still does
        log.warning("cannot also listen on %s:%d (%s); port-forward cannot reach this agent",
                    loopback, port, exc)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def install_signal_handlers(agent: Agent) -> None:
    def on_term(signum, frame):
        agent._stop("terminated")

    signal.signal(signal.SIGTERM, on_term)
    # the stop button is SIGINT -> KeyboardInterrupt: also where SIGINT came in ignored (a
    # server or a script started in the background by a non-interactive shell passes
    # SIG_IGN on, and Python then installs no handler of its own)
    signal.signal(signal.SIGINT, signal.default_int_handler)
