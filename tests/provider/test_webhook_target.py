"""Where a webhook POST may go (``provider.webhooks.target`` with ``kaas_core.egress``).

The resolver is the only stand-in: these cases need DNS answers this machine's resolver cannot be made to
give (a public name, a name with one public and one private answer). The end-to-end cases with real
resolution and a real receiver are in ``test_webhooks.py``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from kaas_core.egress import EgressPolicy, EgressRefused
from provider.webhooks.target import ReceiverUnreachable, pin_receiver

DEFAULT = EgressPolicy()


def answers(*addresses: str) -> Any:
    """A resolver that answers ``addresses`` for any name, as getaddrinfo does."""

    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        family = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET  # noqa: E731
        return [(family(a), socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return resolve


def test_a_public_name_is_pinned_to_its_address_with_its_name_as_host_and_tls_server_name() -> None:
    target = pin_receiver("https://hooks.example.com/kaas?x=1", DEFAULT, resolve=answers("93.184.216.34"))
    assert str(target.url) == "https://93.184.216.34/kaas?x=1"
    assert target.host_header == "hooks.example.com"
    assert target.sni_hostname == "hooks.example.com"


def test_a_non_default_port_stays_in_the_url_and_the_host_header() -> None:
    target = pin_receiver("http://hooks.example.com:8443/k", DEFAULT, resolve=answers("93.184.216.34"))
    assert str(target.url) == "http://93.184.216.34:8443/k"
    assert target.host_header == "hooks.example.com:8443"
    assert target.sni_hostname is None  # plain http has no TLS server name


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("10.0.0.7", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an answer, not a bind)
        ("::1", "loopback"),
        ("fe80::1", "link-local (cloud metadata)"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_non_public_answers_are_refused_by_default(address: str, kind: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        pin_receiver("https://hooks.example.com/", DEFAULT, resolve=answers(address))
    shown = ipaddress.ip_address(address)  # as Python writes it: ::ffff:127.0.0.1 is ::ffff:7f00:1
    assert f"hooks.example.com ({shown}) is a {kind} address" in str(refused.value)


def test_one_private_answer_among_public_ones_refuses_the_name() -> None:
    """Which address a connection would use must not decide: a rebinding name often answers both."""
    with pytest.raises(EgressRefused):
        pin_receiver("https://x.example.com/", DEFAULT, resolve=answers("93.184.216.34", "10.0.0.7"))


def test_an_allowed_network_admits_its_addresses_and_no_others() -> None:
    policy = EgressPolicy.from_strings(["10.20.0.0/16"])
    target = pin_receiver("http://bridge.corp/", policy, resolve=answers("10.20.3.4"))
    assert str(target.url) == "http://10.20.3.4/"
    with pytest.raises(EgressRefused):
        pin_receiver("http://bridge.corp/", policy, resolve=answers("10.21.3.4"))


def test_an_ip_literal_is_checked_without_resolving() -> None:
    def no_dns(*_: Any, **__: Any) -> Any:
        raise AssertionError("an IP literal must not be resolved")

    with pytest.raises(EgressRefused):
        pin_receiver("http://169.254.169.254/latest/meta-data", DEFAULT, resolve=no_dns)
    target = pin_receiver(
        "http://[2001:db8::1]:8080/", EgressPolicy.from_strings(["2001:db8::/32"]), resolve=no_dns
    )
    assert target.host_header == "[2001:db8::1]:8080"
    assert target.sni_hostname is None


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    with pytest.raises(ReceiverUnreachable, match="does not resolve"):
        pin_receiver("https://no-such-host.invalid/", DEFAULT)


def test_a_bad_allowed_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network in CIDR form"):
        EgressPolicy.from_strings(["10.0.0.0/8", "10.0.0.0/33"])
