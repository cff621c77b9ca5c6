"""Does a notebook behave the same under ``%%remote``? Run it locally and remotely, compare.

    .venv/bin/python tools/fidelity.py NOTEBOOK_OR_FOLDER... [--timeout 120] [--verbose]

Each notebook runs three times through nbclient with a real ipykernel, each run in a fresh
copy of the notebook's folder (so files a run writes do not leak into the next): twice as
written, and once with ``%load_ext jupyter_kremote`` first (not stored in the history, so
cells keep their numbers) and every non-empty code cell under ``%%remote`` (local agents).
Per code cell it compares the status, the error name, the kinds of outputs (stream names, MIME
types, in order) and, for cells whose output is the same in both local runs, their text:
streams, ``text/plain`` and ``text/html``, and errors' values and tracebacks.

Before comparing, what differs by construction is set aside: kremote's own ``[kremote]``
stderr lines and displays (metadata ``jupyter_kremote``: a cluster's start-up); consecutive
stream messages are joined, stdout's before stderr's (ipykernel
flushes each stream every 0.2 s, agents at each line, so their interleaving differs); object
addresses (``at 0x7f...``) and cell file names in ``SyntaxError`` values are
masked; a remote cell is one line longer (its ``%%remote`` line), so line numbers inside
its own frames are read one lower. Prints a table per notebook and a total; exit status 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
CELL_FILE = re.compile(r"\((?:[^()\s]*\.py|<ipython-input-[^>]*>), line (\d+)\)")
CELL_FRAME = re.compile(r"^(\s*Cell In\[)\d+(\], line )(\d+)")
CONTEXT_LINE = re.compile(r"^(-+> ?|\s{5,})(\d+)( .*)$")  # Context mode: "----> 3 f()"
KREMOTE_LINE = re.compile(r"^\[kremote\] .*\n?", re.MULTILINE)
TEXT_MIMES = ("text/plain", "text/html")


@dataclass
class CellOutcome:
    """One code cell's normalised result in one run."""

    status: str  # "ok" or "error"
    ename: str
    kinds: list[str]  # "stdout", "display_data:image/png,text/plain", "error"...
    texts: list[str]


@dataclass
class CellDiff:
    index: int
    source: str
    why: str  # "" when identical


@dataclass
class NotebookReport:
    path: Path
    cells: list[CellDiff] = field(default_factory=list)
    failure: str = ""  # the notebook could not be run at all

    @property
    def identical(self) -> int:
        return sum(not c.why for c in self.cells)


# -- running ----------------------------------------------------------------------------
def run_notebook(path: Path, *, remote: bool, timeout: float) -> list[CellOutcome]:
    """Execute ``path`` in a fresh copy of its folder; one outcome per code cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    with tempfile.TemporaryDirectory(prefix="kremote-fidelity-") as tmp:
        work = Path(tmp) / "nb"
        shutil.copytree(path.parent, work, ignore=shutil.ignore_patterns("*.ipynb", ".*"))
        if remote:  # an empty cell stays so: IPython refuses a cell magic without body
            for c in cells:
                c.source = "%%remote\n" + c.source if c.source.strip() else c.source
        env = {**os.environ, "PYTHONHASHSEED": "0", "KREMOTE_SERVER": "off"}
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                interrupt_on_timeout=True,
                                resources={"metadata": {"path": str(work)}})
        setup = nbformat.v4.new_code_cell("%load_ext jupyter_kremote")
        if remote:  # nbclient stores each cell back at its index: give this one its own
            nb.cells.insert(0, setup)
        with client.setup_kernel(cwd=str(work), env=env):
            for index, cell in enumerate(nb.cells):
                if cell is setup:
                    client.execute_cell(setup, index, store_history=False)
                    if setup.outputs:
                        raise RuntimeError(f"%load_ext jupyter_kremote failed: {setup.outputs}")
                    continue
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    cell.outputs.append(nbformat.v4.new_output(
                        "error", ename="CellTimeoutError", evalue=f"over {timeout}s",
                        traceback=[]))
    return [outcome(c.outputs, shift=c.source.startswith("%%remote\n")
                    and not c.source[9:].startswith("%%")) for c in cells]


# -- normalising -------------------------------------------------------------------------
def outcome(outputs: list[dict[str, Any]], *, shift: bool) -> CellOutcome:
    """Normalise a cell's outputs; ``shift``: the source had a ``%%remote`` line on top."""
    merged: list[dict[str, Any]] = []
    run: dict[str, str] = {}  # consecutive stream output: text per stream name
    for out in [*outputs, {"output_type": "end"}]:
        if "jupyter_kremote" in (out.get("metadata") or {}):
            continue  # kremote's own display (a cluster's start-up)
        if out["output_type"] == "stream":
            text = KREMOTE_LINE.sub("", out["text"]) if out["name"] == "stderr" else out["text"]
            run[out["name"]] = run.get(out["name"], "") + text
            continue
        # stdout before stderr: how they interleave depends on when each is flushed
        merged += [{"output_type": "stream", "name": name, "text": run[name]}
                   for name in ("stdout", "stderr") if run.get(name)]
        run = {}
        if out["output_type"] != "end":
            merged.append(out)
    kinds, texts, status, ename = [], [], "ok", ""
    for out in merged:
        kind = out["output_type"]
        if kind == "stream":
            kinds.append(out["name"])
            texts.append(_mask(out["text"]))
        elif kind in ("display_data", "execute_result"):
            kinds.append(kind + ":" + ",".join(sorted(out["data"])))
            texts.append("\n".join(_mask(str(out["data"][m])) for m in TEXT_MIMES
                                   if m in out["data"]))
        elif kind == "error":
            status, ename = "error", out["ename"]
            kinds.append("error")
            tb = "\n".join(out.get("traceback") or [])
            texts.append(f"{out['ename']}: {_evalue(out['evalue'], shift)}\n"
                         + _traceback(ANSI.sub("", tb), shift))
    return CellOutcome(status, ename, kinds, texts)


