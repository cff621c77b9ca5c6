"""Run the emulator as a process: `python -m tests.kubesim --port 0 --kubeconfig PATH`.

Prints the server URL (plain HTTP) on the first line of stdout and the HTTPS one (which the
kubeconfig names, as kubectl sends tokens only over HTTPS) on the second, then serves until SIGTERM or SIGINT, when
it kills every pod process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .config import KubeSimConfig
from .scheduler import NodeSpec
from .server import KubeSim


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.kubesim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--kubeconfig", help="write a kubeconfig for the emulator here")
    p.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    p.add_argument("--token", help="bearer token (random by default)")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes")
    p.add_argument("--cpu", default="8", help="allocatable CPU per node")
    p.add_argument("--memory", default="32Gi", help="allocatable memory per node")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu per node")
    p.add_argument("--pod-ips", choices=("shared", "unique", "ipv6"), default="shared")
    p.add_argument("--unknown-image-prefix", action="append", default=None,
                   help="images starting with this fail to pull (default: unknown/)")
    p.add_argument("--rbac", action="store_true",
                   help="enforce RBAC (the kubeconfig's token is cluster-admin)")
    p.add_argument("--kueue", action="store_true",
                   help="serve Kueue's LocalQueue/ClusterQueue API (stored, not enforced)")
    p.add_argument("--workdir", help="folder for pod working folders (kept)")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    config = KubeSimConfig(
        host=args.host, port=args.port, pod_ips=args.pod_ips, workdir=args.workdir,
        rbac=args.rbac, kueue=args.kueue,
        nodes=[NodeSpec(f"kubesim-node-{i}", args.cpu, args.memory, args.gpus)
               for i in range(args.nodes)])
    if args.token:
        config.token = args.token
    if args.unknown_image_prefix is not None:
        config.unknown_image_prefixes = args.unknown_image_prefix
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeSim(config) as sim:
        if args.kubeconfig:
            sim.write_kubeconfig(args.kubeconfig, args.namespace)
        print(sim.url, flush=True)
        if sim.https_url:
            print(sim.https_url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(serve(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
