"""Input checks shared by the request schemas and the services, with messages a person can act on.

Pure functions: they raise ``ValueError`` (inside pydantic validators, which FastAPI renders as 422
``invalid_input``) or are wrapped by services into ``InvalidInput``. Also the guards that keep path
parameters from ever reaching the database in a shape it would reject (NUL bytes, huge strings).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

DNS_LABEL_MAX = 63
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_dns_label(value: str) -> str:
    """A DNS-1123 label: what Kubernetes and OpenStack resource names built from it accept."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > DNS_LABEL_MAX:
        raise ValueError(f"must be at most {DNS_LABEL_MAX} characters (got {len(value)})")
    if not _DNS_LABEL.match(value):
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
    """Free text may be any unicode, but no control characters (PostgreSQL rejects NUL outright)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


def check_cidr(value: str) -> str:
    """An IPv4 or IPv6 network in CIDR notation with no host bits set, e.g. '10.0.0.0/24'."""
    if "/" not in value:
        raise ValueError(f"{value[:60]!r} is not a CIDR: write it as address/prefix, e.g. '10.0.0.0/24'")
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value[:60]!r} is not a valid CIDR ({exc}); e.g. '10.0.0.0/24'") from None
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
    prefix, _, name = value.rpartition("/")
    if prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)):
        raise ValueError(f"{value[:80]!r}: the prefix before '/' must be a DNS subdomain, e.g. 'example.com'")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"{value[:80]!r} is not a valid key: up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


def check_label_value(value: str) -> str:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise ValueError(
            f"{value[:80]!r} is not a valid value: up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


DnsLabel = Annotated[str, StringConstraints(max_length=DNS_LABEL_MAX * 4), AfterValidator(check_dns_label)]
Cidr = Annotated[str, StringConstraints(max_length=64), AfterValidator(check_cidr)]
IpAddress = Annotated[str, StringConstraints(max_length=64), AfterValidator(check_ip_address)]
ShortText = Annotated[str, StringConstraints(max_length=255), AfterValidator(check_printable)]
LabelKey = Annotated[str, StringConstraints(max_length=317), AfterValidator(check_label_key)]
LabelValue = Annotated[str, StringConstraints(max_length=63), AfterValidator(check_label_value)]
