"""ClusterOptions: what a cluster is started with, as the magics, the API and the server
pass it around (a flat record; ``to_spec`` gives the backends' PodSpec)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec import PodSpec


@dataclass
class ClusterOptions:
    """What a cluster is started with; the pod fields matter on Kubernetes only."""

    count: int = 1
    ttl: float = 3600.0
    backend: str = "local"
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 30.0
    templates: list[str] = field(default_factory=list)
    image: str | None = None
    cpu: str | None = None
    mem: str | None = None
    gpu: int = 0
    gpu_type: str | None = None
    namespace: str | None = None
    group: str = "main"  # which pod group of its cluster this is (podgroups.py)
    connect: str | None = None  # Kubernetes: auto | direct | port-forward
    queue: str | None = None  # Kueue LocalQueue (else the admin's KREMOTE_QUEUE)
    priority: str | None = None  # Kueue WorkloadPriorityClass
    queue_timeout: float | None = None  # longest wait in the queue; None: no limit
    on_preempt: str = "requeue"  # after a Kueue eviction: "requeue" or "end"

    def to_spec(self) -> PodSpec:
        return PodSpec(image=self.image, cpu=self.cpu, mem=self.mem, gpu=self.gpu,
                       gpu_type=self.gpu_type, count=self.count, env=dict(self.env),
                       secret_env=dict(self.secret_env), templates=list(self.templates),
                       ttl=self.ttl, connect_timeout=self.connect_timeout,
                       namespace=self.namespace, group=self.group, connect=self.connect,
                       queue=self.queue, priority=self.priority,
                       queue_timeout=self.queue_timeout, on_preempt=self.on_preempt)
