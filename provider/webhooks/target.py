"""Where one webhook POST goes: the receiver's host resolved, every address checked, one address pinned.

Owned by ``provider.webhooks``; called by ``provider.webhooks.delivery`` right before each attempt. The POST
connects to the address that was checked (the URL's host replaced by it), while the ``Host`` header and,
for https, the TLS server name (SNI, and so the certificate check) stay the receiver's name. A name that
resolves to several addresses is refused if any of them is refused: otherwise which one the connection
used would decide. Policy: ``kaas_core.egress``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from kaas_core.egress import EgressPolicy, EgressRefused, IPAddress, literal_address

Resolver = Callable[..., list[tuple[Any, ...]]]


class ReceiverUnreachable(ValueError):
    """The receiver's name does not resolve; the message says so."""


@dataclass(frozen=True)
class PinnedTarget:
    url: httpx.URL  # the receiver's URL with the checked address as its host
    host_header: str  # what the receiver sees as Host: its name (and a non-default port)
    sni_hostname: str | None  # https to a name: the TLS server name and the name the certificate must carry


def pin_receiver(url: str, policy: EgressPolicy, *, resolve: Resolver = socket.getaddrinfo) -> PinnedTarget:
    """Resolve and check ``url``'s host; raises ``EgressRefused`` or ``ReceiverUnreachable``."""
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = literal_address(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            answers = resolve(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise ReceiverUnreachable(f"the receiver's host name {host!r} does not resolve ({exc})") from None
        addresses = list(dict.fromkeys(_address(answer[4][0]) for answer in answers))
        if not addresses:
            raise ReceiverUnreachable(f"the receiver's host name {host!r} resolves to no address")
    for address in addresses:
        policy.check(address, host=host)
    chosen = addresses[0]
    host_header = host if parsed.port is None else f"{host}:{parsed.port}"
    if literal is not None and isinstance(literal, ipaddress.IPv6Address):
        host_header = f"[{host}]" if parsed.port is None else f"[{host}]:{parsed.port}"
    return PinnedTarget(
        url=parsed.copy_with(host=str(chosen)),
        host_header=host_header,
        sni_hostname=host if parsed.scheme == "https" and literal is None else None,
    )


def _address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is not part of it


__all__ = ["EgressRefused", "PinnedTarget", "ReceiverUnreachable", "pin_receiver"]
