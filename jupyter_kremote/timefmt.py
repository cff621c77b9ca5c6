"""Durations as users type them (``90s``, ``30m``, ``2h``, ``1h30m``, ``45``) and show them."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError with the accepted forms otherwise."""
    t = str(text).strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    while t and pos < len(t):
        m = _PART.match(t, pos)
        if not m or m.end() == pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
        if not m.group(2) and pos < len(t):
            break  # a bare number must be the whole text
    if not t or pos != len(t):
        raise ValueError(f"expected a duration such as 90s, 30m, 2h or 1h30m, got {text!r}")
    if total <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """``3725`` -> ``1h 02m``; ``95`` -> ``1m 35s``."""
    s = int(round(max(seconds, 0)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"
