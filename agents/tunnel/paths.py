"""The one rule for which Kubernetes request paths kaas carries: canonical ones only.

Owned by the tunnel protocol package, so that every hop applies the same rule: the API's k8s proxy before it
authorizes anything (``kaas_api.k8s.proxy``), the tunnel server's internal endpoint before it routes
(``kaas_tunnel.proxy``), and the agent before it dials its apiserver (``agents.forward``). Pure: no I/O.

Why so strict. A path is authorized by one component and interpreted by another; any form that two parsers
may read differently lets a request be authorized for one thing and reach another. The traversal that
once let ``/k8s/clusters/<A>/../../<B>/proxy/...`` reach cluster B was exactly that: the API authorized A from
the raw path, and an HTTP client removed the dot segments on the way. So a path is refused (400, as
kube-apiserver answers a malformed request) unless every reading of it is the same:

- it is ASCII, starts with ``/``, and holds only RFC 3986 path characters: unreserved, ``!$&'()*+,=:@`` and
  ``%XX`` escapes (no ``;`` parameters, no backslash, no whitespace, control characters, ``?`` or ``#``);
- an escape never stands for a character that changes how a path is split or decoded: ``/``, ``\\``, ``.``,
  ``;``, ``%`` (double encoding) or a control character. Nothing Kubernetes serves needs one: object names
  are DNS labels and subdomains, and ``:`` in names like ``system:node`` may be written as it is or escaped;
- no segment is ``.`` or ``..``, and none is empty but a trailing one (``//`` reads as a host to some
  parsers, as an empty segment to others).

With those refused, decoding the path once gives the one reading every component sees.
"""

from __future__ import annotations

import re

MAX_PATH_LENGTH = 8192

_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,=:@/%]*$")
_ESCAPE = re.compile(r"%(?P<hex>..)?", re.DOTALL)
_HEX = re.compile(r"^[0-9A-Fa-f]{2}$")
# bytes an escape must not stand for: what splits, escapes or ends a path, or is not printable
_FORBIDDEN_ESCAPED = frozenset(b"/\\.;%?#") | frozenset(range(0x20)) | {0x7F}


class NonCanonicalPath(ValueError):
    """The path has a form some parser could read differently; the message says which rule it breaks."""


def check_canonical_path(path: str) -> str:
    """``path`` (the path of a request target as it was sent, without the query) if it is canonical.

    Raises ``NonCanonicalPath`` naming the rule the path breaks; the caller answers 400.
    """
    if not path.startswith("/"):
        raise NonCanonicalPath("the path must start with '/'")
    if len(path) > MAX_PATH_LENGTH:
        raise NonCanonicalPath(f"the path is longer than {MAX_PATH_LENGTH} characters")
    if not _PATH_CHARS.match(path):
        raise NonCanonicalPath(
            "the path may hold only letters, digits, '-._~!$&'()*+,=:@/' and %XX escapes"
            " (no ';', '\\', spaces, control or non-ASCII characters)"
        )
    for escape in _ESCAPE.finditer(path):
        digits = escape.group("hex")
        if digits is None or not _HEX.match(digits):
            raise NonCanonicalPath("the path has a malformed %-escape")
        if int(digits, 16) in _FORBIDDEN_ESCAPED:
            raise NonCanonicalPath(
                f"the path escapes a character that must be written as it is or not at all (%{digits})"
            )
    segments = path.split("/")[1:]
    for position, segment in enumerate(segments):
        if segment in (".", ".."):
            raise NonCanonicalPath("the path must not contain '.' or '..' segments")
        if segment == "" and position != len(segments) - 1:
            raise NonCanonicalPath("the path must not contain empty segments ('//')")
    return path


def split_target(target: str) -> tuple[str, str]:
    """A request target's path and query (without the ``?``); the fragment is not part of a target."""
    path, _, query = target.partition("?")
    return path, query


def check_canonical_target(target: str) -> str:
    """``target`` (path plus optional query) if its path is canonical; ``NonCanonicalPath`` otherwise."""
    path, _ = split_target(target)
    check_canonical_path(path)
    if any(char in target for char in "#\\") or any(ord(char) < 0x21 or ord(char) > 0x7E for char in target):
        raise NonCanonicalPath("the request target holds a character that is not allowed ('#', '\\', space)")
    return target
