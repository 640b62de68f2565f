"""The stand-in's in-memory object store: objects, one resourceVersion counter, the event history, watchers.

Owned by the Kubernetes stand-in; called by ``simcloud.kube.server`` (HTTP requests, on the server's event
loop) and by ``KubeStandin.apply`` (tests and manifests, from any thread). All state sits behind one lock,
and watchers are woken with ``call_soon_threadsafe`` on their own loop, so both callers are safe.

Like etcd, the resourceVersion counter is global: every write of any kind takes the next number, and a watch
from version N replays the events of its kind after N from a bounded history (older: 410 Expired).

With a ``state_file`` the objects outlive the process, as etcd's would: a write schedules a snapshot (at most
one per ``save_delay``, on a timer thread), ``close()`` writes the last one, and a new store on the same file
starts with the same objects and resourceVersion. The event history is not kept: a watch from a version
before the restart gets 410 and relists, as after an etcd compaction.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
import string
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simcloud.kube import resources
from simcloud.kube.errors import already_exists, conflict, gone, invalid, not_found
from simcloud.kube.resources import ResourceType
from simcloud.persistence import write_atomically

Obj = dict[str, Any]
_Key = tuple[ResourceType, str, str]  # (type, namespace or "", name)

_NAME_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    rtype: ResourceType
    type: str  # ADDED | MODIFIED | DELETED
    object: Obj

    def to_json(self) -> Obj:
        return {"type": self.type, "object": self.object}


@dataclass(eq=False)
class Watcher:
    rtype: ResourceType
    namespace: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[WatchEvent] = field(default_factory=asyncio.Queue)

    def wants(self, event: WatchEvent) -> bool:
        if event.rtype is not self.rtype:
            return False
        return self.namespace is None or event.object["metadata"].get("namespace") == self.namespace


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _normalize(rtype: ResourceType, obj: Obj) -> None:
    """Kind-specific defaults a real apiserver applies on write."""
    if rtype.kind == "Secret":
        string_data = obj.pop("stringData", None) or {}
        data = dict(obj.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        if data:
            obj["data"] = data
        obj.setdefault("type", "Opaque")
    elif rtype.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


class ObjectStore:
    def __init__(
        self, *, history_size: int = 10_000, state_file: Path | None = None, save_delay: float = 0.5
    ) -> None:
        self._lock = threading.Lock()
        self._objects: dict[_Key, Obj] = {}
        self._resource_version = 1
        self._history: deque[WatchEvent] = deque(maxlen=history_size)
        self._watchers: set[Watcher] = set()
        self._state_file = state_file
        self._save_delay = save_delay
        self._save_timer: threading.Timer | None = None
        self.restored = state_file is not None and state_file.exists()
        if self.restored:
            assert state_file is not None
            self._restore(json.loads(state_file.read_bytes()))

    # --- persistence ---

    def _restore(self, document: dict[str, Any]) -> None:
        self._resource_version = int(document["resource_version"])
        for entry in document["objects"]:
            group, _, version = entry["group_version"].rpartition("/")
            rtype = resources.find(group, version, entry["plural"])
            if rtype is None:
                continue  # a kind this stand-in no longer serves
            obj = entry["object"]
            self._objects[(rtype, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])] = obj

    def save(self) -> None:
        """Write the objects to the ``state_file`` now (0600, atomically); a no-op without one."""
        if self._state_file is None:
            return
        with self._lock:
            self._save_timer = None
            document = {
                "resource_version": self._resource_version,
                "objects": [
                    {"group_version": rtype.group_version, "plural": rtype.plural, "object": obj}
                    for (rtype, _, _), obj in self._objects.items()
                ],
            }
            payload = json.dumps(document, separators=(",", ":")).encode()
        write_atomically(self._state_file, payload)

    def close(self) -> None:
        """Write the last snapshot and stop the pending timer."""
        with self._lock:
            timer, self._save_timer = self._save_timer, None
        if timer is not None:
            timer.cancel()
        self.save()

    def _changed(self) -> None:
        """(lock held) Schedule a snapshot unless one is pending."""
        if self._state_file is not None and self._save_timer is None:
            self._save_timer = threading.Timer(self._save_delay, self.save)
            self._save_timer.daemon = True
            self._save_timer.start()

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._resource_version

    # --- reads ---

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects.get((rtype, namespace, name))
            if obj is None:
                raise not_found(resource=rtype.plural, group=rtype.group, name=name)
            return copy.deepcopy(obj)

    def find(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        with self._lock:
            obj = self._objects.get((rtype, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, rtype: ResourceType, namespace: str | None) -> tuple[list[Obj], int]:
        """Objects of a kind (in one namespace, or all when ``namespace`` is None) and the current version."""
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (kind, ns, _), obj in sorted(self._objects.items(), key=lambda kv: (kv[0][1], kv[0][2]))
                if kind is rtype and (namespace is None or ns == namespace)
            ]
            return items, self._resource_version

    # --- writes ---

    def create(self, rtype: ResourceType, namespace: str, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        with self._lock:
            name = metadata.get("name") or ""
            if not name and metadata.get("generateName"):
                suffix = "".join(secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
                name = metadata["generateName"] + suffix
            if not name:
                raise invalid(kind=rtype.kind, group=rtype.group, name="",
                              message="metadata.name: Required value: name or generateName is required")
            if rtype.namespaced and not self._namespace_exists(namespace):
                raise not_found(resource="namespaces", group="", name=namespace)
            key = (rtype, namespace if rtype.namespaced else "", name)
            if key in self._objects:
                raise already_exists(resource=rtype.plural, group=rtype.group, name=name)
            obj["apiVersion"] = rtype.group_version
            obj["kind"] = rtype.kind
            metadata["name"] = name
            if rtype.namespaced:
                metadata["namespace"] = namespace
            else:
                metadata.pop("namespace", None)
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = _now()
            metadata.pop("deletionTimestamp", None)
            _normalize(rtype, obj)
            self._write(key, rtype, "ADDED", obj)
            return copy.deepcopy(obj)

    def update(self, rtype: ResourceType, namespace: str, name: str, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        with self._lock:
            key = (rtype, namespace if rtype.namespaced else "", name)
            current = self._objects.get(key)
            if current is None:
                raise not_found(resource=rtype.plural, group=rtype.group, name=name)
            if metadata.get("name", name) != name:
                raise invalid(kind=rtype.kind, group=rtype.group, name=name,
                              message="metadata.name: Invalid value: the name of the object does not match")
            wanted_version = metadata.get("resourceVersion")
            if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
                raise conflict(resource=rtype.plural, group=rtype.group, name=name)
            obj["apiVersion"] = rtype.group_version
            obj["kind"] = rtype.kind
            metadata["name"] = name
            if rtype.namespaced:
                metadata["namespace"] = namespace
            for immutable in ("uid", "creationTimestamp", "deletionTimestamp"):
                if immutable in current["metadata"]:
                    metadata[immutable] = current["metadata"][immutable]
                else:
                    metadata.pop(immutable, None)
            _normalize(rtype, obj)
            self._write(key, rtype, "MODIFIED", obj)
            return copy.deepcopy(obj)

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        """Delete an object; deleting a namespace first deletes every object in it."""
        with self._lock:
            key = (rtype, namespace if rtype.namespaced else "", name)
            obj = self._objects.get(key)
            if obj is None:
                raise not_found(resource=rtype.plural, group=rtype.group, name=name)
            if rtype.kind == "Namespace" and not rtype.group:
                for inner_key in [k for k in self._objects if k[0].namespaced and k[1] == name]:
                    self._remove(inner_key)
            return self._remove(key)

    # --- watch ---

    def subscribe(
        self,
        rtype: ResourceType,
        namespace: str | None,
        *,
        since: int | None,
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[list[WatchEvent], Watcher]:
        """Register a watcher; returns the events it must send first (replayed or synthetic ADDED).

        ``since`` None (or 0) means "current state, then changes", as for kube-apiserver: the current
        objects are sent as synthetic ADDED events.
        """
        watcher = Watcher(rtype=rtype, namespace=namespace, loop=loop)
        with self._lock:
            if not since:
                backlog = [
                    WatchEvent(int(obj["metadata"]["resourceVersion"]), rtype, "ADDED", copy.deepcopy(obj))
                    for (kind, ns, _), obj in self._objects.items()
                    if kind is rtype and (namespace is None or ns == namespace)
                ]
            else:
                oldest = self._history[0].resource_version if self._history else self._resource_version + 1
                if since < oldest - 1 and since < self._resource_version:
                    raise gone(f"too old resource version: {since} ({oldest - 1})")
                backlog = [
                    WatchEvent(e.resource_version, e.rtype, e.type, copy.deepcopy(e.object))
                    for e in self._history
                    if e.resource_version > since and watcher.wants(e)
                ]
            self._watchers.add(watcher)
        return backlog, watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)

    # --- internals (lock held) ---

    def _namespace_exists(self, name: str) -> bool:
        return any(
            rtype.kind == "Namespace" and not rtype.group and obj_name == name
            for rtype, _, obj_name in self._objects
        )

    def _write(self, key: _Key, rtype: ResourceType, event_type: str, obj: Obj) -> None:
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)
        self._objects[key] = obj
        self._changed()
        self._publish(WatchEvent(self._resource_version, rtype, event_type, copy.deepcopy(obj)))

    def _remove(self, key: _Key) -> Obj:
        obj = self._objects.pop(key)
        self._changed()
        self._resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self._resource_version)
        self._publish(WatchEvent(self._resource_version, key[0], "DELETED", copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    def _publish(self, event: WatchEvent) -> None:
        self._history.append(event)
        for watcher in list(self._watchers):
            if watcher.wants(event):
                try:
                    watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, event)
                except RuntimeError:  # the watcher's loop is closed: it will never read again
                    self._watchers.discard(watcher)
