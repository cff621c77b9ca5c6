"""Telemetry samples of one agent: CPU and memory of its process tree, and its GPUs.

A sample is the dict of ``docs/api.md`` ("Telemetry samples")::

    {"time": ..., "cpu_percent": ..., "mem_bytes": ..., "mem_total_bytes": ...,
     "gpus": [{"index", "name", "util_percent", "mem_used_bytes", "mem_total_bytes"}]}

``gpus`` is there only where ``import pynvml`` (nvidia-ml-py) works, ``nvmlInit`` succeeds
and at least one device is visible to this agent; an NVML error while sampling leaves it
out too. Nothing here raises: a sampler that cannot measure something omits it, never
reports a zero. Sampling is cheap (a few ``/proc`` reads and one NVML query per GPU) since
the server asks every couple of seconds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

#: a cgroup limit at or above this is "no limit" (v1 reports 2**63 rounded to a page)
_HUGE = 1 << 60
#: CPU use is measured over at least this long; a sooner request repeats the last figure
_MIN_INTERVAL = 0.1
#: how long a sample waits for NVML to initialise (it starts when the sampler is made)
_NVML_WAIT = 0.5


class Sampler:
    """Samples the process ``pid`` (default: this one) and its children.

    The sampler is primed when made: the first :meth:`sample` already reports the CPU
    use since then. Thread-safe.
    """

    def __init__(self, pid: int | None = None, *, gpus: bool = True) -> None:
        self._proc = psutil.Process(pid)
        self._lock = threading.Lock()
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> cpu seconds
        self._last_time = time.monotonic()
        self._last_percent = 0.0
        self._cpu, _ = self._tree_cpu()
        self._mem_total = memory_limit()
        self._nvml: _Nvml | None = _Nvml() if gpus else None

    def sample(self) -> dict[str, Any]:
        with self._lock, _prompt_gil():
            now = time.monotonic()
            times, rss = self._tree_cpu()
            elapsed = now - self._last_time
            if elapsed >= _MIN_INTERVAL:
                # a process new since the last sample counts from 0; an ended one drops out
                used = sum(max(t - self._cpu.get(k, 0.0), 0.0) for k, t in times.items())
                self._last_percent = round(100.0 * used / elapsed, 1)
                self._cpu, self._last_time = times, now
            out: dict[str, Any] = {"time": time.time(), "cpu_percent": self._last_percent,
                                   "mem_bytes": rss, "mem_total_bytes": self._mem_total}
            gpus = self._nvml.sample() if self._nvml is not None else None
            if gpus:
                out["gpus"] = gpus
            return out

    def _tree_cpu(self) -> tuple[dict[tuple[int, float], float], int]:
        """CPU seconds per process of the tree (keyed so a reused pid is a new process)
        and the tree's resident memory."""
        procs = [self._proc]
        try:
            procs += self._proc.children(recursive=True)
        except psutil.Error:
            pass
        times: dict[tuple[int, float], float] = {}
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())
                    mem = p.memory_info().rss
            except psutil.Error:
                continue  # ended between the listing and the read
            times[key] = t.user + t.system
            rss += mem
        return times, rss


@contextlib.contextmanager
def _prompt_gil() -> Iterator[None]:
    """Shorten the GIL switch interval while sampling.

    Reading ``/proc`` takes a few hundred system calls, each of which lets go of the GIL;
    while a cell runs a pure-Python loop, getting it back takes a whole switch interval
    (5 ms), so a sample would take most of a second instead of a few milliseconds.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(min(old, 1e-4))
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def memory_limit() -> int:
    """The cgroup's memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) where
    one is set, else the machine's memory."""
    total = psutil.virtual_memory().total
    for path in _cgroup_limit_files():
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if not text.isdigit():
            continue  # "max": no limit at this level
        value = int(text)
        if 0 < value < _HUGE:
            return min(value, total)
    return total


