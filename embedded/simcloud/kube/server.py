"""``KubeStandin``: a small kube-apiserver stand-in (Starlette ASGI app) that real kubectl can use.

Owned by the Kubernetes stand-in. Built by ``simcloud.kube.testing.run_kube_standin`` (tests, embedded mode)
or served by any ASGI server. Serves: ``/version``, health endpoints, legacy discovery (``/api``,
``/api/v1``, ``/apis``, ``/apis/{group}[/{version}]``; aggregated-discovery Accept headers get the plain
documents and kubectl falls back), and for every kind of ``simcloud.kube.resources``: list (label and field
selectors), watch (``?watch=true``, chunked newline-delimited JSON events from a resourceVersion,
``timeoutSeconds``), get, create, update (PUT), patch (JSON merge patch; strategic merge patch is treated
as a merge patch, so lists are replaced), delete and deletecollection. Table output is not rendered: a plain
list answers ``as=Table`` and kubectl prints it client-side. There is no OpenAPI document (``/openapi/*``
answers 404): use ``kubectl apply --validate=false``. ``kubectl exec`` works over WebSocket
(``simcloud.kube.exec``, with a few emulated commands); other subresources are not served.

Every request except health and ``/version`` is authenticated by a static bearer token, may impersonate
(``simcloud.kube.auth``) and is authorized by RBAC (``simcloud.kube.rbac``) over the stored roles.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from simcloud.kube import errors, manifests, protobuf, rbac, resources, selectors
from simcloud.kube.auth import HeaderView, authenticate, impersonate
from simcloud.kube.exec import DEFAULT_STDIN_TIMEOUT_SECONDS, EXEC_NOT_OVER_SPDY, EXEC_PATH, PodExec
from simcloud.kube.identity import Identity
from simcloud.kube.rbac import Attributes, RbacAuthorizer, forbidden_reason
from simcloud.kube.resources import ResourceType
from simcloud.kube.store import ObjectStore

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

DEFAULT_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
NAMESPACE_SUBRESOURCES = ("status", "finalize")
HEALTH_PATHS = ("/healthz", "/livez", "/readyz")
MERGE_PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
# kube-apiserver picks a random watch timeout between 30 and 60 minutes when the client gives none.
DEFAULT_WATCH_TIMEOUT_SECONDS = 1800.0
WATCH_POLL_SECONDS = 0.5


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status_code, media_type="application/json")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class _ResourceRequest:
    """A parsed resource URL, like kube-apiserver's ``RequestInfo``."""

    def __init__(self, rtype: ResourceType, *, namespace: str, name: str, subresource: str) -> None:
        self.rtype = rtype
        self.namespace = namespace  # for authorization (a namespace's own name for namespaces/{name})
        self.name = name
        self.subresource = subresource

    @property
    def store_namespace(self) -> str:
        return self.namespace if self.rtype.namespaced else ""


def _parse_resource_path(group: str, version: str, parts: list[str]) -> _ResourceRequest | None:
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    if len(parts) > 3:
        return None
    rtype = resources.find(group, version, parts[0])
    if rtype is None:
        return None
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    if not rtype.namespaced and namespace and rtype.plural != "namespaces":
        return None
    if rtype.namespaced and name and not namespace:
        return None
    return _ResourceRequest(rtype, namespace=namespace, name=name, subresource=subresource)


