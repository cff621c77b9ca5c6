"""HTTP routes: discovery, CRUD/watch/patch of the served resources, pods/log, auth, faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from . import errors, eventsv1, resources
from .admission import Admission
from .auth import Authenticator, UserInfo, service_account_user
from .config import KubeSimConfig
from .disruption import Disruptions
from .faults import ErrorInjector
from .gc import Deleter
from .kubelet import Kubelet
from .logs import LogQuery
from .patch import apply_patch
from .portforward import PortForwards
from .rbac import Attributes, Authorizer
from .resources import EVENTS, EVENTS_V1, NAMESPACES, PODS, REVIEWS, ResourceType
from .reviews import review
from .selectors import parse_field_selector, parse_label_selector
from .store import BOOKMARK, ERROR, Store, with_kind
from .tables import to_table, wants_table
from .util import deep, parse_bool, parse_time, within
from .validation import prepare_create, prepare_update

PUBLIC = ("/healthz", "/livez", "/readyz")
CREATE_SUBRESOURCES = ("token", "eviction")
CONNECT_SUBRESOURCES = ("portforward",)  # GET (WebSocket) is `get`, POST (SPDY) `create`
USER = web.RequestKey("user", UserInfo)
KEEP_STATUS = ("pods", "jobs", "nodes", "namespaces")
_IDENTITY = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
             "deletionGracePeriodSeconds", "generation", "selfLink", "managedFields")


@dataclass
class Route:
    """A parsed resource URL."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None
    verb: str


def _not_found_path() -> errors.ApiError:
    return errors.ApiError(404, "NotFound", "the server could not find the requested resource",
                           {"causes": [{"reason": "UnexpectedServerResponse",
                                        "message": "404 page not found"}]})


def parse_route(request: web.Request) -> Route:
    path = request.path.rstrip("/")
    parts = path.split("/")[1:]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _not_found_path()
    watch_path = bool(rest) and rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    if not rest:
        raise _not_found_path()
    ns: str | None = None
    nested = resources.lookup(group, version, rest[2]) if len(rest) >= 3 else None
    if rest[0] == "namespaces" and nested is not None and nested.namespaced:
        ns, plural, tail = rest[1], rest[2], rest[3:]
    else:
        plural, tail = rest[0], rest[1:]
    rt = resources.lookup(group, version, plural)
    if rt is None or len(tail) > 2 or (tail[1:] and tail[1] not in rt.subresources):
        raise _not_found_path()
    name = tail[0] if tail else None
    sub = tail[1] if len(tail) > 1 else None
    method = request.method
    watch = watch_path or parse_bool(request.query.get("watch"))
    if method == "GET":
        verb = "get" if name else ("watch" if watch else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
        if method == "DELETE":
            verb = "delete" if name else "deletecollection"
    if not verb or (name is None and verb in ("update", "patch")) or \
            (name and verb == "create" and sub not in CREATE_SUBRESOURCES + CONNECT_SUBRESOURCES):
        raise errors.method_not_allowed(method, rt.plural)
    if sub in CREATE_SUBRESOURCES and verb != "create":
        raise errors.method_not_allowed(method, f"{rt.plural}/{sub}")
    return Route(rt, ns, name, sub, verb)


def _attributes(request: web.Request, user: UserInfo, route: Route | None) -> Attributes:
    """The authorizer's view of a request (a namespace's own name is its namespace)."""
    if route is None:
        return Attributes(user, request.method.lower(), False, path=request.path)
    namespace = route.namespace or ""
    if route.rt is NAMESPACES and route.name:
        namespace = route.name
    return Attributes(user, route.verb, True, route.rt.group, route.rt.version, route.rt.plural,
                      route.sub or "", namespace, route.name or "")


def _gone(request: web.Request) -> bool:
    """Whether the client of a streaming request has disconnected."""
    transport = request.transport
    return transport is None or transport.is_closing()


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None
            ) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, headers=headers,
                        content_type="application/json")


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        if "yaml" in request.content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"error decoding request body: {exc}") from None


