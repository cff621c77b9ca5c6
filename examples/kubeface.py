"""kubeface's map on jupyter-kremote: ``client.map(lambda x: x**2, range(10))``, load
balanced over the agents, with retries, re-runs and results as they come.

    python examples/kubeface.py                                # local agents
    KREMOTE_BACKEND=kubernetes python examples/kubeface.py     # pods
"""

import asyncio
import os

from jupyter_kremote import KubeCluster, LocalCluster, PodSpec
from jupyter_kremote.errors import RemoteError


def slow_square(x):
    import time

    time.sleep(0.01)
    return x * x


async def main():
    spec = PodSpec(image=os.environ.get("KREMOTE_IMAGE"), cpu="500m", count=3)
    kube = os.environ.get("KREMOTE_BACKEND") == "kubernetes"
    cluster = KubeCluster(name="kubeface", spec=spec) if kube else LocalCluster(
        name="kubeface", count=spec.count)
    async with cluster:
        print(await cluster.map(lambda x: x**2, range(10)))
        total = 0
        async for y in cluster.map_iter(slow_square, range(300)):  # as they come
            total += y
        print("sum of squares:", total)
        try:
            await cluster.map(lambda x: 1 / (x - 7), range(10), retries=1)
        except RemoteError as e:  # named after the remote type, naming the input
            print(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    asyncio.run(main())
