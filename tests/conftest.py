"""Shared fixtures: a real ipykernel with the extension loaded, in a notebook folder."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class CellResult:
    """What a notebook user would see for one cell."""

    status: str
    outputs: list[dict[str, Any]] = field(default_factory=list)  # iopub msgs, with "t"
    reply: dict[str, Any] = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs
                       if o["type"] == "stream" and o["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o["text"] for o in self.outputs
                       if o["type"] == "stream" and o["name"] == "stderr")

    @property
    def text(self) -> str:
        """What a terminal would print: stdout, and each display's text/plain form."""
        return "".join(o["text"] if o["type"] == "stream" else o["data"]["text/plain"] + "\n"
                       for o in self.outputs
                       if o["type"] == "stream" and o["name"] == "stdout"
                       or o["type"].endswith("display_data") and "text/plain" in o["data"])

    @property
    def error(self) -> dict[str, Any] | None:
        for o in self.outputs:
            if o["type"] == "error":
                return o
        return None

    @property
    def traceback_text(self) -> str:
        err = self.error
        return ANSI.sub("", "\n".join(err["traceback"])) if err else ""

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.outputs if o["type"] == kind]


class Kernel:
    """A real kernel driven through jupyter_client, as a notebook front-end does."""

    def __init__(self, km, kc, cwd: Path) -> None:
        self.km, self.kc, self.cwd = km, kc, cwd

    def run(self, code: str, timeout: float = 60, *, stdin_hook=None,
            allow_stdin: bool = False) -> CellResult:
        """Run a cell; ``stdin_hook(msg)`` answers input requests with ``self.kc.input``
        (a frontend with a prompt), else the frontend allows no stdin unless asked."""
        outputs: list[dict[str, Any]] = []

        def hook(msg: dict[str, Any]) -> None:
            kind = msg["header"]["msg_type"]
            c = msg["content"]
            if kind == "stream":
                outputs.append({"type": "stream", "name": c["name"], "text": c["text"],
                                "t": time.monotonic()})
            elif kind in ("display_data", "execute_result", "update_display_data"):
                outputs.append({"type": kind, "data": c["data"], "t": time.monotonic(),
                                "metadata": c.get("metadata", {}),
                                "display_id": c.get("transient", {}).get("display_id")})
            elif kind == "error":
                outputs.append({"type": "error", "ename": c["ename"], "evalue": c["evalue"],
                                "traceback": c["traceback"], "t": time.monotonic()})

        # stop_on_error=False: an error must not abort the next test step queued right after it
        reply = self.kc.execute_interactive(code, output_hook=hook, timeout=timeout,
                                            stop_on_error=False, stdin_hook=stdin_hook,
                                            allow_stdin=allow_stdin or stdin_hook is not None)
        return CellResult(reply["content"]["status"], outputs, reply["content"])

    def start_long_cell(self, timeout: float = 30) -> None:
        """Send a remote cell that prints "go" then sleeps, and return once "go" is shown
        (so the remote code is surely running), without waiting for the cell's end."""
        self.kc.execute("%%remote\nimport time\nprint('go', flush=True)\ntime.sleep(60)",
                        stop_on_error=False)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["header"]["msg_type"] == "stream" and "go" in msg["content"]["text"]:
                return
        raise AssertionError("the long cell never printed 'go'")

    def agent_pids(self) -> list[int]:
        return agent_pids_of(self.km.provisioner.process.pid)


def agent_pids_of(parent_pid: int) -> list[int]:
    try:
        children = psutil.Process(parent_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if _is_agent(c)]


def _is_agent(p: psutil.Process) -> bool:
    try:
        return "jupyter_kremote.agent" in " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def all_agent_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter() if _is_agent(p)}


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session", autouse=True)
def leaves_nothing_behind():
    """The whole run leaves no ``kremote-*`` folder in $TMPDIR and no agent process of its
    own (a descendant of this run, or one with this run's $TMPDIR) behind."""
    import tempfile

    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("kremote-*"))
    yield
    mine = str(tmp)

    def ours() -> list[int]:
        kids = {p.pid for p in psutil.Process().children(recursive=True)}
        out = []
        for p in psutil.process_iter():
            try:
                if _is_agent(p) and (p.pid in kids or p.environ().get("TMPDIR") == mine):
                    out.append(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return out

    assert wait_for(lambda: not ours(), 60), f"agent processes left behind: {ours()}"
    def left() -> list[str]:
        return sorted(map(str, set(tmp.glob("kremote-*")) - before))

    assert wait_for(lambda: not left(), 60), f"folders left in {tmp}: {left()}"


@pytest.fixture
def notebook_dir(tmp_path: Path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    return d


@pytest.fixture
def kernel(notebook_dir: Path):
    yield from kernel_in(notebook_dir)


def kernel_in(notebook_dir: Path):
    """A kernel with the extension loaded; afterwards, no agent left (a fixture's body)."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(notebook_dir), env=env)
    k = Kernel(km, kc, notebook_dir)
    res = k.run("%load_ext jupyter_kremote")
    assert res.status == "ok", res.outputs
    try:
        yield k
    finally:
        pids = k.agent_pids()
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        # shutting the kernel down must leave no agent behind
        assert wait_for(lambda: not any(psutil.pid_exists(p) and alive(p) for p in pids), 60), \
            f"agents left after kernel shutdown: {pids}"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
