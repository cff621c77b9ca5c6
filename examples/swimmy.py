"""Swimmy's mpi_train on jupyter-kremote: a CPU "preprocess" group streams batches to a
"train" group (GPUs on Kubernetes), in one cluster with one TTL.

    python examples/swimmy.py                                # local agents
    KREMOTE_BACKEND=kubernetes python examples/swimmy.py     # pods: one Job per group
"""

import asyncio
import os

import numpy as np

import jupyter_kremote as kremote
from jupyter_kremote import KubeCluster, LocalCluster, PodSpec

TRUE_W = np.arange(8.0)


@kremote.remote
def hello(name):
    return f"hello {name} from {kremote.group()} rank {kremote.rank()}"


def preprocess(batches):
    """A preprocess rank: make batches and stream them to "its" train rank."""
    rng = np.random.default_rng(kremote.rank())
    to = kremote.rank() % len(kremote.peers("train"))
    with kremote.Outbox("train", rank=to) as out:
        for _ in range(batches):
            x = rng.normal(size=(256, 8))
            out.send((x, x @ TRUE_W + 0.01 * rng.normal(size=256)))  # arrays: zero-copy
    return batches


def train(steps_per_batch=4, lr=0.05):
    """A train rank: SGD on whatever its preprocess ranks send, until they close."""
    senders = sum(1 for r in range(len(kremote.peers("preprocess")))
                  if r % len(kremote.peers("train")) == kremote.rank())
    w = np.zeros(8)
    with kremote.Inbox() as inbox:
        for x, y in inbox.stream(senders=senders, timeout=120):
            for _ in range(steps_per_batch):
                w -= lr * 2 * x.T @ (x @ w - y) / len(y)
    return w


async def main():
    image = os.environ.get("KREMOTE_IMAGE")  # pods: an image with jupyter-kremote
    groups = {"preprocess": PodSpec(image=image, cpu="500m", count=2),
              "train": PodSpec(image=image, cpu="500m", gpu=int(os.environ.get("GPUS", "0")),
                               count=2)}
    kube = os.environ.get("KREMOTE_BACKEND") == "kubernetes"
    cluster = KubeCluster(name="swimmy", groups=groups) if kube else LocalCluster(
        name="swimmy", groups=groups)
    async with cluster:
        print(await hello.on(cluster, group="train")("Swimmy"))
        sent, weights = await asyncio.gather(
            cluster.call(preprocess, 20, group="preprocess"),
            cluster.call(train, group="train"))
        w = np.mean(weights, axis=0)
        print("batches sent:", sent)
        print("weights:", np.round(w, 1).tolist())
        print("close to the truth:", bool(np.allclose(w, TRUE_W, atol=0.05)))


if __name__ == "__main__":
    asyncio.run(main())
