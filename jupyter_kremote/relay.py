"""Kernel side of the relays: the remote code's ``input()`` answered at the notebook's
prompt, and its comms (ipywidgets) shown as the kernel's own.

The kernel's ``input`` and ``getpass.getpass`` are called as the remote code would call
them locally: inside ipykernel they send a normal ``input_request`` to the frontend, or
raise ``StdinNotImplementedError`` where it allows no stdin; both reach the agent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .client import Message, OutputHook


class StdinRelay:
    """Answers ``input()`` of one rank (``--stdin-rank``); the other ranks' prompts wait."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.waiting: set[int] = set()

    def __call__(self, rank: int, prompt: str, password: bool) -> str | None:
        if rank != self.rank:
            if rank not in self.waiting:
                self.waiting.add(rank)
                print(f"[kremote] rank {rank} waits for input ({prompt.strip() or 'input()'}): "
                      f"stdin goes to rank {self.rank} (--stdin-rank); the stop button ends "
                      "the wait", file=sys.stderr, flush=True)
            return None
        if password:
            import getpass

            return getpass.getpass(prompt)
        import builtins

        return builtins.input(prompt)


def kernel_parent_id(shell: Any) -> str:
    """The id of the notebook message this kernel is handling ("" outside a kernel)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return ""
    parent = kernel.get_parent()
    return parent.get("header", {}).get("msg_id", "") if parent else ""


class CommRelay:
    """The agents' comms (ipywidgets), mirrored in this kernel.

    A ``comm`` message from an agent opens, updates or closes a kernel comm with the same
    id, so the kernel publishes it on iopub as its own; the frontend's messages for that
    id are delivered to the rank that owns it (``Cluster.comm``) while the kernel handles
    them, as a local kernel runs a widget's callbacks, cell or no cell.
    """

    def __init__(self, cluster: Any, shell: Any, render: Callable[[], OutputHook]) -> None:
        self.cluster = cluster
        self.shell = shell
        self.render = render  # a fresh output renderer for a forwarded message's output
        self.comms: dict[str, tuple[int, Any]] = {}

    def from_agent(self, rank: int, msg: Message) -> None:
        import comm

        c = msg.content
        comm_id, kind = str(c.get("comm_id")), c.get("msg_type")
        data, metadata, buffers = c.get("data") or {}, c.get("metadata") or {}, msg.payload
        if kind == "comm_open":
            mirror = comm.create_comm(comm_id=comm_id, target_name=c.get("target_name", "comm"),
                                      target_module=c.get("target_module"), data=data,
                                      metadata=metadata, buffers=buffers)
            mirror.on_msg(lambda m: self._forward(rank, comm_id, "comm_msg", m))
            mirror.on_close(lambda m: self._forward(rank, comm_id, "comm_close", m))
            self.comms[comm_id] = (rank, mirror)
            return
        found = self.comms.get(comm_id)
        if found is None:
            return  # a comm opened before this kernel attached (a restart): nothing to show
        if kind == "comm_msg":
            found[1].send(data, metadata, buffers)
        elif kind == "comm_close":
            del self.comms[comm_id]
            found[1].close(data, metadata, buffers)

    def _forward(self, rank: int, comm_id: str, kind: str, msg: dict[str, Any]) -> None:
        if kind == "comm_close":
            self.comms.pop(comm_id, None)
        content = {"msg_type": kind, "comm_id": comm_id,
                   "data": msg.get("content", {}).get("data") or {},
                   "parent_msg_id": kernel_parent_id(self.shell)}
        buffers = [bytes(b) for b in msg.get("buffers") or []]
        try:
            reply = self.cluster.comm(rank, content, buffers, on_output=self.render(),
                                      on_input=StdinRelay(rank))
        except Exception as exc:  # noqa: BLE001 - the cluster ended: say so, keep the kernel
            print(f"[kremote] widget message not delivered to rank {rank}: {exc}",
                  file=sys.stderr)
            return
        if reply.get("status") == "error":  # shown as a local widget callback's error is
            from .errors import RemoteError

            error = RemoteError.from_reply(rank, reply)
            stb = [line.rstrip("\n") for line in error.remote_traceback] or [
                f"{error.ename}: {error.evalue}"]
            self.shell._showtraceback(type(error), error, stb)

    def close_all(self) -> None:
        """The cluster ended: its widgets can no longer answer."""
        for _, mirror in self.comms.values():
            try:
                mirror.close()
            except Exception:  # noqa: BLE001, S110 - best effort, the frontend may be gone
                pass
        self.comms.clear()
