"""Remote functions: ``@kremote.remote`` makes a function callable on a cluster's agents.

Example::

    @kremote.remote
    def hello(name):
        return f"hello {name} from rank {os.environ['KREMOTE_RANK']}"

    async with LocalCluster(count=2) as c:
        await hello.remote("Swimmy")                  # every agent: a list in rank order
        await hello.on(c, group="train", rank=0)("x")  # one agent: its value
        hello("local")                                 # still an ordinary function

The function travels with cloudpickle: by value when defined in the notebook, by
reference when it comes from a module, whose file (and the local modules it imports) is
shipped first by the same mechanism as ``%%remote`` files. Arguments and results are
pickled with large buffers out of band (arrays travel zero-copy). A remote exception is
raised here as the same type name, with the remote traceback in ``remote_traceback``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RemoteFunction:
    """A function that also runs on agents: ``await f.remote(...)``, ``f.on(cluster)``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        if not callable(fn):
            raise TypeError(f"@remote needs a function, got {type(fn).__name__}")
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def on(self, cluster: Any = None, *, group: str | None = None,
           rank: int | None = None) -> BoundFunction:
        """Bound to ``cluster`` (default: the one started last), a group, or one rank."""
        return BoundFunction(self.fn, cluster, group, rank)

    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run on every agent of the cluster started last; results in rank order."""
        return await self.on()(*args, **kwargs)

    async def map(self, iterable: Any, **options: Any) -> list[Any]:
        """``cluster.map(self, iterable, ...)`` on the cluster started last."""
        return await self.on().map(iterable, **options)

    def __repr__(self) -> str:
        return f"<remote function {getattr(self.fn, '__qualname__', self.fn)!r}>"


class BoundFunction:
    """A remote function with its target; awaiting a call runs it there."""

    def __init__(self, fn: Callable[..., Any], cluster: Any, group: str | None,
                 rank: int | None) -> None:
        self.fn, self.cluster, self.group, self.rank = fn, cluster, group, rank

    def _cluster(self) -> Any:
        if self.cluster is not None:
            return self.cluster
        from .api import current_cluster

        return current_cluster()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ranks = None if self.rank is None else [self.rank]
        out = await self._cluster()._call(self.fn, args, kwargs, self.group, ranks)
        return out[0] if self.rank is not None else out

    remote = __call__

    def on(self, cluster: Any = None, *, group: str | None = None,
           rank: int | None = None) -> BoundFunction:
        """The same function with another target (``cluster.remote(f).on(group="train")``)."""
        return BoundFunction(self.fn, cluster or self.cluster, group, rank)

    async def map(self, iterable: Any, **options: Any) -> list[Any]:
        options.setdefault("group", self.group)
        return await self._cluster().map(self.fn, iterable, **options)


def remote(fn: Callable[..., Any]) -> RemoteFunction:
    """Decorator: ``@kremote.remote``."""
    return RemoteFunction(fn)


def module_files(files: Any, fn: Any) -> list[Any]:
    """The files of ``fn``'s module when it lives in the notebook's folder (so that the
    agents import it as the kernel does); none for the notebook's own functions."""
    fn = getattr(fn, "fn", fn)
    mod = getattr(fn, "__module__", None)
    if not mod or mod == "__main__" or mod.split(".")[0] in ("jupyter_kremote", "builtins"):
        return []
    module = sys.modules.get(mod)
    path = getattr(module, "__file__", None)
    if not path:
        return []
    if files.root not in Path(path).resolve().parents:
        return []  # installed packages: the image has them
    return files.referenced(f"import {mod}")
