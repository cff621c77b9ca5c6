"""Small shared helpers: timestamps, quantities, random name suffixes, booleans."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as _dt
import re
import secrets
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

# Kubernetes' generateName alphabet (no vowels, no confusable characters).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_QUANTITY_RE = re.compile(
    r"(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?\d+)|(?P<dec>[numkMGTPE]?))"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def now() -> float:
    """Wall-clock seconds (patched by nothing; one place to read the time)."""
    return time.time()


def rfc3339(ts: float | None = None) -> str:
    """metav1.Time: second precision, UTC, 'Z' suffix."""
    t = _dt.datetime.fromtimestamp(now() if ts is None else ts, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(ts: float | None = None) -> str:
    """metav1.MicroTime, as used by Event.eventTime."""
    t = _dt.datetime.fromtimestamp(now() if ts is None else ts, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_nano(ts: float) -> str:
    """RFC3339Nano as the kubelet prefixes log lines with `timestamps=true`."""
    t = _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def parse_time(text: str) -> float:
    """Parse an RFC3339 timestamp (as produced above or by clients) to epoch seconds."""
    text = text.strip().replace("Z", "+00:00")
    return _dt.datetime.fromisoformat(text).timestamp()


def human_age(seconds: float) -> str:
    """kubectl's duration.HumanDuration, used in AGE columns."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(n))


def parse_quantity(value: Any) -> Decimal:
    """'500m' -> 0.5, '1Gi' -> 1073741824, 2 -> 2; raises QuantityError."""
    if isinstance(value, bool) or value is None:
        raise QuantityError(f"{value!r}")
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    m = _QUANTITY_RE.fullmatch(str(value).strip())
    if not m:
        raise QuantityError("quantities must match the regular expression "
                            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    try:
        num = Decimal(m["num"])
    except InvalidOperation as exc:  # pragma: no cover - regex admits decimals only
        raise QuantityError(str(value)) from exc
    if m["bin"]:
        return num * (1024 ** _BINARY[m["bin"]])
    if m["exp"]:
        return num.scaleb(int(m["exp"][1:]))
    return num.scaleb(_DECIMAL[m["dec"] or ""])


def format_quantity(value: Decimal, resource: str) -> str:
    """A readable quantity for messages and node status (cpu in millicores when fractional)."""
    if resource == "cpu" and value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    if resource in ("memory", "ephemeral-storage") and value >= 1024 and value % 1024 == 0:
        for suffix, power in (("Gi", 3), ("Mi", 2), ("Ki", 1)):
            if value % (1024 ** power) == 0:
                return f"{int(value // (1024 ** power))}{suffix}"
    return str(int(value)) if value == value.to_integral_value() else str(value)


def parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, which the API server uses for query flags (watch=True...)."""
    if value is None:
        return False
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f"invalid boolean {value!r}")


def deep(obj: Any) -> Any:
    """A deep copy (objects leave and enter the store only as copies)."""
    return copy.deepcopy(obj)


def dig(obj: Any, *path: str | int, default: Any = None) -> Any:
    """obj[path0][path1]... or `default` when any step is missing."""
    for key in path:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return default
        if obj is None:
            return default
    return obj


async def within(awaitable: Any, timeout: float | None) -> Any:
    """Like asyncio.wait_for, but never swallows a cancellation of the caller (Python 3.11's
    wait_for can, when the inner future finishes at the same moment); TimeoutError if late."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise asyncio.TimeoutError
    return task.result()


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for `event` at most `timeout` seconds; True if it is set."""
    if not event.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await within(event.wait(), timeout)
    return event.is_set()
