"""Container processes: each runs in its own session (process group) so that killing the group
stops everything it started; an atexit hook kills whatever is still alive."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal

from .logs import LogBuffer
from .util import within

_LIVE_GROUPS: set[int] = set()


def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    _LIVE_GROUPS.clear()


atexit.register(_kill_leftovers)


async def start(argv: list[str], cwd: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start `argv` with stdout and stderr on one pipe (interleaved as written)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    _LIVE_GROUPS.add(proc.pid)
    return proc


def signal_group(proc: asyncio.subprocess.Process | None, sig: int) -> bool:
    """Send `sig` to the process's whole group; False if nothing was there."""
    if proc is None:
        return False
    try:
        os.killpg(proc.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def forget(proc: asyncio.subprocess.Process) -> None:
    """The group is gone (killed after its leader exited)."""
    _LIVE_GROUPS.discard(proc.pid)


def exit_code(returncode: int) -> int:
    """A container's exit code: signals become 128+N, as container runtimes report them."""
    return 128 - returncode if returncode < 0 else returncode


async def pump(proc: asyncio.subprocess.Process, log: LogBuffer) -> None:
    """Copy the process's output into `log` until the pipe closes."""
    assert proc.stdout is not None
    while True:
        data = await proc.stdout.read(65536)
        if not data:
            return
        log.write(data)


async def wait(proc: asyncio.subprocess.Process, log: LogBuffer) -> int:
    """Wait for the leader to exit, kill what it left in its group, drain output, close log."""
    reader = asyncio.ensure_future(pump(proc, log))
    try:
        returncode = await proc.wait()
    finally:
        signal_group(proc, signal.SIGKILL)
        forget(proc)
        try:
            await within(asyncio.shield(reader), 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            reader.cancel()
        log.close()
    return exit_code(returncode)
