"""Tables the magics show: HTML in a notebook, aligned text in a terminal, updated in place.

A :class:`Table` is a MIME bundle (``text/html`` and a ``text/plain`` fallback that reads
well in a terminal, in nbconvert output and in logs). :class:`Live` shows one display and
updates it through its ``display_id``, so that start-up progress and ``%remote top
--watch`` change in place instead of adding lines.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """A titled table; ``right`` lists the columns aligned right (numbers)."""

    title: str
    head: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    right: frozenset[int] = frozenset()
    footer: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [self.title]
        if self.head:
            table = [self.head, *self.rows]
            widths = [max(len(r[c]) for r in table) for c in range(len(self.head))]
            for r in table:
                cells = [v.rjust(w) if c in self.right else v.ljust(w)
                         for c, (v, w) in enumerate(zip(r, widths))]
                lines.append("  " + "  ".join(cells).rstrip())
        lines += ["  " + f for f in self.footer]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        esc = html.escape
        out = [f'<div class="jp-kremote-table"><b>{esc(self.title)}</b>']
        if self.head:
            def cell(tag: str, c: int, v: str) -> str:
                align = ' style="text-align:right"' if c in self.right else ""
                return f"<{tag}{align}>{esc(v)}</{tag}>"

            out.append("<table><thead><tr>"
                       + "".join(cell("th", c, v) for c, v in enumerate(self.head))
                       + "</tr></thead><tbody>")
            for r in self.rows:
                out.append("<tr>" + "".join(cell("td", c, v) for c, v in enumerate(r))
                           + "</tr>")
            out.append("</tbody></table>")
        out += [f"<div><small>{esc(f)}</small></div>" for f in self.footer]
        out.append("</div>")
        return "".join(out)

    def bundle(self) -> dict[str, str]:
        return {"text/plain": self.text().rstrip("\n"), "text/html": self.html()}


#: metadata key on kremote's own displays, so that tools can set them apart from the cell's
METADATA_KEY = "jupyter_kremote"


class Live:
    """One display, updated in place (``display_id``); ``kind`` goes in its metadata."""

    def __init__(self, kind: str = "") -> None:
        self.handle: Any = None
        self.metadata = {METADATA_KEY: kind} if kind else {}

    def show(self, bundle: dict[str, str]) -> None:
        from IPython.display import display

        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True, metadata=self.metadata)
        else:
            self.handle.update(bundle, raw=True, metadata=self.metadata)


# -- what %remote status / top / start-up show ----------------------------------------------
GPU_FOOTER = "GPU figures need nvidia-ml-py and a GPU on the agent"


def cluster_title(cluster: Any) -> str:
    from .spec import format_duration

    left = cluster.deadline - time.time()
    state = f"ended ({cluster.ended})" if cluster.ended else (
        f"TTL {format_duration(max(left, 0))} left")
    held = " held by the Jupyter server" if getattr(cluster, "shared", False) else ""
    handle = getattr(cluster, "handle", None)
    via = "; reached through the API server's port-forward" if handle is not None and any(
        ep.pod_ip for ep in handle.endpoints) else ""
    return (f"cluster {cluster.name!r} [{cluster.options.backend}{held}] "
            f"{len(cluster.ranks)} agent(s), {state}{via}")


def status_table(cluster: Any) -> Table:
    """Per rank: its state (idle, busy, or how it ended), where it runs, dropped messages."""
    rows = []
    for row in cluster.status():
        where = f"pid {row['pid']}" if "pid" in row else str(row.get("where", "-"))
        if row.get("node"):
            where += f" on {row['node']}"
        rows.append([str(row["rank"]), str(row["state"]), where, str(row["dropped"])])
    return Table(cluster_title(cluster), ["RANK", "STATE", "WHERE", "DROPPED"], rows,
                 frozenset({0, 3}))


def top_table(cluster: Any, rows: list[dict[str, Any]],
              samples: dict[int, dict[str, Any]]) -> Table:
    """``%remote top``: a line per agent, a further line per extra GPU."""
    from .files import human_size

    def used_of(used: Any, total: Any) -> str:
        if used is None:
            return "-"
        return human_size(used) + ("" if total is None else f" / {human_size(total)}")

    options = cluster.options
    head = ["RANK", "POD", "STATE", "CPU %", "MEMORY", "GPUS", "GPU", "UTIL %", "GPU MEMORY"]
    table = []
    allocated = str(options.gpu) if options.backend != "local" or options.gpu else "-"
    for row in rows:
        sample = samples.get(row["rank"], {})
        where = f"pid {row['pid']}" if "pid" in row else str(row.get("where", "-"))
        cpu = sample.get("cpu_percent")
        gpus = sample.get("gpus") or [{}]
        for i, gpu in enumerate(gpus):
            pod = [str(row["rank"]), where, str(row["state"]),
                   "-" if cpu is None else f"{cpu:.1f}",
                   used_of(sample.get("mem_bytes"), sample.get("mem_total_bytes")),
                   allocated] if i == 0 else [""] * 6
            table.append(pod + [
                str(gpu.get("index", "-")),
                "-" if gpu.get("util_percent") is None else str(gpu["util_percent"]),
                used_of(gpu.get("mem_used_bytes"), gpu.get("mem_total_bytes"))])
    footer = [GPU_FOOTER] if any("gpus" not in samples.get(r["rank"], {}) for r in rows) else []
    return Table(cluster_title(cluster), head, table, frozenset({0, 3, 5, 6, 7}), footer)


class StartProgress:
    """Start-up stages of a cluster, one display updated in place, ending in its ready line."""

    def __init__(self, name: str, count: int, backend: str) -> None:
        self.title = f"cluster {name!r}: starting {count} {backend} agent(s)"
        self.t0 = time.perf_counter()
        self.rows: list[list[str]] = []
        self.live = Live("start")

    def __call__(self, line: str) -> None:
        self.rows = [*self.rows, [f"{time.perf_counter() - self.t0:.1f}s", line]][-8:]
        self.live.show(Table(self.title, ["AFTER", "STAGE"], self.rows, frozenset({0})).bundle())

    def ready(self, line: str) -> None:
        # how long Kueue kept it queued stays in sight once the table gives way to the line
        kept = [row[1] for row in self.rows if row[1].startswith("admitted after ")]
        self.live.show(Table(line + (f"; {kept[-1]}" if kept else "")).bundle())

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