def _mask(text: str) -> str:
    return ADDRESS.sub("0x…", ANSI.sub("", text).replace("\r\n", "\n"))


def _evalue(evalue: str, shift: bool) -> str:
    return CELL_FILE.sub(lambda m: f"(<cell>, line {int(m[1]) - shift})", _mask(evalue))


def _traceback(tb: str, shift: bool) -> str:
    """Mask cell numbers; read line numbers of the cell's own frames one lower if shifted."""
    out, in_cell = [], False
    for line in _mask(tb).splitlines():
        head = CELL_FRAME.match(line)
        if head:
            in_cell = True
            line = f"{head[1]}#{head[2]}{int(head[3]) - shift}{line[head.end():]}"
        elif line.lstrip().startswith("File ") or not line.strip():
            in_cell = False  # a library's frame, or the end of this one
        elif in_cell and shift and (ctx := CONTEXT_LINE.match(line)):
            if ctx[2] == "1" and ctx[3].startswith(" # %%remote"):
                continue  # the comment that stands for the %%remote line
            width, num = len(ctx[1]) + len(ctx[2]), str(int(ctx[2]) - 1)  # a 7-wide column
            mark = "-" * (width - len(num) - 2) + "> " if ctx[1].startswith("-") else ""
            line = f"{(mark + num).rjust(width)}{ctx[3]}"
        out.append(line)
    return "\n".join(out)


# -- comparing ---------------------------------------------------------------------------
def compare(path: Path, timeout: float = 120) -> NotebookReport:
    import nbformat

    report = NotebookReport(path)
    sources = [c.source for c in nbformat.read(path, as_version=4).cells
               if c.cell_type == "code"]
    try:
        first = run_notebook(path, remote=False, timeout=timeout)
        second = run_notebook(path, remote=False, timeout=timeout)
        remote = run_notebook(path, remote=True, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - one notebook's failure is a line of the table
        report.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return report
    for i, (a, b, r) in enumerate(zip(first, second, remote)):
        report.cells.append(CellDiff(i, sources[i], _why(a, b, r)))
    return report


def _why(local: CellOutcome, again: CellOutcome, remote: CellOutcome) -> str:
    """How the remote outcome differs from the local one ("" if it does not)."""
    if local.status != remote.status:
        return f"status {local.status} locally, {remote.status} remotely ({remote.ename})"
    if local.ename != remote.ename:
        return f"error {local.ename} locally, {remote.ename} remotely"
    if local.kinds != remote.kinds:
        return f"outputs {local.kinds} locally, {remote.kinds} remotely"
    if local.texts == again.texts and local.texts != remote.texts:
        for x, y in zip(local.texts, remote.texts):
            if x != y:
                return f"text {_short(x)!r} locally, {_short(y)!r} remotely"
    return ""


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- report ------------------------------------------------------------------------------
def table(reports: list[NotebookReport], verbose: bool = False) -> str:
    width = max([len(r.path.name) for r in reports] + [8])
    lines = [f"{'notebook':<{width}}  cells  identical      %", "-" * (width + 26)]
    total = same = 0
    for r in reports:
        if r.failure:
            lines.append(f"{r.path.name:<{width}}  not run: {r.failure}")
            continue
        n, k = len(r.cells), r.identical
        total, same = total + n, same + k
        pct = 100.0 * k / n if n else 100.0
        lines.append(f"{r.path.name:<{width}}  {n:>5}  {k:>9}  {pct:5.1f}")
        if verbose:
            for c in r.cells:
                if c.why:
                    first = c.source.strip().splitlines()[0] if c.source.strip() else ""
                    lines.append(f"    cell {c.index} `{_short(first, 60)}`: {c.why}")
    pct = 100.0 * same / total if total else 100.0
    lines += ["-" * (width + 26), f"{'total':<{width}}  {total:>5}  {same:>9}  {pct:5.1f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/fidelity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="notebooks, or folders of notebooks")
    p.add_argument("--timeout", type=float, default=120, help="seconds per cell (default 120)")
    p.add_argument("--verbose", "-v", action="store_true", help="list each differing cell")
    args = p.parse_args(argv)
    notebooks = []
    for given in args.paths:
        notebooks += sorted(given.glob("*.ipynb")) if given.is_dir() else [given]
    reports = []
    for nb in notebooks:
        reports.append(compare(nb.resolve(), args.timeout))
        r = reports[-1]
        print(f"{nb.name}: {r.failure or f'{r.identical}/{len(r.cells)} identical'}",
              file=sys.stderr, flush=True)
    print(table(reports, args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
