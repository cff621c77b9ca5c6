"""Clusters Kueue evicted with ``--on-preempt requeue``: kept, shown as waiting in the queue,
and running again on fresh agents once Kueue admits their Job again.

The monitor finds the eviction (a running cluster's ``check_usable``); instead of ending the
cluster it hands it here. The model goes back to ``starting`` with ``evicted`` set (the
kernels' running cells fail with that reason, and their next cell waits), the stages show
where the Job waits, and once the fresh agents answer the model is ``running`` again with
their endpoints (kernels reconnect through ``GET clusters/<id>/connection``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from .culling import stop_entry
from .models import STARTING

if TYPE_CHECKING:
    from .monitor import Monitor
    from .registry import Entry

log = logging.getLogger("jupyter_kremote_server")


def requeued(cluster: Any) -> bool:
    """Whether Kueue evicted ``cluster`` and its Job waits to be admitted again."""
    check = getattr(cluster.backend, "requeued", None)
    return bool(check is not None and check(cluster.handle))


async def rejoin(monitor: Monitor, entry: Entry) -> None:
    """Show the requeued ``entry`` as waiting, then as running on its fresh agents (or end
    it, if the wait fails or the cluster is shut down meanwhile)."""
    cluster, m = entry.cluster, entry.model
    assert cluster is not None
    why = re.sub(r"^agent rank \d+ ended: ", "", cluster.ended or "evicted by Kueue")
    m.state, m.evicted, m.stage, m.pods, m.services = STARTING, why, why, [], []
    m.deadline = None  # the TTL starts again at the next admission (the Job's startTime)
    monitor.add_event(entry, {"type": "Warning", "message": why,
                              "reason": "Preempted" if why.startswith("preempted") else "Evicted"})
    monitor.publish(entry)
    loop = asyncio.get_running_loop()

    def progress(line: str) -> None:  # on the waiting thread: hand over to the loop
        loop.call_soon_threadsafe(monitor.stage, entry, line)

    try:
        await asyncio.to_thread(cluster.rejoin, progress, entry.cancelled)
    except Exception as exc:  # noqa: BLE001 - the cluster ends with the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        m.evicted = None
        if entry.cluster is cluster:  # not shut down meanwhile
            log.warning("kremote cluster %s did not rejoin: %s", m.id, reason)
            await stop_entry(monitor, entry, f"requeued by Kueue, then: {reason}")
        return
    if entry.cluster is not cluster:
        return  # shut down as it came back
    m.ended = None
    await monitor.running(entry, cluster, f"{m.count} fresh agent{'s' if m.count > 1 else ''} "
                          "ready after the requeue")
