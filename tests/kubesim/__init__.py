"""kubesim: a small Kubernetes API emulator for tests (see server.KubeSim).

    async with KubeSim() as sim:
        sim.write_kubeconfig(path)   # kubectl and kubernetes_asyncio talk to sim.url
"""

from .config import KubeSimConfig
from .control import KubeSimControl
from .faults import ErrorRule
from .kubeconfig import kubeconfig_dict, read_kubeconfig, write_kubeconfig
from .scheduler import NodeSpec
from .server import KubeSim, KubeSimThread

__all__ = ["ErrorRule", "KubeSim", "KubeSimConfig", "KubeSimControl", "KubeSimThread",
           "NodeSpec", "kubeconfig_dict", "read_kubeconfig", "write_kubeconfig"]
