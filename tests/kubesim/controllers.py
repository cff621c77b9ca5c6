"""The controller loop: scheduler, Job controller and garbage collector, run after every
change to the store and on a short timer (deadlines, retries, TTLs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .disruption import Disruptions
from .gc import Deleter
from .jobs import JobController
from .resources import NODES, PODS
from .scheduler import Scheduler
from .store import DELETED, Change, Store
from .util import wait_event

log = logging.getLogger(__name__)


class ControllerManager:
    """Runs every controller's pass in one task, in a fixed order."""

    def __init__(self, store: Store, scheduler: Scheduler, jobs: JobController,
                 deleter: Deleter, interval: float) -> None:
        self.store = store
        self.scheduler = scheduler
        self.jobs = jobs
        self.deleter = deleter
        self.interval = interval
        self.disruptions: Disruptions | None = None
        self.kueue: Any = None  # kueue.Kueue, when the emulator has one
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        store.add_listener(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.rt is PODS:
            terminal = ("Succeeded", "Failed")
            was = ((change.old or {}).get("status") or {}).get("phase")
            now = (change.obj.get("status") or {}).get("phase")
            if was not in terminal and (change.type == DELETED or now in terminal):
                self.scheduler.kick()  # room was freed
        elif change.rt is NODES:
            self.scheduler.kick()
        self._wake.set()

    def run_once(self) -> None:
        self.scheduler.schedule()
        if self.kueue is not None:
            self.kueue.reconcile()
        self.jobs.reconcile_all()
        self.deleter.collect()
        self.jobs.admission.sync_quotas()
        if self.disruptions is not None:
            self.disruptions.sweep_taints()

    async def _loop(self) -> None:
        while not self._stopping:
            await wait_event(self._wake, self.interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.run_once()
            except Exception:  # keep the cluster alive; the failure shows in the log
                log.exception("kubesim controller pass failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
