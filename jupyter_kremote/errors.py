"""The exceptions a user can meet; each message says what happened and what to do."""

from __future__ import annotations


class KRemoteError(Exception):
    """Base of jupyter-kremote's own errors, shown as one line in the notebook."""


class AgentDied(KRemoteError):
    """An agent process ended while the kernel was waiting on it."""


class ClusterTimeout(KRemoteError):
    """A request ran over its time limit and was interrupted."""


class AccessRefused(KRemoteError):
    """An agent refused this client's CURVE key: agents admit only their owner's client."""


class ConnectionLost(KRemoteError):
    """The connection to an agent dropped with a request's reply; the agent lives on."""


class ClusterEnded(KRemoteError):
    """The cluster can no longer run work (TTL, a dead agent, shutdown)."""


class TransferError(KRemoteError):
    """An object that cannot travel between the kernel and the agents (it does not pickle,
    or its class lives in a module the other side lacks); nothing was lost."""


class FileError(KRemoteError, ValueError):
    """A file that cannot be shipped: missing, outside the notebook folder, too large."""


class RemoteError(Exception):
    """A remote exception; subclasses carry the remote type's name (ZeroDivisionError),
    so that the notebook's error and "Run all" behave as for a local cell."""

    def __init__(self, ename: str, evalue: str, traceback: list[str], rank: int | None = None):
        super().__init__(evalue)
        self.ename = ename
        self.evalue = evalue
        self.remote_traceback = traceback
        self.rank = rank

    def __str__(self) -> str:
        return self.evalue

    @classmethod
    def from_reply(cls, rank: int, content: dict) -> RemoteError:
        ename = str(content.get("ename") or "RemoteError")
        sub = _remote_error_class(ename)
        return sub(ename, str(content.get("evalue", "")), list(content.get("traceback") or []),
                   rank)


_classes: dict[str, type[RemoteError]] = {}


def _remote_error_class(ename: str) -> type[RemoteError]:
    if not ename.isidentifier():
        ename = "RemoteError"
    if ename not in _classes:
        _classes[ename] = type(ename, (RemoteError,), {"__module__": "jupyter_kremote.remote"})
    return _classes[ename]
