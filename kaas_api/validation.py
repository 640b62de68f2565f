"""Input checks shared by the request schemas and the services, with messages a person can act on, and the
JSON Schema each one is documented with in the OpenAPI spec: one constant feeds both.

Pure functions: they raise ``ValueError`` (inside pydantic validators, which FastAPI renders as 422
``invalid_input``) or are wrapped by services into ``InvalidInput``. Also the guards that keep path
parameters from ever reaching the database in a shape it would reject (NUL bytes, huge strings).

A documented ``pattern`` is the very regular expression the check applies (``re.fullmatch`` here, ``^...$``
in the spec, which mean the same: JSON Schema patterns are ECMA-262, where ``$`` never matches before a
trailing newline), so a generated client and the server agree on what a name is. A rule JSON Schema cannot
state (a CIDR with host bits set, overlapping networks) has its own error ``type``, listed in
``kaas_api.openapi.RULES_BEYOND_SCHEMA``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

DNS_LABEL_MAX = 63
DNS_LABEL_PATTERN = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
LABEL_NAME_MAX = 63
LABEL_NAME_PATTERN = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_PREFIX_MAX = 253
LABEL_PREFIX_PATTERN = rf"{DNS_LABEL_PATTERN}(\.{DNS_LABEL_PATTERN})*"
LABEL_KEY_MAX = LABEL_PREFIX_MAX + 1 + LABEL_NAME_MAX
LABEL_KEY_PATTERN = rf"({LABEL_PREFIX_PATTERN}/)?{LABEL_NAME_PATTERN}"
# printable: any unicode but the C0 control characters and DEL (PostgreSQL rejects NUL outright)
PRINTABLE_PATTERN = r"[^\x00-\x1f\x7f]*"
SHORT_TEXT_MAX = 255
VERSION_MAX = 32
VERSION_PATTERN = r"v?[0-9A-Za-z.+-]+"
FLAVOR_NAME_MAX = 255
UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CIDR_FORMAT = "cidr"  # a custom JSON Schema format: the spec's description says what it means

_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)
_LABEL_NAME = re.compile(LABEL_NAME_PATTERN)
_LABEL_PREFIX = re.compile(LABEL_PREFIX_PATTERN)
_PRINTABLE = re.compile(PRINTABLE_PATTERN)


def anchored(pattern: str) -> str:
    """The spec's form of a pattern this module applies with ``re.fullmatch``."""
    return f"^(?:{pattern})$" if "|" in pattern else f"^{pattern}$"


