"""The kubelet: runs each bound pod's containers as local processes and reports their status.

Per container: image check (InvalidImageName, ErrImagePull/ImagePullBackOff for unknown
images, Pulling/Pulled), config (Secrets/ConfigMaps, CreateContainerConfigError), start,
readiness probe, exit (Completed/Error/OOMKilled), restarts with CrashLoopBackOff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import time
from typing import Any

from . import errors, processes
from .config import KubeSimConfig
from .events import EventRecorder
from .logs import LogBuffer
from .podenv import ConfigError, container_env, expand
from .probes import probe_once, resolve_port
from .resources import NODES, PODS
from .runtime import Container, PodRuntime, full_image_ref, valid_image
from .scheduler import set_condition
from .store import DELETED, Change, Store
from .util import dig, rfc3339, wait_event, within

COMPONENT = "kubelet"
TERMINAL = ("Succeeded", "Failed")
SLEEPER = "import time\nwhile True:\n    time.sleep(3600)"


class Kubelet:
    """Runs pods bound to the emulated nodes."""

    def __init__(self, store: Store, recorder: EventRecorder, config: KubeSimConfig,
                 root: str, api_host: str, api_port: int) -> None:
        self.store = store
        self.recorder = recorder
        self.config = config
        self.root = root
        self.api_host, self.api_port = api_host, api_port
        self.pods: dict[str, PodRuntime] = {}
        self.present_images: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_ip = 2
        # A random 127.X/16 per emulator, so that emulators running side by side (parallel
        # test sessions) do not hand out the same pod IPs.
        self._ip_block = random.randint(1, 254)
        self._closing = False

    # ------------------------------------------------------------------ plumbing
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _allocate_ip(self) -> str:
        if self.config.pod_ips == "ipv6":
            return "::1"
        if self.config.pod_ips != "unique":
            return "127.0.0.1"
        while True:
            n, self._next_ip = self._next_ip, self._next_ip + 1
            if n & 255 not in (0, 255):
                return f"127.{self._ip_block}.{(n >> 8) & 255}.{n & 255}"

    def has_containers(self, uid: str) -> bool:
        rt = self.pods.get(uid)
        return rt is not None and not rt.finished

    def on_change(self, change: Change) -> None:
        """Store listener (synchronous: only schedules work)."""
        if change.rt is not PODS or self._closing:
            return
        pod, uid = change.obj, change.obj["metadata"]["uid"]
        rt = self.pods.get(uid)
        if change.type == DELETED:
            if rt is not None:
                self._spawn(self._terminate(rt, 0, remove=False))
            return
        node = dig(pod, "spec", "nodeName")
        if not node or self.store.peek(NODES, "", node) is None:
            return
        if pod["metadata"].get("deletionTimestamp"):
            if rt is not None and not rt.terminating:
                rt.terminating = True
                grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                self._spawn(self._terminate(rt, grace, remove=True))
            elif rt is None:
                asyncio.get_running_loop().call_soon(self._remove_if_deleting, pod)
            return
        if rt is None and dig(pod, "status", "phase") not in TERMINAL:
            workdir = os.path.join(self.root, pod["metadata"]["namespace"],
                                   pod["metadata"]["name"])
            rt = PodRuntime(pod, workdir, self._allocate_ip())
            self.pods[uid] = rt
            rt.task = self._spawn(self._run_pod(rt))

    def _remove_if_deleting(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        current = self.store.peek(PODS, meta["namespace"], meta["name"])
        if current is not None and current["metadata"]["uid"] == meta["uid"] \
                and meta["uid"] not in self.pods:
            self.store.remove(PODS, meta["namespace"], meta["name"])

    def _pod(self, rt: PodRuntime) -> dict[str, Any] | None:
        pod = self.store.peek(PODS, rt.namespace, rt.name)
        return pod if pod is not None and pod["metadata"]["uid"] == rt.uid else None

    def _event(self, rt: PodRuntime, type_: str, reason: str, message: str,
               c: Container | None = None) -> None:
        pod = self._pod(rt)
        if pod is not None:
            path = None if c is None else (
                f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}")
            self.recorder.record(PODS, pod, type_, reason, message, COMPONENT, rt.node, path)

    async def _sleep(self, rt: PodRuntime, seconds: float) -> bool:
        """Sleep unless the pod is stopped first; True if it was stopped."""
        return await wait_event(rt.stop, seconds)

    # ------------------------------------------------------------------ status
    def _phase(self, rt: PodRuntime, policy: str) -> str:
        if rt.evicted:
            return "Failed"
        if not rt.init_done:
            failed_init = any("terminated" in c.state and c.exit_code for c in rt.init)
            return "Failed" if failed_init and policy == "Never" and rt.finished else "Pending"
        waiting = running = stopped = succeeded = 0
        for c in rt.containers:
            if "running" in c.state:
                running += 1
            elif "terminated" in c.state:
                stopped += 1
                succeeded += c.state["terminated"]["exitCode"] == 0
            elif c.last_state.get("terminated"):
                stopped += 1
            else:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        n = len(rt.containers)
        if policy == "Always" or (policy == "OnFailure" and succeeded < n):
            return "Running"
        return "Succeeded" if succeeded == n else "Failed"

    def sync(self, rt: PodRuntime) -> None:
        """Write the pod's status from the runtime state."""
        pod = self._pod(rt)
        if pod is None:
            return
        policy = dig(pod, "spec", "restartPolicy", default="Always")
        phase = self._phase(rt, policy)

        def update(p: dict[str, Any]) -> None:
            s = p.setdefault("status", {})
            host = "::1" if self.config.pod_ips == "ipv6" else "127.0.0.1"
            s.update({"phase": phase, "hostIP": host, "hostIPs": [{"ip": host}],
                      "podIP": rt.ip, "podIPs": [{"ip": rt.ip}], "startTime": rt.started_at})
            s["containerStatuses"] = [c.status() for c in rt.containers]
            if rt.init:
                s["initContainerStatuses"] = [c.status() for c in rt.init]
            terminal = phase in TERMINAL
            set_condition(s, "PodReadyToStartContainers", "False" if terminal else "True")
            pending_init = [c.name for c in rt.init if not ("terminated" in c.state
                                                            and c.exit_code == 0)]
            if rt.init_done or not pending_init:
                set_condition(s, "Initialized", "True")
            else:
                set_condition(s, "Initialized", "False", "ContainersNotInitialized",
                              f"containers with incomplete status: [{' '.join(pending_init)}]")
            unready = [c.name for c in rt.containers if not c.ready]
            for ctype in ("ContainersReady", "Ready"):
                if terminal:
                    set_condition(s, ctype, "False", "PodCompleted")
                elif unready:
                    set_condition(s, ctype, "False", "ContainersNotReady",
                                  f"containers with unready status: [{' '.join(unready)}]")
                else:
                    set_condition(s, ctype, "True")
            if rt.evicted:
                s["reason"], s["message"] = "Evicted", rt.evicted
                set_condition(s, "DisruptionTarget", "True", "TerminationByKubelet", rt.evicted)
        self.store.mutate(PODS, rt.namespace, rt.name, update)
        if phase in TERMINAL:
            rt.finished = True

    # ------------------------------------------------------------------ pod lifecycle
    async def _run_pod(self, rt: PodRuntime) -> None:
        os.makedirs(rt.workdir, exist_ok=True)
        self.sync(rt)
        try:
            for c in rt.init:
                if not await self._run_container(rt, c):
                    if not rt.stop.is_set():
                        rt.finished = True
                        self.sync(rt)
                    return
            rt.init_done = True
            await asyncio.gather(*(self._run_container(rt, c) for c in rt.containers))
        finally:
            if not rt.stop.is_set() or rt.evicted:
                self.sync(rt)
            rt.finished = True

    async def _run_container(self, rt: PodRuntime, c: Container) -> bool:
        """Run one container until it is done for good; True if it ended with exit code 0."""
        backoff = self.config.crash_backoff
        while not rt.stop.is_set():
            if not await self._pull(rt, c):
                return False
            env = await self._config(rt, c)
            if env is None:
                return False
            code = await self._start_and_wait(rt, c, env)
            pod = self._pod(rt)
            policy = dig(pod or {}, "spec", "restartPolicy", default="Never")
            if rt.stop.is_set() or rt.evicted or pod is None:
                return code == 0
            if c.init:
                if code == 0 or policy == "Never":
                    return code == 0
            elif policy == "Never" or (policy == "OnFailure" and code == 0):
                return code == 0
            c.last_state = {"terminated": c.state["terminated"]}
            c.restart_count += 1
            c.waiting("CrashLoopBackOff",
                      f"back-off {int(max(1, backoff))}s restarting failed container={c.name} "
                      f"pod={rt.name}_{rt.namespace}({rt.uid})")
            self._event(rt, "Warning", "BackOff", f"Back-off restarting failed container "
                        f"{c.name} in pod {rt.name}_{rt.namespace}({rt.uid})", c)
            self.sync(rt)
            if await self._sleep(rt, backoff):
                return False
            backoff = min(backoff * 2, self.config.crash_backoff_max)
        return False

    def _unknown(self, image: str) -> bool:
        return image in self.config.unknown_images or any(
            image.startswith(p) for p in self.config.unknown_image_prefixes)

    async def _pull(self, rt: PodRuntime, c: Container) -> bool:
        image = str(c.spec.get("image", ""))
        if not valid_image(image):
            msg = (f'Failed to apply default image tag "{image}": couldn\'t parse image name '
                   f'"{image}": invalid reference format')
            c.waiting("InvalidImageName", msg)
            self._event(rt, "Warning", "InspectFailed", msg, c)
            self._event(rt, "Warning", "Failed", "Error: InvalidImageName", c)
            self.sync(rt)
            await rt.stop.wait()
            return False
        backoff = self.config.pull_backoff
        while self._unknown(image):
            self._event(rt, "Normal", "Pulling", f'Pulling image "{image}"', c)
            if await self._sleep(rt, self.config.pull_delay):
                return False
            if not self._unknown(image):
                break
            ref = full_image_ref(image)
            msg = (f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed '
                   f'to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
                   f'{ref}: not found')
            c.waiting("ErrImagePull", msg)
            self._event(rt, "Warning", "Failed", msg, c)
            self._event(rt, "Warning", "Failed", "Error: ErrImagePull", c)
            self.sync(rt)
            if await self._sleep(rt, backoff):
                return False
            c.waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')
            self._event(rt, "Normal", "BackOff", f'Back-off pulling image "{image}"', c)
            self._event(rt, "Warning", "Failed", "Error: ImagePullBackOff", c)
            self.sync(rt)
            if await self._sleep(rt, backoff):
                return False
            backoff = min(backoff * 2, self.config.pull_backoff_max)
        policy = c.spec.get("imagePullPolicy", "IfNotPresent")
        if policy == "Never" or (policy == "IfNotPresent" and image in self.present_images):
            self._event(rt, "Normal", "Pulled",
                        f'Container image "{image}" already present on machine', c)
            return True
        self._event(rt, "Normal", "Pulling", f'Pulling image "{image}"', c)
        began = time.monotonic()
        if await self._sleep(rt, self.config.pull_delay):
            return False
        ms = int((time.monotonic() - began) * 1000)
        self._event(rt, "Normal", "Pulled", f'Successfully pulled image "{image}" in {ms}ms '
                    f"({ms}ms including waiting). Image size: 0 bytes.", c)
        self.present_images.add(image)
        return True

    def _base_env(self, rt: PodRuntime, pod: dict[str, Any]) -> dict[str, str]:
        env = dict(os.environ) if self.config.inherit_env else {}
        env.update({
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": rt.workdir,
            "HOSTNAME": dig(pod, "spec", "hostname") or rt.name,
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
            "KUBERNETES_PORT": f"tcp://{self.api_host}:{self.api_port}",
            "KUBESIM_POD_IP": rt.ip, "KUBESIM_POD_NAME": rt.name,
            "KUBESIM_NAMESPACE": rt.namespace, "KUBESIM_WORKDIR": rt.workdir,
        })
        for key, value in self.config.extra_env.items():
            env[key] = expand(str(value), env)
        return env

    async def _config(self, rt: PodRuntime, c: Container) -> dict[str, str] | None:
        while not rt.stop.is_set():
            pod = self._pod(rt)
            if pod is None:
                return None
            node = self.store.peek(NODES, "", rt.node) or {}
            try:
                return container_env(self.store, pod, c.spec, self._base_env(rt, pod),
                                     dig(node, "status", "allocatable", default={}))
            except ConfigError as exc:
                c.waiting("CreateContainerConfigError", str(exc))
                self._event(rt, "Warning", "Failed", f"Error: {exc}", c)
                self.sync(rt)
                await self._sleep(rt, self.config.config_retry)
        return None

    def _argv(self, c: Container, env: dict[str, str]) -> list[str]:
        command = [expand(str(x), env) for x in c.spec.get("command") or []]
        args = [expand(str(x), env) for x in c.spec.get("args") or []]
        if not command:
            image = str(c.spec.get("image", ""))
            entry = self.config.image_entrypoints.get(image) or \
                self.config.image_entrypoints.get(image.rsplit(":", 1)[0])
            command = list(entry) if entry else ([] if args else
                                                 [self.config.python, "-c", SLEEPER])
        argv = command + args
        if argv and argv[0] in ("python", "python3"):
            argv[0] = self.config.python
        return argv

    async def _start_and_wait(self, rt: PodRuntime, c: Container, env: dict[str, str]) -> int:
        argv = self._argv(c, env)
        c.container_id = "containerd://" + os.urandom(32).hex()
        c.kill_reason = None
        log = LogBuffer()
        c.logs.append(log)
        started = rfc3339()
        self._event(rt, "Normal", "Created", f"Created container {c.name}", c)
        try:
            proc = await processes.start(argv, rt.workdir, env)
        except OSError as exc:
            log.close()
            msg = (f"failed to create containerd task: failed to create shim task: OCI runtime "
                   f"create failed: runc create failed: unable to start container process: "
                   f'exec: "{argv[0] if argv else ""}": {exc.strerror or exc}: unknown')
            c.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": msg,
                                      "startedAt": "1970-01-01T00:00:00Z",
                                      "finishedAt": rfc3339(), "containerID": c.container_id}}
            c.exit_code = 128
            self._event(rt, "Warning", "Failed", f"Error: {msg}", c)
            self.sync(rt)
            return 128
        c.proc = proc
        if rt.stop.is_set():  # stopped while starting: do not leave it running
            processes.signal_group(proc, signal.SIGKILL)
        c.state = {"running": {"startedAt": started}}
        c.ready = not c.spec.get("readinessProbe") and not c.init
        self._event(rt, "Normal", "Started", f"Started container {c.name}", c)
        self.sync(rt)
        probe = self._spawn(self._readiness(rt, c, proc, env)) \
            if c.spec.get("readinessProbe") and not c.init else None
        try:
            code = await processes.wait(proc, log)
        finally:
            if probe is not None:
                probe.cancel()
        c.proc = None
        c.ready = False
        c.exit_code = code
        reason = c.kill_reason if c.kill_reason == "OOMKilled" else (
            "Completed" if code == 0 else "Error")
        c.state = {"terminated": {"exitCode": code, "reason": reason, "startedAt": started,
                                  "finishedAt": rfc3339(), "containerID": c.container_id}}
        self.sync(rt)
        return code

    async def _readiness(self, rt: PodRuntime, c: Container,
                         proc: asyncio.subprocess.Process, env: dict[str, str]) -> None:
        probe = c.spec["readinessProbe"]
        if await self._sleep(rt, float(probe.get("initialDelaySeconds") or 0)):
            return
        period = float(probe.get("periodSeconds") or 10)
        need_ok, need_bad = int(probe.get("successThreshold") or 1), int(
            probe.get("failureThreshold") or 3)
        ok = bad = 0
        while proc.returncode is None and not rt.stop.is_set():
            if await probe_once(probe, c.spec, rt.ip, env, rt.workdir):
                ok, bad = ok + 1, 0
                if not c.ready and ok >= need_ok and proc.returncode is None:
                    c.ready = True
                    self.sync(rt)
            else:
                ok, bad = 0, bad + 1
                self._event(rt, "Warning", "Unhealthy", "Readiness probe failed: "
                            f"{_probe_target(probe, c.spec, rt.ip)}: connect: connection "
                            "refused", c)
                if c.ready and bad >= need_bad:
                    c.ready = False
                    self.sync(rt)
            if await self._sleep(rt, period):
                return

    # ------------------------------------------------------------------ stopping
    async def _terminate(self, rt: PodRuntime, grace: float, remove: bool) -> None:
        """Stop a pod's containers (SIGTERM, then SIGKILL after the grace period)."""
        rt.stop.set()
        running = [c for c in rt.all() if c.proc is not None]
        for c in running:
            c.kill_reason = c.kill_reason or "Killing"
            self._event(rt, "Normal", "Killing", f"Stopping container {c.name}", c)
            processes.signal_group(c.proc, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + min(grace, self.config.max_grace_seconds)
        while any(c.proc is not None for c in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in running:
            processes.signal_group(c.proc, signal.SIGKILL)
        if rt.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await within(asyncio.shield(rt.task), 5.0)
        if remove and self._pod(rt) is not None:
            self.sync(rt)
            self.store.remove(PODS, rt.namespace, rt.name)
        self.pods.pop(rt.uid, None)
        if not self.config.keep_workdirs:
            shutil.rmtree(rt.workdir, ignore_errors=True)

    def find(self, namespace: str, name: str) -> PodRuntime | None:
        return next((rt for rt in self.pods.values()
                     if rt.namespace == namespace and rt.name == name), None)

    def oom_kill(self, namespace: str, name: str, container: str | None = None) -> int:
        """Kill a container as the kernel OOM killer would; returns the killed pid."""
        rt = self.find(namespace, name)
        c = None if rt is None else (rt.find(container) if container else next(
            (x for x in rt.all() if x.proc is not None), None))
        if rt is None or c is None or c.proc is None:
            raise errors.bad_request(f"no running container to OOM-kill in {namespace}/{name}")
        pid = c.proc.pid
        c.kill_reason = "OOMKilled"
        processes.signal_group(c.proc, signal.SIGKILL)
        node = self.store.peek(NODES, "", rt.node)
        if node is not None:
            self.recorder.record(NODES, node, "Warning", "OOMKilling",
                                 f"Memory cgroup out of memory: Killed process {pid} "
                                 f"({os.path.basename(str(self._argv_name(c)))}) total-vm:0kB, "
                                 f"anon-rss:0kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:0kB "
                                 f"oom_score_adj:1000", "kernel-monitor", rt.node)
        return pid

    @staticmethod
    def _argv_name(c: Container) -> str:
        return (c.spec.get("command") or c.spec.get("args") or ["sh"])[0]

    def evict(self, namespace: str, name: str, message: str | None = None) -> None:
        """Evict a pod the way the kubelet does under node pressure."""
        pod = self.store.peek(PODS, namespace, name)
        if pod is None:
            raise errors.not_found("pods", "", name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        message = message or (f"The node was low on resource: memory. Threshold quantity: "
                              f"100Mi, available: 51200Ki. Container {names[0]} was using "
                              f"1048576Ki, request is 0, has larger consumption of memory. ")
        rt = self.find(namespace, name)
        if rt is None:
            def mark(p: dict[str, Any]) -> None:
                s = p.setdefault("status", {})
                s.update({"phase": "Failed", "reason": "Evicted", "message": message})
            self.store.mutate(PODS, namespace, name, mark)
            self.recorder.record(PODS, pod, "Warning", "Evicted", message, COMPONENT)
            return
        rt.evicted = message
        rt.stop.set()
        self._event(rt, "Warning", "Evicted", message)
        for c in rt.all():
            if c.proc is not None:
                self._event(rt, "Normal", "Killing", f"Stopping container {c.name}", c)
                processes.signal_group(c.proc, signal.SIGKILL)
        self.sync(rt)

    async def shutdown(self) -> None:
        """Kill every process of every pod and wait for the pod tasks to end."""
        self._closing = True
        for rt in list(self.pods.values()):
            rt.stop.set()
            for c in rt.all():
                processes.signal_group(c.proc, signal.SIGKILL)
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.pods.clear()

    # ------------------------------------------------------------------ logs
    def log_buffer(self, pod: dict[str, Any], container: str | None, previous: bool
                   ) -> LogBuffer | None:
        """The log a pods/log request reads; None for an unscheduled pod (empty answer)."""
        name = pod["metadata"]["name"]
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        init_names = [c["name"] for c in pod["spec"].get("initContainers") or []]
        if container is None:
            if len(names) != 1:
                extra = (f" or one of the init containers: [{' '.join(init_names)}]"
                         if init_names else "")
                raise errors.bad_request(f"a container name must be specified for pod {name}, "
                                         f"choose one of: [{' '.join(names)}]{extra}")
            container = names[0]
        if container not in names + init_names:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        if not dig(pod, "spec", "nodeName"):
            return None
        rt = self.pods.get(pod["metadata"]["uid"])
        c = rt.find(container) if rt else None
        if previous:
            if c is None or len(c.logs) < 2:
                raise errors.bad_request(f'previous terminated container "{container}" in pod '
                                         f'"{name}" not found')
            return c.logs[-2]
        if c is None or not c.logs:
            reason = dig(c.state if c else {}, "waiting", "reason") or "ContainerCreating"
            text = {"ErrImagePull": "trying and failing to pull image",
                    "ImagePullBackOff": "image can't be pulled"}.get(reason, reason)
            raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to '
                                     f"start: {text}")
        return c.logs[-1]


def _probe_target(probe: dict[str, Any], container: dict[str, Any], ip: str) -> str:
    for kind in ("tcpSocket", "httpGet"):
        if kind in probe:
            spec = probe[kind] or {}
            return f"dial tcp {spec.get('host') or ip}:{resolve_port(spec.get('port'), container)}"
    return "probe"
