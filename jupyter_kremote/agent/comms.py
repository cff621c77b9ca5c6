"""Comms (ipywidgets) of remote code, over the wire.

The ``comm`` package lets a process say how comms are made (``comm.create_comm``) and
which manager holds them (``comm.get_comm_manager``), as ipykernel does in a kernel. Here a
comm's messages become ``comm`` output messages of the running request; the kernel
publishes them on iopub as its own, with the same comm ids, and forwards the frontend's
messages for those ids back as ``comm`` requests, which :func:`deliver` dispatches.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import sys
from collections.abc import Callable
from typing import Any

import comm
from comm.base_comm import BaseComm, CommManager

Emit = Callable[..., None]


class KernelParent:
    """What widgets ask a kernel for: the notebook message being handled.

    ipywidgets' ``Output`` widget captures the output of the frontend message whose id it
    is given; the kernel sends that id with each request (``parent_msg_id``).
    """

    msg_id = ""

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        return {"header": {"msg_id": self.msg_id}} if self.msg_id else {}


PARENT = KernelParent()


class WireComm(BaseComm):
    """A comm whose messages go to the kernel as ``comm`` output messages."""

    emit: Emit | None = None  # set by install()
    kernel = PARENT

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        if self.emit is None:
            return
        content = {"msg_type": msg_type, "comm_id": self.comm_id, "data": data or {},
                   "metadata": metadata or {}}
        content.update({k: v for k, v in keys.items() if v is not None})
        blobs = [bytes(b) for b in buffers] if buffers else None
        self.emit("comm", content, blobs)


_manager = CommManager()


def install(emit: Emit, shell: Any) -> None:
    """Make ``comm`` (hence ipywidgets) create wire comms; tell libraries that look for a
    kernel before they show widgets (``tqdm.auto``) that they can."""
    sys.meta_path.insert(0, _KernelFirst())
    WireComm.emit = staticmethod(emit)  # type: ignore[assignment]
    comm.create_comm = WireComm
    comm.get_comm_manager = lambda: _manager
    shell.config.IPKernelApp  # noqa: B018 - the section older tqdm versions check for


class _KernelFirst(importlib.abc.MetaPathFinder):
    """Loads ipykernel's shell module just before ``tqdm.autonotebook`` (``tqdm.auto``),
    which shows widgets only where that module is loaded; nothing else pays its ~0.2 s."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "tqdm.autonotebook":
            sys.meta_path.remove(self)
            with contextlib.suppress(ImportError):
                importlib.import_module("ipykernel.zmqshell")


def deliver(content: dict[str, Any], buffers: list[bytes] | None) -> None:
    """Hand a frontend ``comm_msg`` / ``comm_close`` to the comm it names.

    Raises KeyError for a comm that no longer exists; a handler's exception propagates
    (the kernel shows it) instead of vanishing in a log.
    """
    comm_id = content["comm_id"]
    target = _manager.get_comm(comm_id)
    if target is None:
        raise KeyError(f"no comm {comm_id} on this agent (closed or never opened)")
    msg = {"header": {"msg_type": content["msg_type"]}, "parent_header": {}, "metadata": {},
           "content": {"comm_id": comm_id, "data": content.get("data") or {}},
           "buffers": [memoryview(b) for b in buffers or []]}
    if content["msg_type"] == "comm_close":
        target.handle_close(msg)
        _manager.unregister_comm(target)
    else:
        target.handle_msg(msg)