class KubeStandin:
    """An in-memory Kubernetes API server for kubectl and kaas's agent; see the module docstring."""

    def __init__(
        self,
        *,
        version: str = "v1.30.2",
        tokens: Mapping[str, Identity],
        manifest_files: Iterable[Path] = (),
        watch_timeout_seconds: float = DEFAULT_WATCH_TIMEOUT_SECONDS,
        exec_stdin_timeout_seconds: float = DEFAULT_STDIN_TIMEOUT_SECONDS,
        state_file: Path | None = None,
    ) -> None:
        """``state_file``: keep the objects there across restarts (see ``ObjectStore``)."""
        self.version = version
        self.tokens: dict[str, Identity] = dict(tokens)
        self.store = ObjectStore(state_file=state_file)
        self.authorizer = RbacAuthorizer(self.store)
        self._watch_timeout_seconds = watch_timeout_seconds
        self._closing = threading.Event()
        if not self.store.restored:
            namespace_type = resources.find("", "v1", "namespaces")
            assert namespace_type is not None
            for namespace in DEFAULT_NAMESPACES:
                self.store.create(namespace_type, "", {"metadata": {"name": namespace}})
            manifests.apply_objects(
                self.store, [*rbac.default_cluster_roles(), *rbac.default_cluster_role_bindings()]
            )
        for path in manifest_files:
            manifests.apply_file(self.store, path)
        self.pod_exec = PodExec(identify=self.identify, authorize=self._authorize, store=self.store,
                                stdin_timeout_seconds=exec_stdin_timeout_seconds)
        self.app = Starlette(routes=[
            WebSocketRoute(EXEC_PATH, self.pod_exec.serve),
            Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ])

    # --- for tests and bootstrap code (any thread) ---

    def apply(self, manifest: str | list[Obj]) -> list[Obj]:
        """Create or replace objects (YAML text or dicts), bypassing RBAC like a cluster bootstrap."""
        objects = manifests.parse_manifests(manifest) if isinstance(manifest, str) else manifest
        return manifests.apply_objects(self.store, objects)

    def close(self) -> None:
        """End open watch streams (within ``WATCH_POLL_SECONDS``) so the server can stop; save the objects."""
        self._closing.set()
        self.store.close()

    # --- HTTP and WebSocket ---

    def identify(self, headers: Headers) -> Identity:
        """Who a request or a WebSocket handshake runs as: its token's identity, impersonation applied."""
        requester = authenticate(headers.get("authorization"), self.tokens)
        return impersonate(requester, HeaderView(headers.items()), self.authorizer)

    async def _handle(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except errors.KubeStatusError as exc:
            return _json(exc.to_status(), exc.code)
        except Exception as exc:
            logger.exception("kube stand-in failed on %s %s", request.method, request.url.path)
            error = errors.internal_error(str(exc))
            return _json(error.to_status(), error.code)

    async def _dispatch(self, request: Request) -> Response:
        path = "/" + request.url.path.strip("/")
        if path in HEALTH_PATHS:
            return Response("ok", media_type="text/plain")
        if path == "/version":
            return _json(self._version_document())
        identity = self.identify(request.headers)
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"] and len(parts) > 2:
            return await self._resource(request, identity, "", "v1", parts[2:])
        if parts[:1] == ["apis"] and len(parts) > 3:
            return await self._resource(request, identity, parts[1], parts[2], parts[3:])
        self._authorize(Attributes(identity=identity, verb=request.method.lower(), resource_request=False,
                                   path=path))
        document = self._discovery(parts)
        if document is None or request.method != "GET":
            raise errors.path_not_found()
        return _json(document)

    def _authorize(self, attrs: Attributes) -> None:
        if self.authorizer.allowed(attrs):
            return
        if not attrs.resource_request:
            raise errors.forbidden_path(forbidden_reason(attrs))
        raise errors.forbidden(resource=attrs.resource, group=attrs.api_group, name=attrs.name,
                               reason=forbidden_reason(attrs))

    def _version_document(self) -> Obj:
        major, minor = self.version.lstrip("v").split(".")[:2]
        return {
            "major": major, "minor": minor, "gitVersion": self.version,
            "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2024-06-11T20:20:00Z",
            "goVersion": "go1.22.4", "compiler": "gc", "platform": "linux/amd64",
        }

    def _discovery(self, parts: list[str]) -> Obj | None:
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if parts == ["api", "v1"]:
            return self._resource_list("", "v1")
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [self._group(g, v) for g, v in resources.groups()]}
        if len(parts) == 2 and parts[0] == "apis":
            for group, version in resources.groups():
                if group == parts[1]:
                    return {"kind": "APIGroup", "apiVersion": "v1", **self._group(group, version)}
        if len(parts) == 3 and parts[0] == "apis" and (parts[1], parts[2]) in resources.groups():
            return self._resource_list(parts[1], parts[2])
        return None

    @staticmethod
    def _group(group: str, version: str) -> Obj:
        group_version = {"groupVersion": f"{group}/{version}", "version": version}
        return {"name": group, "versions": [group_version], "preferredVersion": group_version}

    @staticmethod
    def _resource_list(group: str, version: str) -> Obj:
        return {
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [r.discovery() for r in resources.resources_of(group, version)],
        }

    async def _resource(
        self, request: Request, identity: Identity, group: str, version: str, parts: list[str]
    ) -> Response:
        legacy_watch = parts[0] == "watch"
        if legacy_watch:
            parts = parts[1:]
        parsed = _parse_resource_path(group, version, parts) if parts else None
        if parsed is None:
            raise errors.path_not_found()
        query = request.query_params
        watch = legacy_watch or query.get("watch", "").lower() in ("true", "1")
        method = request.method
        if method == "GET":
            verb = "watch" if watch else ("get" if parsed.name else "list")
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        else:
            verb = "delete" if parsed.name else "deletecollection"
        rtype = parsed.rtype
        # kube-apiserver authorizes a create without a name (it is in the body), unless on a subresource.
        collection_create = verb == "create" and not parsed.subresource
        self._authorize(Attributes(
            identity=identity, verb=verb, api_group=group, resource=rtype.plural,
            subresource=parsed.subresource, name="" if collection_create else parsed.name,
            namespace=parsed.namespace,
        ))
        if rtype.plural == "pods" and parsed.subresource == "exec" and parsed.name:
            # kubectl's SPDY fallback after a refused WebSocket: the same refusals, else no SPDY here
            self.pod_exec.validate(parsed.namespace, parsed.name, query)
            raise errors.bad_request(EXEC_NOT_OVER_SPDY)
        if parsed.subresource:  # no other subresources (status, log, ...) are served
            raise errors.path_not_found()
        if verb not in rtype.verbs or (verb == "create" and parsed.name):
            raise errors.method_not_allowed(verb, rtype.plural)
        if not rtype.stored:
            return self._review(rtype, identity, await self._body(request))

        namespace = parsed.store_namespace
        if verb in ("list", "watch"):
            predicate = selectors.combine(query.get("labelSelector"), query.get("fieldSelector"))
            if parsed.name:  # /watch/namespaces/foo: watch one object
                name = parsed.name
                inner = predicate
                predicate = lambda obj: obj["metadata"]["name"] == name and inner(obj)  # noqa: E731
            scope = namespace if rtype.namespaced and parsed.namespace else None
            if verb == "watch":
                return self._watch(rtype, scope, predicate, query.get("resourceVersion"),
                                   query.get("timeoutSeconds"))
            items, resource_version = self.store.list_objects(rtype, scope)
            return _json({
                "kind": f"{rtype.kind}List", "apiVersion": rtype.group_version,
                "metadata": {"resourceVersion": str(resource_version)},
                "items": [obj for obj in items if predicate(obj)],
            })
        if verb == "get":
            return _json(self.store.get(rtype, namespace, parsed.name))
        if verb == "create":
            body = await self._body(request)
            body_namespace = (body.get("metadata") or {}).get("namespace")
            if rtype.namespaced and body_namespace and body_namespace != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            return _json(self.store.create(rtype, namespace, body), 201)
        if verb == "update":
            return _json(self.store.update(rtype, namespace, parsed.name, await self._body(request)))
        if verb == "patch":
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if content_type not in MERGE_PATCH_TYPES:
                raise errors.unsupported_media_type(content_type)
            current = self.store.get(rtype, namespace, parsed.name)
            patched = merge_patch(current, await self._body(request))
            patched.setdefault("metadata", {}).pop("resourceVersion", None)
            return _json(self.store.update(rtype, namespace, parsed.name, patched))
        await request.body()  # the DeleteOptions: read it, or the kept-alive connection breaks
        if verb == "delete":
            return _json(self.store.delete(rtype, namespace, parsed.name))
        predicate = selectors.combine(query.get("labelSelector"), query.get("fieldSelector"))
        items, _ = self.store.list_objects(rtype, namespace if rtype.namespaced else None)
        deleted = [
            self.store.delete(rtype, namespace, obj["metadata"]["name"]) for obj in items if predicate(obj)
        ]
        _, resource_version = self.store.list_objects(rtype, namespace)
        return _json({"kind": f"{rtype.kind}List", "apiVersion": rtype.group_version,
                      "metadata": {"resourceVersion": str(resource_version)}, "items": deleted})

    @staticmethod
    async def _body(request: Request) -> Obj:
        raw = await request.body()
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type == protobuf.PROTOBUF_CONTENT_TYPE:
            return protobuf.decode_object(raw)
        if content_type not in ("application/json", "", *MERGE_PATCH_TYPES):
            raise errors.unsupported_media_type(content_type)
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise errors.bad_request(f"the body of the request is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        return body

    def _review(self, rtype: ResourceType, identity: Identity, body: Obj) -> Response:
        """SelfSubjectAccessReview (``kubectl auth can-i``), SelfSubjectReview (``kubectl auth whoami``)."""
        result: Obj = {"apiVersion": rtype.group_version, "kind": rtype.kind,
                       "metadata": {"creationTimestamp": None}, "spec": body.get("spec") or {}}
        if rtype.kind == "SelfSubjectReview":
            user_info: Obj = {"username": identity.username, "groups": list(identity.groups)}
            if identity.uid:
                user_info["uid"] = identity.uid
            if identity.extra:
                user_info["extra"] = {k: list(v) for k, v in identity.extra.items()}
            result.pop("spec")
            result["status"] = {"userInfo": user_info}
            return _json(result, 201)
        spec = result["spec"]
        if "nonResourceAttributes" in spec:
            non_resource = spec["nonResourceAttributes"]
            attrs = Attributes(identity=identity, verb=non_resource.get("verb", ""), resource_request=False,
                               path=non_resource.get("path", ""))
        else:
            wanted = spec.get("resourceAttributes") or {}
            attrs = Attributes(
                identity=identity, verb=wanted.get("verb", ""), api_group=wanted.get("group", ""),
                resource=wanted.get("resource", ""), subresource=wanted.get("subresource", ""),
                name=wanted.get("name", ""), namespace=wanted.get("namespace", ""),
            )
        allowed = self.authorizer.allowed(attrs)
        result["status"] = {"allowed": allowed}
        if allowed:
            result["status"]["reason"] = "allowed by the stand-in's RBAC"
        return _json(result, 201)

    def _watch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        predicate: selectors.Predicate,
        resource_version: str | None,
        timeout_seconds: str | None,
    ) -> Response:
        try:
            since = int(resource_version) if resource_version else None
            timeout = float(timeout_seconds) if timeout_seconds else self._watch_timeout_seconds
        except ValueError as exc:
            raise errors.bad_request(f"invalid resourceVersion or timeoutSeconds: {exc}") from exc
        loop = asyncio.get_running_loop()
        try:
            backlog, watcher = self.store.subscribe(rtype, namespace, since=since, loop=loop)
        except errors.KubeStatusError as exc:
            if exc.code != 410:
                raise
            expired = exc.to_status()

            async def expired_stream() -> AsyncIterator[bytes]:
                yield json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n"

            return StreamingResponse(expired_stream(), media_type="application/json")

        async def stream() -> AsyncIterator[bytes]:
            deadline = loop.time() + timeout
            try:
                for event in backlog:
                    if predicate(event.object):
                        yield json.dumps(event.to_json()).encode() + b"\n"
                while not self._closing.is_set():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return
                    try:
                        event = await asyncio.wait_for(
                            watcher.queue.get(), timeout=min(remaining, WATCH_POLL_SECONDS)
                        )
                    except TimeoutError:
                        continue
                    if predicate(event.object):
                        yield json.dumps(event.to_json()).encode() + b"\n"
            finally:
                self.store.unsubscribe(watcher)

        return StreamingResponse(stream(), media_type="application/json")