def _cgroup_limit_files() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    v2: list[Path] = []
    v1: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "" and rel:
            v2.append(root / rel / "memory.max")
        elif "memory" in controllers.split(",") and rel:
            v1.append(root / "memory" / rel / "memory.limit_in_bytes")
    # in a container (its own cgroup namespace) the pod's cgroup is the root
    return [*v2, root / "memory.max", *v1, root / "memory" / "memory.limit_in_bytes"]


class _Nvml:
    """NVML, initialised in the background; per-GPU figures of the devices this agent may use."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._mod: Any = None
        self._devices: list[tuple[int, Any, str, str]] = []  # (index, handle, name, uuid)
        threading.Thread(target=self._init, name="kremote-nvml", daemon=True).start()

    def _init(self) -> None:
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the old "pynvml" package warns on import
                import pynvml
            pynvml.nvmlInit()
            devices = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                devices.append((i, handle, _text(pynvml.nvmlDeviceGetName(handle)),
                                _text(pynvml.nvmlDeviceGetUUID(handle))))
            self._mod, self._devices = pynvml, devices
        except BaseException:  # noqa: BLE001 - no NVML, no driver, no GPU: no "gpus" key
            self._mod, self._devices = None, []
        finally:
            self._ready.set()

    def sample(self) -> list[dict[str, Any]] | None:
        if not self._ready.wait(_NVML_WAIT) or self._mod is None:
            return None
        nvml = self._mod
        try:
            out = []
            for index, handle, name, _ in visible(self._devices, os.environ):
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                out.append({"index": index, "name": name, "util_percent": int(util.gpu),
                            "mem_used_bytes": int(mem.used), "mem_total_bytes": int(mem.total)})
            return out or None
        except BaseException:  # noqa: BLE001 - an NVML error: leave the figures out
            return None


def visible(devices: list[tuple[int, Any, str, str]], env: Any) -> list[tuple[int, Any, str, str]]:
    """The ``(index, handle, name, uuid)`` devices this process may use.

    ``NVIDIA_VISIBLE_DEVICES`` (the container runtime's) first, indices or UUIDs, but only
    where NVML sees more devices than it lists: a runtime that applied the variable already
    left only those devices, renumbered from 0. Then ``CUDA_VISIBLE_DEVICES``
    (indices or UUID prefixes, read like CUDA: up to the first entry that matches nothing);
    set but empty means none.
    """
    nv = env.get("NVIDIA_VISIBLE_DEVICES")
    if nv is not None:
        value = nv.strip().lower()
        if value in ("none", "void", ""):
            if value != "":  # empty: the runtime treats it as unset
                return []
        elif value != "all":
            entries = [e.strip() for e in nv.split(",") if e.strip()]
            if len(devices) > len(entries):  # else the runtime already applied it
                indices = {int(e) for e in entries if e.isdigit()}
                uuids = [e for e in entries if not e.isdigit()]
                devices = [d for d in devices
                           if d[0] in indices or any(_uuid_match(d[3], u) for u in uuids)]
    cuda = env.get("CUDA_VISIBLE_DEVICES")
    if cuda is None:
        return list(devices)
    chosen: list[tuple[int, Any, str, str]] = []
    for entry in (e.strip() for e in cuda.split(",")):
        if entry.lstrip("-").isdigit():
            match = [d for d in devices if d[0] == int(entry)]
        else:
            match = [d for d in devices if entry and _uuid_match(d[3], entry)]
        if len(match) != 1 or match[0] in chosen:
            break  # CUDA ignores an invalid entry and everything after it
        chosen.append(match[0])
    return chosen


def _uuid_match(uuid: str, entry: str) -> bool:
    """``GPU-8a1f...`` matches a full UUID or a unique prefix, with or without ``GPU-``."""
    u, e = uuid.lower(), entry.lower()
    return u.startswith(e) or u.removeprefix("gpu-").startswith(e.removeprefix("gpu-"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
