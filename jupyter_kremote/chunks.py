"""The agents' side of a map: run one chunk of inputs (imported on the agents, so light)."""

from __future__ import annotations

import hashlib
import pickle
import time
import traceback
from collections.abc import Callable
from typing import Any

_FN_CACHE: dict[bytes, Callable[[Any], Any]] = {}


def run_chunk(blob: bytes, items: list[Any]) -> tuple[list[tuple[Any, ...]], float]:
    """``fn(x)`` for each input; per input ``(True, value)`` or ``(False, ename, evalue,
    traceback lines)``, and the seconds it took. ``fn`` is unpickled once per map."""
    key = hashlib.sha1(blob).digest()
    fn = _FN_CACHE.get(key)
    if fn is None:
        if len(_FN_CACHE) > 32:
            _FN_CACHE.clear()
        fn = _FN_CACHE[key] = pickle.loads(blob)
    out: list[tuple[Any, ...]] = []
    start = time.perf_counter()
    for x in items:
        try:
            out.append((True, fn(x)))
        except Exception as exc:  # noqa: BLE001 - reported per input, retried by the kernel
            tb = exc.__traceback__
            lines = traceback.format_exception(type(exc), exc, tb.tb_next if tb else None)
            out.append((False, type(exc).__name__, str(exc), lines))
    return out, time.perf_counter() - start
