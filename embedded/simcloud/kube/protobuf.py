"""Decoding the Kubernetes protobuf request bodies that kubectl sends, into the JSON form.

Owned by the Kubernetes stand-in; called by ``simcloud.kube.server`` for request bodies of content type
``application/vnd.kubernetes.protobuf``. kubectl's typed commands (``kubectl create namespace|configmap|
secret|serviceaccount|role|clusterrole|rolebinding|clusterrolebinding|service``, ``kubectl auth can-i``,
``kubectl auth whoami``) send protobuf and do not fall back to JSON on 415, so the stand-in must read it.
Answers are always JSON (kubectl accepts both). ``kubectl create -f`` / ``apply -f`` send JSON already.

Only the fields of the kinds above that a client sets are decoded (schemas from k8s.io/api
``generated.proto``); unknown fields are skipped. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
from typing import Any, Union

from simcloud.kube.errors import bad_request, unsupported_media_type

PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A schema maps a field number to (JSON name, field type, repeated?). A field type is a scalar name
# ("string", "bytes", "bool", "int"), "map_string" / "map_bytes", or a nested schema.
Schema = dict[int, tuple[str, Union[str, "Schema"], bool]]

_OBJECT_META: Schema = {
    1: ("name", "string", False), 2: ("generateName", "string", False), 3: ("namespace", "string", False),
    5: ("uid", "string", False), 6: ("resourceVersion", "string", False),
    11: ("labels", "map_string", False), 12: ("annotations", "map_string", False),
    14: ("finalizers", "string", True),
}
_POLICY_RULE: Schema = {
    1: ("verbs", "string", True), 2: ("apiGroups", "string", True), 3: ("resources", "string", True),
    4: ("resourceNames", "string", True), 5: ("nonResourceURLs", "string", True),
}
_BINDING: Schema = {
    1: ("metadata", _OBJECT_META, False),
    2: ("subjects", {1: ("kind", "string", False), 2: ("apiGroup", "string", False),
                     3: ("name", "string", False), 4: ("namespace", "string", False)}, True),
    3: ("roleRef", {1: ("apiGroup", "string", False), 2: ("kind", "string", False),
                    3: ("name", "string", False)}, False),
}
_INT_OR_STRING: Schema = {
    1: ("type", "int", False), 2: ("intVal", "int", False), 3: ("strVal", "string", False),
}

SCHEMAS: dict[str, Schema] = {
    "Namespace": {
        1: ("metadata", _OBJECT_META, False), 2: ("spec", {1: ("finalizers", "string", True)}, False),
    },
    "ConfigMap": {
        1: ("metadata", _OBJECT_META, False), 2: ("data", "map_string", False),
        3: ("binaryData", "map_bytes", False), 4: ("immutable", "bool", False),
    },
    "Secret": {
        1: ("metadata", _OBJECT_META, False), 2: ("data", "map_bytes", False), 3: ("type", "string", False),
        4: ("stringData", "map_string", False), 5: ("immutable", "bool", False),
    },
    "ServiceAccount": {
        1: ("metadata", _OBJECT_META, False),
        3: ("imagePullSecrets", {1: ("name", "string", False)}, True),
        4: ("automountServiceAccountToken", "bool", False),
    },
    "Service": {
        1: ("metadata", _OBJECT_META, False),
        2: ("spec", {
            1: ("ports", {1: ("name", "string", False), 2: ("protocol", "string", False),
                          3: ("port", "int", False), 4: ("targetPort", _INT_OR_STRING, False),
                          5: ("nodePort", "int", False)}, True),
            2: ("selector", "map_string", False), 3: ("clusterIP", "string", False),
            4: ("type", "string", False), 11: ("externalName", "string", False),
        }, False),
    },
    "Role": {1: ("metadata", _OBJECT_META, False), 2: ("rules", _POLICY_RULE, True)},
    "ClusterRole": {1: ("metadata", _OBJECT_META, False), 2: ("rules", _POLICY_RULE, True)},
    "RoleBinding": _BINDING,
    "ClusterRoleBinding": _BINDING,
    "SelfSubjectAccessReview": {
        1: ("metadata", _OBJECT_META, False),
        2: ("spec", {
            1: ("resourceAttributes", {
                1: ("namespace", "string", False), 2: ("verb", "string", False),
                3: ("group", "string", False), 4: ("version", "string", False),
                5: ("resource", "string", False), 6: ("subresource", "string", False),
                7: ("name", "string", False),
            }, False),
            2: ("nonResourceAttributes", {1: ("path", "string", False), 2: ("verb", "string", False)}, False),
        }, False),
    },
    "SelfSubjectReview": {1: ("metadata", _OBJECT_META, False)},
}
_UNKNOWN: Schema = {
    1: ("typeMeta", {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}, False),
    2: ("raw", "bytes_raw", False),
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise bad_request("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) for each field; length-delimited values are raw bytes."""
    fields: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 0x7
        value: Any
        if wire_type == 0:
            value, pos = _varint(data, pos)
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise bad_request(f"unsupported protobuf wire type {wire_type}")
        fields.append((number, wire_type, value))
    return fields


def _scalar(field_type: str, value: Any) -> Any:
    if field_type == "string":
        return bytes(value).decode("utf-8")
    if field_type == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if field_type == "bytes_raw":
        return bytes(value)
    if field_type == "bool":
        return bool(value)
    if field_type == "int":
        return value - (1 << 64) if value >= 1 << 63 else value
    raise bad_request(f"unsupported protobuf field type {field_type}")


def decode_message(data: bytes, schema: Schema) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for number, _, value in _fields(data):
        if number not in schema:
            continue
        name, field_type, repeated = schema[number]
        decoded: Any
        if isinstance(field_type, dict):
            decoded = decode_message(value, field_type)
        elif field_type in ("map_string", "map_bytes"):
            entry = decode_message(value, {
                1: ("key", "string", False), 2: ("value", field_type.removeprefix("map_"), False),
            })
            result.setdefault(name, {})[entry.get("key", "")] = entry.get("value", "")
            continue
        else:
            decoded = _scalar(field_type, value)
            if decoded == "" and not repeated:  # proto2 serializes empty strings; JSON omits them
                continue
        if repeated:
            result.setdefault(name, []).append(decoded)
        else:
            result[name] = decoded
    return result


def decode_object(body: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf envelope (``k8s\\0`` + runtime.Unknown) as the object's JSON form."""
    if not body.startswith(MAGIC):
        raise bad_request("the protobuf body lacks the k8s magic prefix")
    envelope = decode_message(body[len(MAGIC):], _UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise unsupported_media_type(f"{PROTOBUF_CONTENT_TYPE} (kind {kind!r})")
    obj = decode_message(envelope.get("raw", b""), schema)
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind, **obj}