def string_schema(
    *, pattern: str | None = None, min_length: int | None = None, max_length: int | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if min_length is not None:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if pattern is not None:
        schema["pattern"] = anchored(pattern)
    return schema


DNS_LABEL_SCHEMA = string_schema(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=DNS_LABEL_MAX)
UUID_SCHEMA = {"type": "string", "format": "uuid", "pattern": anchored(UUID_PATTERN)}


def check_dns_label(value: str) -> str:
    """A DNS-1123 label: what Kubernetes and OpenStack resource names built from it accept."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > DNS_LABEL_MAX:
        raise ValueError(f"must be at most {DNS_LABEL_MAX} characters (got {len(value)})")
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value[:80]!r} is not a valid name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (DNS-1123 label), e.g. 'my-cluster-1'"
        )
    return value


def is_dns_label(value: str) -> bool:
    try:
        check_dns_label(value)
    except ValueError:
        return False
    return True


def is_uuid(value: str) -> bool:
    if len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def check_printable(value: str) -> str:
    """Free text may be any unicode, but no control characters."""
    if not _PRINTABLE.fullmatch(value):
        raise ValueError("must not contain control characters")
    return value


def check_cidr(value: str) -> str:
    """An IPv4 or IPv6 network in CIDR notation with no host bits set, e.g. '10.0.0.0/24'."""
    if "/" not in value:
        raise ValueError(f"{value[:60]!r} is not a CIDR: write it as address/prefix, e.g. '10.0.0.0/24'")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value[:60]!r} is not a valid CIDR ({exc}); e.g. '10.0.0.0/24'") from None
    if network.network_address != ipaddress.ip_interface(value).ip:
        raise PydanticCustomError(
            "cidr_host_bits",
            "{value!r} has host bits set: the network is {network}",
            {"value": value[:60], "network": str(network)},
        )
    return str(network)


def check_ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value[:60]!r} is not an IP address, e.g. '1.1.1.1'") from None


def overlapping_cidrs(cidrs: dict[str, str]) -> list[str]:
    """Human-readable descriptions of each overlapping pair among named CIDRs (empty when disjoint)."""
    items = [(name, ipaddress.ip_network(value)) for name, value in cidrs.items()]
    problems: list[str] = []
    for index, (name_a, net_a) in enumerate(items):
        for name_b, net_b in items[index + 1 :]:
            if net_a.version == net_b.version and net_a.overlaps(net_b):
                problems.append(f"{name_a} {net_a} overlaps {name_b} {net_b}")
    return problems


def check_label_key(value: str) -> str:
    """A Kubernetes label or taint key: an optional DNS prefix and '/', then a name of up to 63 characters."""
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or not _LABEL_PREFIX.fullmatch(prefix)):
        raise ValueError(f"{value[:80]!r}: the prefix before '/' must be a DNS subdomain, e.g. 'example.com'")
    if len(prefix) > LABEL_PREFIX_MAX:
        raise PydanticCustomError(
            "label_prefix_too_long",
            "{value!r}: the prefix before '/' must be at most {limit} characters",
            {"value": value[:80], "limit": LABEL_PREFIX_MAX},
        )
    if not name or len(name) > LABEL_NAME_MAX or not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"{value[:80]!r} is not a valid key: up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def check_label_value(value: str) -> str:
    if value and (len(value) > LABEL_NAME_MAX or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(
            f"{value[:80]!r} is not a valid value: up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def _json_integer(value: Any) -> Any:
    """JSON has integers and nothing else here: ``true`` is not 1 and ``"5"`` is not 5 (pydantic's lax mode
    would take both). ``5.0`` is an integer in JSON Schema, so it stays accepted."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _json_boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise PydanticCustomError("bool_type", "Input should be a valid boolean")
    return value


# Request body types: what they validate is what their schema documents. An integer's bounds go before
# JSON_INTEGER (``Annotated[int, Field(ge=0), JSON_INTEGER]``): pydantic leaves bounds after it unschemed.
JSON_INTEGER = BeforeValidator(_json_integer)
JsonBool = Annotated[bool, BeforeValidator(_json_boolean)]
DnsLabel = Annotated[
    str,
    StringConstraints(max_length=DNS_LABEL_MAX * 4),
    AfterValidator(check_dns_label),
    WithJsonSchema(DNS_LABEL_SCHEMA),
]
Cidr = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(check_cidr),
    WithJsonSchema(
        {
            "type": "string",
            "format": CIDR_FORMAT,
            "maxLength": 64,
            "description": "An IPv4 or IPv6 network with no host bits set, e.g. '10.0.0.0/24'.",
        }
    ),
]
IpAddress = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(check_ip_address),
    WithJsonSchema({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}], "maxLength": 64}),
]
ShortText = Annotated[
    str,
    StringConstraints(max_length=SHORT_TEXT_MAX),
    AfterValidator(check_printable),
    WithJsonSchema(string_schema(pattern=PRINTABLE_PATTERN, max_length=SHORT_TEXT_MAX)),
]
NonEmptyText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=SHORT_TEXT_MAX),
    AfterValidator(check_printable),
    WithJsonSchema(string_schema(pattern=PRINTABLE_PATTERN, min_length=1, max_length=SHORT_TEXT_MAX)),
]
LABEL_KEY_SCHEMA = string_schema(pattern=LABEL_KEY_PATTERN, min_length=1, max_length=LABEL_KEY_MAX)
LABEL_VALUE_SCHEMA = {"type": "string", "maxLength": LABEL_NAME_MAX, "pattern": f"^({LABEL_NAME_PATTERN})?$"}
LabelKey = Annotated[
    str,
    StringConstraints(max_length=LABEL_KEY_MAX),
    AfterValidator(check_label_key),
    WithJsonSchema(LABEL_KEY_SCHEMA),
]
LabelValue = Annotated[
    str,
    StringConstraints(max_length=LABEL_NAME_MAX),
    AfterValidator(check_label_value),
    WithJsonSchema(LABEL_VALUE_SCHEMA),
]
Version = Annotated[
    str, StringConstraints(min_length=1, max_length=VERSION_MAX, pattern=anchored(VERSION_PATTERN))
]
FlavorName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=FLAVOR_NAME_MAX, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
