"""Order statistics and markdown tables for the benchmark (standard library only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (an observed value, never an interpolation).

    With few samples the p99 is simply the largest one, which is what a tail figure
    over 5 repetitions honestly is.
    """
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Figure:
    """One measured row: a peer's samples (seconds) and how to show them."""

    key: str  # short id used in ratios and JSON ("kremote", "raw", "ipyparallel"...)
    what: str  # the row label in the table
    samples: list[float] = field(default_factory=list)  # seconds per call/round/start
    error: str | None = None  # why this peer has no figure (it failed or was skipped)
    info: bool = False  # a break-down row, not a peer (kept out of the ratios)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "what": self.what, "n": self.n, "info": self.info,
                "median_s": None if not self.ok else self.median,
                "p99_s": None if not self.ok else self.p99,
                "error": self.error, "samples_s": self.samples}


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; '-' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table with padded columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])
