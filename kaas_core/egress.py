"""Where kaas may send webhooks: the guard against server-side request forgery (SSRF).

Owned by ``kaas_api.webhooks``; used by its service (a receiver given as an IP literal is refused at once, a
422) and by ``provider.webhooks.delivery``, which checks every address a receiver's host name resolves to
right before it connects, and then connects to that checked address (so a DNS answer that changes between
the check and the connection, "DNS rebinding", cannot steer the POST elsewhere).

A webhook URL is user input that makes kaas's workers send requests from inside the provider's network: to
the cloud's metadata service (169.254.169.254), kaas's own internal endpoints on loopback, Redis, the
provider cluster's pods. So by default only globally routable addresses are permitted; the operator lists the
private networks where receivers may live (``KAAS_WEBHOOK_ALLOWED_NETWORKS``, e.g. an internal chat bridge
in 10.20.0.0/16). Pure: no I/O, no DNS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_NETWORKS_SETTING = "KAAS_WEBHOOK_ALLOWED_NETWORKS"


class EgressRefused(ValueError):
    """A receiver address the policy does not permit; the message says which address and what to change."""


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs such as '10.20.0.0/16' or 'fd00::/8'; a bad one raises ``ValueError`` naming it."""
    networks: list[IPNetwork] = []
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(
                f"{text[:60]!r} is not a network in CIDR form, e.g. '10.20.0.0/16' ({exc})"
            ) from None
    return tuple(networks)


def _canonical(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class EgressPolicy:
    """Globally routable unicast addresses, plus the operator's ``allowed_networks``."""

    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, values: Iterable[str]) -> EgressPolicy:
        return cls(allowed_networks=parse_networks(values))

    def permits(self, address: IPAddress) -> bool:
        address = _canonical(address)
        if any(address in network for network in self.allowed_networks):
            return True
        return address.is_global and not address.is_multicast

    def check(self, address: IPAddress, *, host: str) -> None:
        """Raise ``EgressRefused`` unless ``address`` (one that ``host`` names) may receive webhooks."""
        if self.permits(address):
            return
        shown = host if host == str(address) else f"{host} ({address})"
        raise EgressRefused(
            f"webhook receiver {shown} is a {_kind(_canonical(address))} address, where kaas does not send "
            f"webhooks; an operator may allow its network with {ALLOWED_NETWORKS_SETTING}"
        )


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    return "non-public"


def literal_address(host: str) -> IPAddress | None:
    """The address when a URL's host is an IP literal ('10.0.0.1', '[::1]'), else None (a name)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