class Api:
    """The aiohttp application of the emulator."""

    def __init__(self, store: Store, deleter: Deleter, kubelet: Kubelet,
                 config: KubeSimConfig, injector: ErrorInjector,
                 authenticator: Authenticator, authorizer: Authorizer | None,
                 admission: Admission, disruptions: Disruptions) -> None:
        self.store = store
        self.disruptions = disruptions
        self.admission = admission
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.deleter = deleter
        self.kubelet = kubelet
        self.config = config
        self.injector = injector
        self.server_address = ""
        # API groups not served (Kueue's, unless its CRDs are "installed")
        self.hidden: tuple[str, ...] = () if config.kueue else resources.KUEUE_GROUPS
        self.kueue: Any = None  # kueue.Kueue: answers the visibility API
        self._streams: set[web.StreamResponse] = set()
        self.portforwards = PortForwards(store, authorizer, config)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        r = app.router
        for path in PUBLIC:
            r.add_get(path, self._ok)
        r.add_get("/version", self._version)
        r.add_get("/version/", self._version)  # go-restful serves both (kr8s asks this one)
        r.add_get("/api", lambda req: self._json(resources.api_versions(self.server_address)))
        r.add_get("/apis", lambda req: self._json(resources.api_group_list(self.hidden)))
        r.add_get("/apis/{group}", self._group)
        r.add_get("/api/{version}", self._discovery)
        r.add_get("/apis/{group}/{version}", self._discovery)
        r.add_route("*", "/api/{version}/{tail:.+}", self._resource)
        r.add_route("*", "/apis/{group}/{version}/{tail:.+}", self._resource)
        return app

    # ------------------------------------------------------------------ plumbing
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            route: Route | None = None
            with contextlib.suppress(errors.ApiError):
                route = parse_route(request)
            if route is not None and route.rt.group in self.hidden:
                raise _not_found_path()
            if request.path not in PUBLIC:
                user = self.authenticator.authenticate(request.headers.get("Authorization"))
                if request.headers.get("Impersonate-User"):
                    user = self._impersonate(request, user)
                request[USER] = user
                if self.authorizer is not None:
                    self.authorizer.check(_attributes(request, user, route))
            if not request.path.startswith("/kubesim/"):
                verb: str | None = {"GET": "get", "POST": "create", "PUT": "update",
                                    "PATCH": "patch", "DELETE": "delete"}.get(request.method)
                resource: str | None = None
                if route is not None:
                    verb, resource = route.verb, route.rt.plural
                fault = self.injector.check(request.method, request.path, verb, resource)
                if fault is not None:
                    raise fault
            return await handler(request)
        except errors.ApiError as exc:
            return respond(exc.status(), exc.code, exc.headers)
        except web.HTTPNotFound:
            exc404 = _not_found_path()
            return respond(exc404.status(), 404)
        except web.HTTPMethodNotAllowed:
            exc405 = errors.method_not_allowed(request.method, "")
            return respond(exc405.status(), 405)

    def _impersonate(self, request: web.Request, user: UserInfo) -> UserInfo:
        """`kubectl --as`: allowed with the `impersonate` verb on users / serviceaccounts /
        groups (checked only with RBAC on); then the request is the impersonated user's."""
        name = request.headers["Impersonate-User"]
        groups = request.headers.getall("Impersonate-Group", [])
        account = name.split(":") if name.startswith("system:serviceaccount:") else []
        if self.authorizer is not None:
            wanted = [Attributes(user, "impersonate", True, "", "v1", "serviceaccounts",
                                 namespace=account[2], name=account[3])
                      if len(account) == 4 else
                      Attributes(user, "impersonate", True, "", "v1", "users", name=name)]
            wanted += [Attributes(user, "impersonate", True, "", "v1", "groups", name=g)
                       for g in groups]
            for attrs in wanted:
                self.authorizer.check(attrs)
        if len(account) == 4 and not groups:
            return service_account_user(account[2], account[3])
        return UserInfo(name, (*groups, "system:authenticated"))

    async def _json(self, body: Any) -> web.Response:
        return respond(body)

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        return respond(resources.version_info(self.config.version))

    async def _group(self, request: web.Request) -> web.Response:
        if request.match_info["group"] not in resources.GROUPS or \
                request.match_info["group"] in self.hidden:
            raise _not_found_path()
        return respond(resources.api_group(request.match_info["group"]))

    async def _discovery(self, request: web.Request) -> web.Response:
        if request.match_info.get("group", "") in self.hidden:
            raise _not_found_path()
        body = resources.resource_list(request.match_info.get("group", ""),
                                       request.match_info["version"])
        if body is None:
            raise _not_found_path()
        return respond(body)

    async def close_streams(self) -> None:
        await self.portforwards.drop()
        for resp in list(self._streams):
            with contextlib.suppress(Exception):
                await resp.write_eof()

    # ------------------------------------------------------------------ dispatch
    async def _resource(self, request: web.Request) -> web.StreamResponse:
        route = parse_route(request)
        handler = {"list": self._list, "watch": self._watch, "get": self._get,
                   "create": self._create, "update": self._update, "patch": self._patch,
                   "delete": self._delete, "deletecollection": self._delete_collection}
        if route.sub == "log":
            if route.verb != "get" or route.rt is not PODS:
                raise errors.method_not_allowed(request.method, "pods/log")
            return await self._log(request, route)
        if route.rt in REVIEWS:
            if route.verb != "create":
                raise errors.method_not_allowed(request.method, route.rt.plural)
            body = self._check_body(await read_body(request), route)
            return respond(review(route.rt, body, request[USER], self.authorizer), 201)
        if route.sub == "portforward":
            if route.verb not in ("get", "create"):
                raise errors.method_not_allowed(request.method, "pods/portforward")
            return await self.portforwards.serve(request, request[USER], route.namespace or "",
                                                 route.name or "")
        if route.rt in resources.VISIBILITY_TYPES:
            return self._pending_workloads(request, route)
        if route.sub == "eviction":
            return respond(self.disruptions.evict(route.namespace or "", route.name or "",
                                                  await read_body(request)), 201)
        if route.sub == "token":
            body = await read_body(request) or {}
            return respond(self.authenticator.issue(route.namespace or "", route.name or "",
                                                    body), 201)
        return await handler[route.verb](request, route)

    def _pending_workloads(self, request: web.Request, route: Route) -> web.Response:
        """Kueue's visibility API: GET .../pendingworkloads (offset, limit)."""
        if route.sub != "pendingworkloads" or route.verb != "get" or self.kueue is None:
            raise _not_found_path()
        try:
            offset = int(request.query.get("offset") or 0)
            limit = int(request.query.get("limit") or 1000)
        except ValueError:
            raise errors.bad_request("offset and limit must be integers") from None
        if route.rt is resources.VIS_LOCALQUEUES:
            body = self.kueue.pending_workloads(namespace=route.namespace,
                                                local_queue=route.name, offset=offset,
                                                limit=limit)
        else:
            body = self.kueue.pending_workloads(cq=route.name, offset=offset, limit=limit)
        return respond(body)

    def _selectors(self, request: web.Request, rt: ResourceType) -> tuple[Any, Any]:
        return (parse_label_selector(request.query.get("labelSelector")),
                parse_field_selector(request.query.get("fieldSelector"), rt.plural))

    def _table(self, request: web.Request) -> bool:
        return wants_table(request.headers.get("Accept", ""))

    async def _list(self, request: web.Request, route: Route) -> web.Response:
        labels, fields = self._selectors(request, route.rt)
        try:
            limit = int(request.query.get("limit") or 0)
        except ValueError:
            raise errors.bad_request("limit must be an integer") from None
        body = self.store.list(route.rt, route.namespace, labels, fields, limit,
                               request.query.get("continue"))
        if self._table(request):
            body = to_table(route.rt, body["items"], body["metadata"],
                            request.query.get("includeObject", "Metadata"))
        return respond(body)

    async def _get(self, request: web.Request, route: Route) -> web.Response:
        obj = self.store.get(route.rt, route.namespace or "", route.name or "")
        if self._table(request):
            return respond(to_table(route.rt, [obj], {"resourceVersion":
                                                      obj["metadata"]["resourceVersion"]},
                                    request.query.get("includeObject", "Metadata")))
        return respond(obj)

    async def _watch(self, request: web.Request, route: Route) -> web.StreamResponse:
        labels, fields = self._selectors(request, route.rt)
        try:
            timeout = float(request.query.get("timeoutSeconds") or
                            self.config.default_watch_timeout)
        except ValueError:
            raise errors.bad_request("timeoutSeconds must be an integer") from None
        bookmarks = parse_bool(request.query.get("allowWatchBookmarks"))
        table = self._table(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                           "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        try:
            watcher = self.store.watch(route.rt, route.namespace,
                                       request.query.get("resourceVersion"), labels, fields)
        except errors.ApiError as exc:
            if exc.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(json.dumps({"type": ERROR, "object": exc.status()}).encode()
                             + b"\n")
            await resp.write_eof()
            return resp
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_sent = loop.time()
        self._streams.add(resp)
        try:
            await resp.prepare(request)
            held: tuple[str, dict[str, Any]] | None = None
            while True:
                if watcher.stalled:  # a silent connection: no event, bookmark or end
                    if watcher.closed or _gone(request):
                        break
                    await asyncio.sleep(0.05)
                    deadline += 0.05  # the stall does not count against timeoutSeconds
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wait = min(remaining, self.config.bookmark_interval) if bookmarks else remaining
                try:
                    item, held = held or await within(watcher.queue.get(), min(wait, 1.0)), None
                    if watcher.stalled and item is not None:
                        held = item  # stalled while waiting: deliver it after the stall
                        continue
                except asyncio.TimeoutError:
                    if _gone(request):
                        break
                    if bookmarks and loop.time() < deadline and \
                            loop.time() - last_sent >= self.config.bookmark_interval:
                        last_sent = loop.time()
                        mark = {"kind": route.rt.kind, "apiVersion": route.rt.api_version,
                                "metadata": {"resourceVersion":
                                             str(self.store.resource_version)}}
                        await resp.write(json.dumps({"type": BOOKMARK, "object": mark})
                                         .encode() + b"\n")
                    continue
                if item is None:
                    break
                kind, obj = item
                if table:
                    obj = to_table(route.rt, [obj], {"resourceVersion":
                                                     obj["metadata"]["resourceVersion"]},
                                   request.query.get("includeObject", "Metadata"))
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                last_sent = loop.time()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.store.unwatch(watcher)
            self._streams.discard(resp)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ writes
    def _check_body(self, body: Any, route: Route) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != route.rt.api_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not "
                                     f"match the expected API version ({route.rt.api_version})")
        if kind and kind != route.rt.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the "
                                     f"expected kind ({route.rt.kind})")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if route.rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != route.namespace:
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            meta["namespace"] = route.namespace
        return body

    def _ensure_namespace(self, namespace: str | None) -> None:
        """Lenient mode only (strict_namespaces=False): make a missing namespace on the fly."""
        if not namespace or self.config.strict_namespaces or \
                self.store.peek(NAMESPACES, "", namespace) is not None:
            return
        self.store.create(NAMESPACES, prepare_create(NAMESPACES, {"metadata": {"name":
                                                                               namespace}}))

    async def _create(self, request: web.Request, route: Route) -> web.Response:
        if route.rt.namespaced and route.namespace is None:
            raise errors.method_not_allowed("POST", route.rt.plural)
        body = self._check_body(await read_body(request), route)
        for key in _IDENTITY:
            body["metadata"].pop(key, None)
        if route.rt is EVENTS_V1:
            eventsv1.validate_create(body)
            body = eventsv1.to_core(body)
        obj = prepare_create(EVENTS if route.rt is EVENTS_V1 else route.rt, body)
        self._ensure_namespace(route.namespace)
        warnings = self.admission.admit(route.rt, obj)
        headers = {"Warning": ", ".join('299 - "{}"'.format(w.replace('"', '\\"'))
                                        for w in warnings)} if warnings else None
        if request.query.get("dryRun"):
            return respond(with_kind(route.rt, obj), 201, headers)
        return respond(self.store.create(route.rt, obj), 201, headers)

    def _merge_subresource(self, route: Route, old: dict[str, Any], new: dict[str, Any]
                           ) -> dict[str, Any]:
        """Main resource writes keep the old status; /status writes change only status."""
        if route.sub == "status":
            merged = deep(old)
            merged["status"] = new.get("status", {})
            merged["metadata"]["resourceVersion"] = new.get("metadata", {}).get(
                "resourceVersion", old["metadata"]["resourceVersion"])
            return merged
        if route.rt.plural in KEEP_STATUS:
            new["status"] = deep(old.get("status", {}))
        return new

    async def _write(self, request: web.Request, route: Route, old: dict[str, Any],
                     new: dict[str, Any]) -> web.Response:
        new = self._merge_subresource(route, old, new)
        if route.rt is EVENTS_V1:
            old, new = eventsv1.to_core(old), eventsv1.to_core(new)
        if route.sub != "status":
            new = prepare_update(EVENTS if route.rt is EVENTS_V1 else route.rt, old, new)
        if request.query.get("dryRun"):
            return respond(with_kind(route.rt, new))
        return respond(self.store.update(route.rt, new, check_rv=True))

    async def _update(self, request: web.Request, route: Route) -> web.Response:
        body = self._check_body(await read_body(request), route)
        old = self.store.get(route.rt, route.namespace or "", route.name or "")
        if body["metadata"].get("name") not in (None, route.name):
            raise errors.bad_request("the name of the object does not match the name on the "
                                     "URL")
        return await self._write(request, route, old, body)

    async def _patch(self, request: web.Request, route: Route) -> web.Response:
        patch = await read_body(request)
        old = self.store.get(route.rt, route.namespace or "", route.name or "")
        new = apply_patch(request.headers.get("Content-Type", ""), old, patch)
        for key in ("apiVersion", "kind"):
            if new.get(key) != old.get(key):
                raise errors.bad_request(f"{key} cannot be changed by a patch")
        return await self._write(request, route, old, new)

    def _delete_options(self, request: web.Request, body: Any) -> dict[str, Any]:
        opts = dict(body) if isinstance(body, dict) else {}
        q = request.query
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        if "orphanDependents" in q:
            opts["orphanDependents"] = parse_bool(q["orphanDependents"])
        if not opts.get("propagationPolicy") and opts.get("orphanDependents") is not None:
            opts["propagationPolicy"] = "Orphan" if opts["orphanDependents"] else "Background"
        return opts

    async def _delete(self, request: web.Request, route: Route) -> web.Response:
        opts = self._delete_options(request, await read_body(request))
        if request.query.get("dryRun") or opts.get("dryRun"):
            return respond(self.store.get(route.rt, route.namespace or "", route.name or ""))
        result = self.deleter.delete(route.rt, route.namespace or "", route.name or "",
                                     opts.get("propagationPolicy"),
                                     opts.get("gracePeriodSeconds"),
                                     opts.get("preconditions"))
        return respond(result)

    async def _delete_collection(self, request: web.Request, route: Route) -> web.Response:
        opts = self._delete_options(request, await read_body(request))
        labels, fields = self._selectors(request, route.rt)
        listed = self.store.list(route.rt, route.namespace, labels, fields)
        for item in listed["items"]:
            meta = item["metadata"]
            with contextlib.suppress(errors.ApiError):
                self.deleter.delete(route.rt, meta.get("namespace", ""), meta["name"],
                                    opts.get("propagationPolicy"),
                                    opts.get("gracePeriodSeconds"))
        return respond(listed)

    # ------------------------------------------------------------------ logs
    async def _log(self, request: web.Request, route: Route) -> web.StreamResponse:
        pod = self.store.get(PODS, route.namespace or "", route.name or "")
        q = request.query
        try:
            since = None
            if q.get("sinceSeconds"):
                since = time.time() - int(q["sinceSeconds"])
            elif q.get("sinceTime"):
                since = parse_time(q["sinceTime"])
            query = LogQuery(int(q["tailLines"]) if q.get("tailLines") else None, since,
                             parse_bool(q.get("timestamps")),
                             int(q["limitBytes"]) if q.get("limitBytes") else None)
        except ValueError as exc:
            raise errors.bad_request(f"invalid log options: {exc}") from None
        buffer = self.kubelet.log_buffer(pod, q.get("container"), parse_bool(q.get("previous")))
        if buffer is None:
            return web.Response(body=b"", content_type="text/plain")
        if not parse_bool(q.get("follow")):
            return web.Response(body=buffer.read(query), content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self._streams.add(resp)
        try:
            async for chunk in buffer.follow(query, lambda: _gone(request)):
                await resp.write(chunk)
        except (ConnectionResetError, ConnectionError):
            return resp
        finally:
            self._streams.discard(resp)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp
